"""Generator: streaming, stop strings, sampling, cancel, lifecycle.

The first half drives the Python layer with a scripted fake engine (bytes as tokens, logits
that make the next scripted token the argmax), so each behaviour is checked exactly. The second
half runs the real engine on SmolLM2-135M and is skipped until ``_core.Engine`` exists.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from ffnskip_native import (
    CancelledError,
    ContextOverflowError,
    Error,
    InvalidArgumentError,
    ModelFileError,
    _core,
)
from ffnskip_native.generator import Generator
from ffnskip_native.skip import SkipConfig
from ffnskip_native.streaming import StopMatcher, Utf8Assembler

HAS_ENGINE = hasattr(_core, "Engine")
needs_engine = pytest.mark.skipif(not HAS_ENGINE, reason="_core.Engine is not built yet")

# ---- a scripted engine -------------------------------------------------------------------------

BOS, EOS, N_VOCAB = 256, 257, 258


class FakeTokenizer:
    """Token i < 256 is the byte i; 256 is BOS "<s>", 257 is EOS "</s>"."""

    n_vocab = N_VOCAB
    bos_id = BOS
    eos_id = EOS
    add_bos = True
    eog_ids = [EOS]
    model = "fake"
    pre = "fake"
    warnings: list[str] = []

    def encode(self, text, add_special=True, parse_special=False):
        ids = [BOS] if add_special else []
        while text:
            if parse_special and text.startswith("<s>"):
                ids.append(BOS)
                text = text[3:]
            elif parse_special and text.startswith("</s>"):
                ids.append(EOS)
                text = text[4:]
            else:
                ids.extend(text[0].encode())
                text = text[1:]
        return ids

    def token_to_bytes(self, i):
        return bytes([i]) if i < 256 else b""

    def decode(self, ids, special=False):
        out = b""
        for i in ids:
            if i < 256:
                out += bytes([i])
            elif special:
                out += b"<s>" if i == BOS else b"</s>"
        return out.decode("utf-8", errors="replace")


class FakeEngine:
    """Makes script[k] the argmax for the k-th generated token (then EOS).

    `row` instead gives every step the same logits: {token: logit}, -inf elsewhere."""

    script: list[int] = []
    row: Optional[dict[int, float]] = None
    step_delay = 0.0
    prompt_blocks = False  # eval() waits (GIL released) until cancelled
    interrupt_at: Optional[int] = None  # eval_generated raises KeyboardInterrupt at this index
    profile: Optional[_core.SkipConfig] = None
    chat_template: Optional[str] = None
    instances: list[FakeEngine] = []

    def __init__(self, path, backend="auto", n_ctx=4096, n_threads=0):
        if not os.path.exists(path):
            raise ModelFileError(f"cannot open {path!r}")
        self.n_ctx = n_ctx
        self.n_past = 0
        self.n_vocab = N_VOCAB
        self.n_layer = 4
        self.hparams = {"n_ctx_train": 4096, "n_embd": 8}
        self.backend = "cpu"
        self.tokenizer = FakeTokenizer()
        self.skip_profile = type(self).profile
        self.metadata = {"general.architecture": "fake"}
        if self.chat_template is not None:
            self.metadata["tokenizer.chat_template"] = self.chat_template
        self.cancelled = threading.Event()
        self.prompt_started = threading.Event()  # eval() has begun (prompt_blocks tests)
        self.closed = False
        self.prompts: list[list[int]] = []
        self.generated: list[tuple[int, int]] = []
        self.skip_calls: list[Optional[_core.SkipConfig]] = []
        self.logits_calls: list[tuple] = []
        FakeEngine.instances.append(self)

    def _logits(self, k):
        x = np.zeros(N_VOCAB, dtype=np.float32)
        if self.row is not None:
            x[:] = -np.inf
            for tok, v in self.row.items():
                x[tok] = v
            return x
        x[self.script[k] if k < len(self.script) else EOS] = 10.0
        return x

    def close(self):
        self.closed = True

    def reset(self):
        self.n_past = 0
        self.generated = []

    def eval(self, tokens, all_logits=False):
        if self.prompt_blocks:
            self.prompt_started.set()
            if not self.cancelled.wait(30.0):
                raise AssertionError("prompt was never cancelled")
        if self.cancelled.is_set():
            raise CancelledError("cancelled")
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextOverflowError("fake: overflow")
        self.prompts.append(list(tokens))
        self.n_past += len(tokens)
        return self._logits(0)

    def eval_generated(self, token, gen_index):
        if self.interrupt_at == gen_index:
            raise KeyboardInterrupt
        if self.step_delay:
            time.sleep(self.step_delay)
        if self.cancelled.is_set():
            raise CancelledError("cancelled")
        assert gen_index == len(self.generated)
        if self.n_past >= self.n_ctx:
            raise ContextOverflowError("fake: overflow")
        self.generated.append((token, gen_index))
        self.n_past += 1
        return self._logits(gen_index + 1)

    def cancel(self):
        self.cancelled.set()

    def clear_cancel(self):
        self.cancelled.clear()

    def set_skip(self, cfg):
        self.skip_calls.append(cfg)

    def skip_stats(self):
        return {"tokens": len(self.generated), "skip_ratio": 0.25}

    def reset_skip_stats(self):
        pass

    def logits(self, tokens, all_positions=False, skip=None, prompt_len=None):
        self.logits_calls.append((list(tokens), all_positions, skip, prompt_len))
        return np.zeros(N_VOCAB, dtype=np.float32)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A factory: fake(script_text_or_ids, **engine_attrs) -> Generator on a FakeEngine."""
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    made: list[Generator] = []

    def make(script=b"", n_ctx=4096, skip=None, seed=0, **attrs):
        if isinstance(script, str):
            script = script.encode()
        cls = type("Fake", (FakeEngine,), {"script": list(script), **attrs})
        monkeypatch.setattr(_core, "Engine", cls, raising=False)
        g = Generator(model, n_ctx=n_ctx, skip=skip, seed=seed)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def engine_of(g: Generator) -> FakeEngine:
    return g.engine  # type: ignore[return-value]


