"""Races between threads sharing one Generator on SmolLM2 (issue 16, items 1 and 2).

Each case runs in a child process (test_concurrency.py): before the fix several of them crashed
the interpreter (an engine freed or reconfigured under a running native call), and a crash must
fail one test, not end the suite. Usage: python concurrency_cases.py CASE MODEL_PATH
"""

from __future__ import annotations

import sys
import threading
import time
from functools import partial
from typing import Any, Callable

from ffnskip_native import BusyError, CancelledError, Error, Generator, SkipConfig

GREEDY: dict[str, Any] = {"temperature": 0.0}
# ~300 tokens: two prompt chunks of the CPU backend (256), so a cancel lands between them, and
# long enough (>0.1 s even on a fast machine) for another thread to act during it.
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 30
DEADLINE_S = 120.0


def open_generator(path: str, **kw: Any) -> Generator:
    return Generator(path, backend="cpu", n_ctx=512, seed=0, **kw)


def wait_engine_busy(g: Generator) -> None:
    """Block until a native call holds g's engine (it then raises BusyError)."""
    engine = g.engine
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            _ = engine.n_past
        except BusyError:
            return
        time.sleep(0.0005)
    raise AssertionError("the engine never became busy")


class Consumer(threading.Thread):
    """Consumes an iterator on its own thread; keeps the pieces and how it ended."""

    def __init__(self, make_iterator: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.make_iterator = make_iterator
        self.pieces: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for piece in self.make_iterator():
                self.pieces.append(piece)
        except BaseException as e:  # reported by finish(), in the main thread
            self.error = e

    def finish(self) -> str:
        self.join(DEADLINE_S)
        assert not self.is_alive(), "the generation thread hangs"
        return "".join(self.pieces)


def close_during_decode(path: str) -> None:
    """close() from another thread while tokens are being decoded: it cancels the generation,
    waits for the running step, then frees the engine. Before: a segfault in 4 of 10 runs."""
    for _ in range(6):
        g = open_generator(path)
        c = Consumer(partial(g.generate, "1, 2, 3, 4,", max_new_tokens=300, **GREEDY))
        c.start()
        deadline = time.monotonic() + DEADLINE_S
        while len(c.pieces) < 2 and c.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        g.close()
        assert g.closed
        c.finish()
        # Closed inside a step (most runs): the iterator ends normally; between two steps: its
        # next next() says the Generator is closed. Never another error.
        closed_between_steps = type(c.error) is Error and "Generator is closed" in str(c.error)
        assert c.error is None or closed_between_steps, c.error
        assert g.last_finish_reason == "cancelled"
        assert 2 <= g.stats["generated_tokens"] < 300


def close_during_prompt(path: str) -> None:
    """close() from another thread while the prompt is being evaluated (one long native call)."""
    for _ in range(2):
        g = open_generator(path)
        c = Consumer(partial(g.generate, LONG_PROMPT, max_new_tokens=5, **GREEDY))
        c.start()
        wait_engine_busy(g)
        g.close()
        assert c.finish() == "" and c.error is None, c.error
        assert g.last_finish_reason == "cancelled" and g.stats["generated_tokens"] == 0
        assert g.closed


def close_iterator_during_decode(path: str) -> None:
    """it.close() while its step runs in another thread cancels the step and waits for it.
    Before: ValueError ("generator already executing"), the generation went on, and closing
    the Generator then freed the engine under it."""
    with open_generator(path) as g:
        it = g.generate("1, 2, 3, 4,", max_new_tokens=300, **GREEDY)
        c = Consumer(lambda: it)
        c.start()
        deadline = time.monotonic() + DEADLINE_S
        while len(c.pieces) < 2 and c.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        it.close()
        c.finish()
        assert c.error is None, c.error
        assert g.last_finish_reason == "cancelled"
        assert 2 <= g.stats["generated_tokens"] < 300
        assert next(it, None) is None  # closed by its owner: ends quietly, not superseded


def skip_setter_mid_generation(path: str) -> None:
    """Setting g.skip from another thread while a generation runs: BusyError while a step runs;
    between two steps it supersedes the generation. Before: a segfault in 3 of 10 runs."""
    configs = [SkipConfig(warmup=0, threshold=t, span=2) for t in (0.3, 0.6, 0.9)]
    g = open_generator(path, skip=configs[0])
    c = Consumer(lambda: g.generate(LONG_PROMPT, max_new_tokens=40, **GREEDY))
    c.start()
    wait_engine_busy(g)  # in the prompt: the setter must be refused, not applied
    try:
        g.skip = configs[1]
        raise AssertionError("setting skip during a running generation was accepted")
    except BusyError:
        pass
    assert g.skip == configs[0]
    applied = None
    i = 0
    while c.is_alive():
        i += 1
        try:
            g.skip = configs[i % 3]
            applied = configs[i % 3]
        except BusyError:
            pass
        time.sleep(0.001)
    c.finish()
    assert c.error is None or (type(c.error) is Error and "superseded" in str(c.error)), c.error
    if applied is not None:
        assert g.skip == applied
    # The Generator is intact: a generation now matches a fresh Generator with the same policy.
    text = "".join(g.generate("Hello there", max_new_tokens=8, **GREEDY))
    with open_generator(path, skip=g.skip) as fresh:
        assert text == "".join(fresh.generate("Hello there", max_new_tokens=8, **GREEDY))
    g.close()


def logits_mid_generation(path: str) -> None:
    """logits() from another thread during a generation raises BusyError and leaves the
    generation exactly as undisturbed. Before: it ran, and the generation went wrong
    ("logits[0] is NaN")."""
    g = open_generator(path)
    expected = "".join(g.generate(LONG_PROMPT, max_new_tokens=12, **GREEDY))
    ids = g.tokenize("The capital of France is")
    c = Consumer(lambda: g.generate(LONG_PROMPT, max_new_tokens=12, **GREEDY))
    c.start()
    wait_engine_busy(g)
    try:
        g.logits(ids)
        raise AssertionError("logits() during a running generation was accepted")
    except BusyError:
        pass
    assert c.finish() == expected and c.error is None, c.error
    assert g.last_finish_reason == "length"
    g.close()


def engine_calls_from_two_threads(path: str) -> None:
    """The raw engine serialises its calls too: a second call while one runs raises BusyError
    at once; cancel() and close() work during a call."""
    g = open_generator(path)
    engine = g.engine
    ids = g.tokenize(LONG_PROMPT)
    engine.reset()
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            done["logits"] = engine.eval(ids)
        except BaseException as e:
            done["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    wait_engine_busy(g)
    for call in (
        lambda: engine.eval([1]),
        lambda: engine.reset(),
        lambda: engine.set_skip(None),
        lambda: engine.skip_stats(),
        lambda: engine.logits([1]),
    ):
        try:
            call()
            raise AssertionError("a second engine call ran concurrently")
        except BusyError:
            pass
    assert engine.n_vocab > 0 and engine.tokenize("a")  # immutable parts need no lock
    engine.close()  # cancels the running eval and waits for it
    t.join(DEADLINE_S)
    assert not t.is_alive()
    assert "logits" not in done and isinstance(done["error"], CancelledError), done
    engine.cancel()  # a no-op once closed
    try:
        engine.eval([1])
        raise AssertionError("eval after close")
    except Error as e:
        assert "closed" in str(e)
    g.close()


CASES = {
    f.__name__: f
    for f in (
        close_during_decode,
        close_during_prompt,
        close_iterator_during_decode,
        skip_setter_mid_generation,
        logits_mid_generation,
        engine_calls_from_two_threads,
    )
}

if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2])
    print("PASS")
