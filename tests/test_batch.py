"""The batched serving engine: batch invariance, slots, prefix reuse (_core.BatchEngine and
ffnskip_native.batch.BatchGenerator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ffnskip_native import _core
from ffnskip_native.batch import BatchGenerator, Event, Request
from ffnskip_native.errors import BackendUnavailableError, InvalidArgumentError

PROMPTS = ["The capital of France is", "Once upon a time, there was a", "def fib(n):", "1, 2, 3,"]


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> _core.BatchEngine:
    e = _core.BatchEngine(str(smollm2_path), "cpu", 256, 4, 0)
    e.skip = None
    return e


def _ids(path: Path, text: str) -> list[int]:
    return _core.Tokenizer(str(path)).encode(text, add_special=True, parse_special=False)


def _greedy_logits(
    e: _core.BatchEngine, slots: list[int], prompts: list[list[int]], n: int
) -> dict[int, list[np.ndarray]]:
    """Greedy decoding of every prompt in its slot, all in the same steps; every step's logits."""
    for s in slots:
        e.truncate(s, 0)
    lg, _ = e.step([(s, p, -1, True) for s, p in zip(slots, prompts)])
    out = {s: [lg[i].copy()] for i, s in enumerate(slots)}
    for k in range(n):
        seqs = [(s, [int(np.argmax(out[s][-1]))], k, True) for s in slots]
        lg, _ = e.step(seqs)
        for i, s in enumerate(slots):
            out[s].append(lg[i].copy())
    return out


def check_serving_rows(path: Path, forward: Any, tol: float) -> None:
    """Batched serving steps of prompts of 3, 11 and 20 tokens, 12 greedy tokens each (so a small
    window is passed for most of them): each sequence's logits are bitwise those of decoding it
    alone, and within `tol` relative L2 of `forward(tokens)`, a reference's logits."""
    from test_forward import rel_err, sample_tokens

    eng = _core.BatchEngine(str(path), "cpu", 64, 3, 2)
    eng.skip = None
    prompts = [sample_tokens(n, 288, seed=n) for n in (3, 11, 20)]
    together = _greedy_logits(eng, [0, 1, 2], prompts, 12)
    for s, prompt in enumerate(prompts):
        alone = _greedy_logits(eng, [s], [prompt], 12)[s]
        assert all(np.array_equal(a, b) for a, b in zip(alone, together[s]))
        generated = [int(np.argmax(lg)) for lg in alone[:-1]]
        want = forward(prompt + generated)[len(prompt) - 1 :]
        assert rel_err(np.stack(alone), want).max() <= tol


def test_batched_logits_equal_single_sequence_bitwise(
    engine: _core.BatchEngine, smollm2_path: Path
) -> None:
    prompts = [_ids(smollm2_path, p) for p in PROMPTS]
    alone = [_greedy_logits(engine, [0], [p], 6)[0] for p in prompts]
    together = _greedy_logits(engine, [0, 1, 2, 3], prompts, 6)
    for s in range(4):
        for a, b in zip(alone[s], together[s]):
            assert np.array_equal(a, b)


def test_rows_at_different_positions_and_chunking(
    engine: _core.BatchEngine, smollm2_path: Path
) -> None:
    # Sequence A's prompt read in one step alone vs in two chunks beside a decoding sequence B.
    a = _ids(smollm2_path, "In the beginning the universe was created. This has made a lot")
    b = _ids(smollm2_path, "Hello")
    engine.truncate(0, 0)
    ref, _ = engine.step([(0, a, -1, True)])
    engine.truncate(0, 0)
    engine.truncate(1, 0)
    engine.step([(1, b, -1, False), (0, a[:5], -1, False)])
    got, _ = engine.step([(0, a[5:], -1, True), (1, [42], 0, True)])
    assert np.array_equal(ref[0], got[0])
    assert engine.cached(0) == a and engine.cached(1) == b + [42]