GREEDY = dict(temperature=0.0)

# ---- streaming helpers ---------------------------------------------------------------------


def test_utf8_assembler_never_splits_a_character():
    text = "héllo → 世界 🙂!"
    asm = Utf8Assembler()
    pieces = [asm.feed(bytes([b])) for b in text.encode()]
    assert "".join(pieces) + asm.flush() == text
    assert [p for p in pieces if p] == list(text)  # each character appears whole, at once
    asm.feed("🙂".encode()[:2])
    assert asm.pending
    assert asm.flush() == "\ufffd"
    assert Utf8Assembler().feed(b"\xffa") == "\ufffda"


def test_stop_matcher_holds_back_prefixes():
    m = StopMatcher(["END", "\n\n"])
    assert m.feed("ab") == ("ab", False)
    assert m.feed("E") == ("", False)
    assert m.held == "E"
    assert m.feed("Nx") == ("ENx", False)  # not a stop after all: released in one piece
    assert m.feed("yEN") == ("y", False)
    assert m.feed("D tail") == ("", True)
    assert m.stopped and m.flush() == ""
    m = StopMatcher(["abc"])
    assert m.feed("xxab") == ("xx", False)
    assert m.flush() == "ab"  # end of stream: a dangling prefix is ordinary text
    m = StopMatcher(["aab"])
    assert m.feed("aaab") == ("a", True)  # overlapping prefixes: the earliest real match


# ---- generation on the fake engine ---------------------------------------------------------


