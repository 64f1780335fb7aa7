"""Threads sharing a Generator (issue 16, items 1 and 2), on SmolLM2.

The rule (Generator's docstring): one operation at a time per Generator, BusyError at once for
a second one; an iterator suspended between next() calls is superseded by the next operation;
cancel() and close() work from any thread. The races that crashed the interpreter before the
fix run in child processes (concurrency_cases.py); the others run here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from concurrency_cases import CASES, LONG_PROMPT, wait_engine_busy
from ffnskip_native import BusyError, Error, Generator

HERE = Path(__file__).resolve().parent
GREEDY = dict(temperature=0.0)
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def smol(smollm2_path):
    with Generator(smollm2_path, backend="cpu", n_ctx=512, seed=0) as g:
        yield g


@pytest.fixture(scope="module")
def expected(smol) -> str:
    """The undisturbed greedy continuation of PROMPT."""
    text = "".join(smol.generate(PROMPT, max_new_tokens=8, **GREEDY))
    assert text
    return text


@pytest.mark.parametrize("case", sorted(CASES))
def test_race_in_child_process(case, smollm2_path):
    proc = subprocess.run(
        [sys.executable, str(HERE / "concurrency_cases.py"), case, str(smollm2_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    how = (
        f"killed by {signal.Signals(-proc.returncode).name}"
        if proc.returncode < 0
        else f"exit {proc.returncode}"
    )
    assert proc.returncode == 0 and "PASS" in proc.stdout, f"{how}\n{proc.stderr[-3000:]}"


def test_iterators_created_by_two_threads(smol, expected):
    """The second generate() supersedes the first thread's iterator, which then raises instead
    of silently yielding nothing (before: an empty string)."""
    created = [threading.Event(), threading.Event()]
    both_created = threading.Barrier(2)
    results: dict[int, object] = {}

    def run(k: int) -> None:
        if k == 1:
            created[0].wait()
        it = smol.generate(PROMPT, max_new_tokens=8, **GREEDY)
        created[k].set()
        both_created.wait()
        try:
            results[k] = "".join(it)
        except Error as e:
            results[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert isinstance(results[0], Error) and "superseded" in str(results[0])
    assert results[1] == expected


def test_iterator_consumed_from_other_threads(smol, expected):
    """Iterators are not tied to a thread: each next() may come from a different worker (as
    Starlette's iterate_in_threadpool does)."""
    it = smol.generate(PROMPT, max_new_tokens=8, **GREEDY)
    pieces = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        while True:
            piece = pool.submit(next, it, None).result()
            if piece is None:
                break
            pieces.append(piece)
    assert "".join(pieces) == expected


def test_logits_supersedes_a_suspended_generation(smol, expected):
    """logits() between two next() calls used to reset the cache under the generation, which
    then went on with garbage; now the generation is closed and says so."""
    it = smol.generate(PROMPT, max_new_tokens=8, **GREEDY)
    first = next(it)
    smol.logits(smol.tokenize("Hello"))
    with pytest.raises(Error, match="superseded"):
        next(it)
    assert smol.last_finish_reason == "cancelled"
    assert expected.startswith(first)
    assert "".join(smol.generate(PROMPT, max_new_tokens=8, **GREEDY)) == expected


def test_close_from_another_thread_while_idle(smollm2_path):
    g = Generator(smollm2_path, backend="cpu", n_ctx=128, seed=0)
    it = g.generate(PROMPT, max_new_tokens=8, **GREEDY)
    next(it)
    t = threading.Thread(target=g.close)
    t.start()
    t.join(60)
    assert not t.is_alive() and g.closed
    assert g.last_finish_reason == "cancelled"
    with pytest.raises(Error, match="Generator is closed"):
        next(it)  # before: StopIteration, a silently truncated text
    g.cancel()  # still fine
    g.close()


def test_use_after_close_raises_error(smollm2_path):
    g = Generator(smollm2_path, backend="cpu", n_ctx=128, seed=0)
    engine = g.engine
    g.close()
    for call in (
        lambda: g.generate(PROMPT),
        lambda: g.logits([1]),
        lambda: setattr(g, "skip", False),
        lambda: g.engine,
        lambda: engine.eval([1]),
        lambda: engine.n_past,
        lambda: engine.skip_stats(),
    ):
        with pytest.raises(Error, match="closed"):
            call()
    engine.cancel()  # cancel() works at any time (before: raised "the engine is closed")
    g.cancel()
    engine.close()
    g.close()


def test_busy_error_type():
    assert issubclass(BusyError, Error) and issubclass(BusyError, RuntimeError)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_close_from_a_signal_handler_inside_the_running_generation(smollm2_path):
    """close() from a signal handler runs inside the operation it must wait for: it cannot
    wait (that would hang), so it cancels, and the model is freed as the operation ends."""
    g = Generator(smollm2_path, backend="cpu", n_ctx=512, seed=0)
    previous = signal.signal(signal.SIGUSR1, lambda *_: g.close())
    try:
        it = g.generate(LONG_PROMPT, max_new_tokens=5, **GREEDY)
        main = threading.main_thread().ident
        sender = threading.Thread(
            target=lambda: (wait_engine_busy(g), signal.pthread_kill(main, signal.SIGUSR1))
        )
        sender.start()
        assert list(it) == []  # the handler ran during the prompt: cancelled there
        sender.join(60)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert g.closed and g.last_finish_reason == "cancelled"
    with pytest.raises(Error, match="Generator is closed"):
        g.logits([1])