def test_slot_reused_after_a_sequence_leaves(engine: _core.BatchEngine, smollm2_path: Path) -> None:
    p = _ids(smollm2_path, PROMPTS[0])
    engine.truncate(2, 0)
    ref, _ = engine.step([(2, p, -1, True)])
    engine.truncate(2, 0)
    engine.step([(2, _ids(smollm2_path, "something else entirely, longer than before"), -1, False)])
    engine.truncate(2, 0)  # the sequence left; the slot starts over
    again, _ = engine.step([(2, p, -1, True)])
    assert np.array_equal(ref[0], again[0])


def test_prefix_reuse_evaluates_only_the_rest(
    engine: _core.BatchEngine, smollm2_path: Path
) -> None:
    first = _ids(smollm2_path, "A shared system prompt about cats. Question one?")
    second = first + _ids(smollm2_path, " Answer. Question two?")[1:]
    engine.truncate(3, 0)
    engine.step([(3, first, -1, True)])
    kept = engine.reuse_prefix(3, second)
    assert kept == len(first)
    before = engine.tokens_evaluated
    got, _ = engine.step([(3, second[kept:], -1, True)])
    assert engine.tokens_evaluated - before == len(second) - len(first)
    engine.truncate(3, 0)
    fresh, _ = engine.step([(3, second, -1, True)])
    assert np.array_equal(got[0], fresh[0])


def test_bad_steps_are_typed_errors(engine: _core.BatchEngine) -> None:
    with pytest.raises(InvalidArgumentError, match="twice"):
        engine.step([(0, [1], -1, True), (0, [2], -1, True)])
    with pytest.raises(InvalidArgumentError, match="slot"):
        engine.step([(9, [1], -1, True)])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        engine.step([(0, [10**8], -1, True)])


def test_cuda_refuses_several_sequences(smollm2_path: Path) -> None:
    with pytest.raises(BackendUnavailableError):
        _core.BatchEngine(str(smollm2_path), "cuda", 64, 2, 0)


def test_batch_generator_greedy_text_is_load_independent(smollm2_path: Path) -> None:
    gen = BatchGenerator(str(smollm2_path), n_parallel=3, n_ctx=256, prompt_chunk=4)
    gen.engine.skip = None

    def run(prompts: list[str]) -> list[str]:
        texts = [""] * len(prompts)
        done = [False] * len(prompts)

        def sink(i: int):  # type: ignore[no-untyped-def]
            def on(ev: Event) -> None:
                texts[i] += ev.text
                done[i] = done[i] or ev.finish is not None

            return on

        for i, p in enumerate(prompts):
            ids = gen.tokenizer.encode(p, add_special=True, parse_special=False)
            gen.submit(Request(ids, sink(i), max_tokens=10, temperature=0.0))
        while gen.has_work():
            gen.step()
        assert all(done)
        return texts

    alone = [run([p])[0] for p in PROMPTS]
    assert run(PROMPTS) == alone  # 4 requests on 3 slots: one waits and joins later


def test_batch_generator_counts_prompt_and_decode_steps(smollm2_path: Path) -> None:
    gen = BatchGenerator(str(smollm2_path), n_parallel=2, n_ctx=256, prompt_chunk=4)
    gen.engine.skip = None
    ids = gen.tokenizer.encode("A shared system prompt about cats.", add_special=True)
    finished: list[str] = []

    def on(ev: Event) -> None:
        if ev.finish is not None:
            finished.append(ev.finish)

    gen.submit(Request(ids, on, max_tokens=3, temperature=0.0))
    while gen.has_work():
        gen.step()
    # Its prompt in chunks of 4 (the first token sampled from the last chunk), then 2 steps that
    # only decode, one row each.
    assert finished == ["length"]
    assert gen.prompt_evaluated == len(ids)
    assert gen.decode_step_tokens == {1: 2}
    assert gen.decode_step_seconds[1] > 0.0
    # The same prompt again: the slot's cache holds all of it but its last token.
    gen.submit(Request(ids, on, max_tokens=1, temperature=0.0))
    while gen.has_work():
        gen.step()
    assert gen.prompt_evaluated == len(ids) + 1
    assert gen.decode_step_tokens == {1: 2}