def test_streams_whole_characters_and_stops_at_eos(fake):
    text = "héllo → 世界 🙂"
    g = fake(text)
    pieces = list(g.generate("hi", **GREEDY))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) == len(text)
    assert g.last_finish_reason == "stop"
    s = g.stats
    assert s["prompt_tokens"] == 3 and s["generated_tokens"] == len(text.encode())
    eng = engine_of(g)
    assert eng.prompts == [[BOS, ord("h"), ord("i")]]
    assert [i for _, i in eng.generated] == list(range(len(text.encode())))


def test_stop_string_is_not_emitted(fake):
    g = fake("Hello\n\nWorld")
    pieces = list(g.generate("x", stop=["\n\n"], **GREEDY))
    assert "".join(pieces) == "Hello"
    assert g.last_finish_reason == "stop"
    g = fake("abENxyEND and more")
    pieces = list(g.generate("x", stop="END", **GREEDY))
    assert "".join(pieces) == "abENxy"
    assert not any(p.endswith("E") or p.endswith("EN") for p in pieces)
    g = fake("abEN")  # ends (EOS) while a stop prefix is held: the text is released
    assert "".join(g.generate("x", stop=["END"], **GREEDY)) == "abEN"


def test_max_new_tokens_and_context_limit(fake):
    g = fake("abcdefghij")
    assert "".join(g.generate("x", max_new_tokens=3, **GREEDY)) == "abc"
    assert g.last_finish_reason == "length"
    assert len(engine_of(g).generated) == 2  # the last sampled token is never evaluated
    assert list(g.generate("x", max_new_tokens=0)) == []
    g = fake("abcdefghij", n_ctx=8)
    out = "".join(g.generate("abcd", max_new_tokens=100, **GREEDY))  # 5 prompt tokens
    assert out == "abcd"  # positions 6..8 hold generated tokens 1..3; the 4th fills no slot
    assert g.last_finish_reason == "length"
    with pytest.raises(ContextOverflowError, match="n_ctx=8"):
        g.generate("abcdefgh")  # 9 tokens: raised at the call, before iterating


def test_bad_arguments_raise_at_the_call(fake):
    g = fake("ab")
    for kw in (
        dict(temperature=-1.0),
        dict(top_p=0.0),
        dict(top_k=-2),
        dict(min_p=2.0),
        dict(repetition_penalty=0.0),
        dict(max_new_tokens=-1),
        dict(stop=[""]),
        dict(stop=[3]),
    ):
        with pytest.raises(InvalidArgumentError):
            g.generate("x", **kw)


def flat(chars: bytes) -> dict[int, float]:
    return dict.fromkeys(chars, 0.0)


def test_same_seed_same_text(fake):
    g = fake(row=flat(b"abcdefghijklmnop"))
    kw = dict(max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = "".join(g.generate("x", seed=11, **kw))
    b = "".join(g.generate("x", seed=11, **kw))
    c = "".join(g.generate("x", seed=12, **kw))
    assert len(a) == 24 and a == b and a != c
    # The constructor's seed makes the unseeded stream reproducible too.
    g1, g2 = fake(row=flat(b"abcdefgh"), seed=5), fake(row=flat(b"abcdefgh"), seed=5)
    assert "".join(g1.generate("x", **kw)) == "".join(g2.generate("x", **kw))


def test_repetition_penalty_sees_generated_tokens(fake):
    g = fake(row={ord("a"): 2.0, ord("b"): 1.5})
    assert "".join(g.generate("x", max_new_tokens=4, **GREEDY)) == "aaaa"
    # a: 2 -> 1 once generated, so b (1.5) wins; then both are penalised: a 1.0 > b 0.75.
    out = "".join(g.generate("x", max_new_tokens=4, repetition_penalty=2.0, **GREEDY))
    assert out == "abaa"
    # Prompt tokens count as recent too.
    out = "".join(g.generate("a", max_new_tokens=2, repetition_penalty=2.0, **GREEDY))
    assert out == "ba"


def test_cancel_from_another_thread(fake):
    g = fake("abcdefghijklmnopqrstuvwxyz" * 4, step_delay=0.01)
    it = g.generate("x", **GREEDY)
    timer = threading.Timer(0.1, g.cancel)
    timer.start()
    pieces = list(it)
    timer.join()
    assert g.last_finish_reason == "cancelled"
    assert 0 < len(pieces) < 104
    # cancel() does not leak into the next generation
    assert "".join(g.generate("x", max_new_tokens=5, **GREEDY)) == "abcde"


def test_cancel_stops_within_one_token(fake):
    g = fake("abcdefghij")
    out = []
    for piece in g.generate("x", **GREEDY):
        out.append(piece)
        if len(out) == 3:
            g.cancel()
    assert out == ["a", "b", "c"]
    assert g.last_finish_reason == "cancelled"


def test_closing_the_iterator_stops_generation(fake):
    g = fake("abcdefghij")
    it = g.generate("x", **GREEDY)
    assert next(it) == "a" and next(it) == "b"
    it.close()
    assert g.last_finish_reason == "cancelled"
    assert g.stats["generated_tokens"] == 2
    assert len(engine_of(g).generated) == 1  # "b" was sampled but never evaluated
    # Starting a new generation closes an unfinished one, which then says so (issue 16: it
    # used to end silently, so a thread whose iterator was superseded got an empty text).
    first = g.generate("x", **GREEDY)
    next(first)
    assert "".join(g.generate("x", max_new_tokens=2, **GREEDY)) == "ab"
    with pytest.raises(Error, match="superseded"):
        next(first)


def test_prompt_evaluation_is_cancellable(fake):
    g = fake("abc", prompt_blocks=True)
    timer = threading.Timer(0.1, g.cancel)
    timer.start()
    t0 = time.monotonic()
    assert list(g.generate("x", **GREEDY)) == []
    timer.join()
    assert time.monotonic() - t0 < 3.0
    assert g.last_finish_reason == "cancelled"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_during_prompt_cancels_the_engine_and_reraises(fake):
    g = fake("abc", prompt_blocks=True)
    main = threading.main_thread().ident
    sent: list[float] = []

    def interrupt_once_blocked() -> None:
        # Ctrl-C once the native prompt evaluation is running (a fixed delay raced with a slow
        # start on a loaded CI machine).
        if engine_of(g).prompt_started.wait(30.0):
            sent.append(time.monotonic())
            signal.pthread_kill(main, signal.SIGINT)

    # A process started in the background (e.g. `.ci/run &`) inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: install it for this test, as a terminal has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Thread(target=interrupt_once_blocked)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            list(g.generate("x", **GREEDY))
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent and time.monotonic() - sent[0] < 3.0
    assert engine_of(g).cancelled.is_set()  # the native work was told to stop
    assert g.last_finish_reason == "cancelled"


def test_keyboard_interrupt_while_decoding_is_reraised(fake):
    g = fake("abcdef", interrupt_at=2)
    out = []
    with pytest.raises(KeyboardInterrupt):
        for piece in g.generate("x", **GREEDY):
            out.append(piece)
    assert out == ["a", "b", "c"]
    assert g.last_finish_reason == "cancelled"


def test_lifecycle(fake, tmp_path):
    g = fake("ab")
    eng = engine_of(g)
    it = g.generate("x", **GREEDY)
    next(it)
    g.close()
    assert eng.closed and g.closed
    g.close()  # idempotent
    for call in (
        lambda: g.generate("x"),
        lambda: g.tokenize("x"),
        lambda: g.detokenize([1]),
        lambda: g.logits([1]),
        lambda: g.chat([{"role": "user", "content": "x"}]),
        lambda: g.n_ctx,
    ):
        with pytest.raises(Error, match="Generator is closed"):
            call()
    with fake("ab") as g2:
        assert "".join(g2.generate("x", **GREEDY)) == "ab"
    assert g2.closed
    g3 = Generator(tmp_path / "fake.gguf")  # the fixture's fake engine is still installed
    eng3 = engine_of(g3)
    del g3
    gc.collect()
    assert eng3.closed  # __del__ closed it
    with pytest.raises(ModelFileError):
        Generator(tmp_path / "missing.gguf")


def test_skip_argument(fake):
    profile = _core.SkipConfig() if hasattr(_core, "SkipConfig") else None
    if profile is not None:
        profile.warmup = 7
        g = fake("ab", profile=profile)
        assert g.skip is not None and g.skip.warmup == 7  # None: the file's profile
        list(g.generate("x", **GREEDY))
        assert g.stats["skip"]["skip_ratio"] == 0.25
        g = fake("ab", profile=profile, skip=False)
        assert g.skip is None and engine_of(g).skip_calls == [None]
    g = fake("ab")
    assert g.skip is None
    list(g.generate("x", **GREEDY))
    assert "skip" not in g.stats
    with pytest.raises(InvalidArgumentError):
        g.skip = "fast"  # type: ignore[assignment]


def test_tokenize_detokenize_logits(fake):
    g = fake("ab")
    assert g.tokenize("hi") == [BOS, ord("h"), ord("i")]
    assert g.tokenize("hi", add_bos=False) == [ord("h"), ord("i")]
    assert g.tokenize("<s>", add_bos=False, special=True) == [BOS]
    assert g.detokenize([ord("o"), ord("k")]) == "ok"
    g.logits([1, 2, 3], all_positions=True, prompt_len=2)
    assert engine_of(g).logits_calls[-1] == ([1, 2, 3], True, None, 2)
    if hasattr(_core, "SkipConfig"):
        g.logits([1, 2], skip=SkipConfig(warmup=0))
        passed = engine_of(g).logits_calls[-1][2]
        assert isinstance(passed, _core.SkipConfig) and passed.warmup == 0


def test_from_pretrained_uses_the_offline_cache(fake, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-gguf"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "tiny.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake("ok")  # installs the fake engine class
    g = Generator.from_pretrained("someone/tiny-gguf", "tiny.gguf", cache_dir=tmp_path / "hub")
    try:
        assert g.model_path.name == "tiny.gguf"
        assert "".join(g.generate("x", **GREEDY)) == "ok"
    finally:
        g.close()
    with pytest.raises(ModelFileError, match="local cache"):
        Generator.from_pretrained("someone/tiny-gguf", "absent.gguf", cache_dir=tmp_path / "hub")


# ---- the real engine on SmolLM2-135M -----------------------------------------------------------


@pytest.fixture(scope="module")
def smol(smollm2_path):
    if not HAS_ENGINE:
        pytest.skip("_core.Engine is not built yet")
    with Generator(smollm2_path, backend="cpu", n_ctx=1024, seed=0) as g:
        yield g


@needs_engine
def test_greedy_matches_argmax_of_teacher_forced_logits(smol):
    prompt = "The capital of France is"
    text = "".join(smol.generate(prompt, max_new_tokens=6, temperature=0.0))
    assert smol.stats["generated_tokens"] >= 1
    ids = smol.tokenize(prompt)
    for _ in range(smol.stats["generated_tokens"]):
        ids.append(int(np.argmax(smol.logits(ids))))
    expected = smol.detokenize(ids[len(smol.tokenize(prompt)) :])
    assert text == expected
    assert text == "".join(smol.generate(prompt, max_new_tokens=6, temperature=0.0))


@needs_engine
def test_seeded_sampling_is_reproducible(smol):
    kw = dict(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = "".join(smol.generate("Once upon a time", seed=123, **kw))
    b = "".join(smol.generate("Once upon a time", seed=123, **kw))
    assert a == b and a


@needs_engine
def test_stop_string_on_the_model(smol):
    full = "".join(smol.generate("1, 2, 3, 4,", max_new_tokens=6, temperature=0.0))
    assert "," in full
    cut = "".join(smol.generate("1, 2, 3, 4,", max_new_tokens=6, temperature=0.0, stop=","))
    assert cut == full[: full.index(",")]
    assert smol.last_finish_reason == "stop"


@needs_engine
def test_context_window_on_the_model(smollm2_path):
    with Generator(smollm2_path, backend="cpu", n_ctx=12) as g:
        with pytest.raises(ContextOverflowError):
            g.generate("word " * 40)
        list(g.generate("1, 2, 3,", max_new_tokens=100, temperature=0.0))
        s = g.stats
        assert g.last_finish_reason == "length"
        assert s["prompt_tokens"] + s["generated_tokens"] == 13


@needs_engine
def test_chat_on_the_model(smol):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = smol.apply_chat_template(messages)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    answer = smol.chat(messages, stream=False, temperature=0.0, max_new_tokens=8)
    assert isinstance(answer, str) and answer.strip()
    # The template starts with the BOS string: no second BOS is added.
    ids = smol.tokenize(text, add_bos=False, special=True)
    assert smol.stats["prompt_tokens"] == len(ids)
    assert ids[0] == smol.tokenizer.bos_id and ids[1] != smol.tokenizer.bos_id
    streamed = "".join(smol.chat(messages, temperature=0.0, max_new_tokens=8))
    assert streamed == answer


@needs_engine
def test_cancel_on_the_model(smol):
    it = smol.generate("1, 2, 3, 4, 5,", max_new_tokens=200, temperature=0.0)
    n = 0
    for _ in it:
        n += 1
        if n == 2:
            t = threading.Thread(target=smol.cancel)
            t.start()
            t.join()
    assert smol.last_finish_reason == "cancelled"
    assert n == 2 and smol.stats["generated_tokens"] == 2


@needs_engine
def test_other_threads_run_during_generation(smol):
    """The engine releases the GIL: a Python thread keeps ticking through a long prompt."""
    prompt = "The quick brown fox jumps over the lazy dog. " * 12
    result: dict = {}

    def work():
        result["text"] = "".join(smol.generate(prompt, max_new_tokens=2, temperature=0.0))

    t = threading.Thread(target=work)
    last = time.perf_counter()
    max_gap = 0.0
    t.start()
    while t.is_alive():
        time.sleep(0.002)
        now = time.perf_counter()
        max_gap = max(max_gap, now - last)
        last = now
    t.join()
    prompt_s = smol.stats["prompt_seconds"]
    if prompt_s < 0.3:
        pytest.skip(f"prompt evaluated too fast ({prompt_s:.2f}s) to tell")
    assert max_gap < prompt_s / 2, (max_gap, prompt_s)


@needs_engine
def test_skip_config_reports_stats(smollm2_path):
    cfg = SkipConfig(warmup=2, threshold=0.5, span=2)
    with Generator(smollm2_path, backend="cpu", n_ctx=256, skip=cfg) as g:
        assert g.skip == cfg
        list(g.generate("Hello there", max_new_tokens=5, temperature=0.0))
        skip = g.stats["skip"]
        assert skip["tokens"] > 0 and 0.0 <= skip["skip_ratio"] <= 1.0
    with Generator(smollm2_path, backend="cpu", n_ctx=256, skip=False) as g:
        list(g.generate("Hello there", max_new_tokens=2, temperature=0.0))
        assert "skip" not in g.stats


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_engine
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_create_generate_close_does_not_leak(smollm2_path):
    def cycle():
        with Generator(smollm2_path, backend="cpu", n_ctx=128, n_threads=1) as g:
            "".join(g.generate("Hi", max_new_tokens=1, temperature=0.0))

    for _ in range(3):
        cycle()
    before = _rss_bytes()
    for _ in range(50):
        cycle()
    grown = _rss_bytes() - before
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 50 cycles"
