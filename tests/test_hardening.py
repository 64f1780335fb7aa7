"""Misuse that used to crash, hang or escape as a raw TypeError (issue 16, items 3, 6, 7, 12, 13
and 14): every case now gives a typed ffnskip_native.Error at the call, or keeps working.

Cases that crashed or hung the process run in a child process with a timeout, so that a
regression fails the test instead of taking the suite down.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import _make_test_model
from ffnskip_native import (
    ContextLengthWarning,
    Error,
    Generator,
    InvalidArgumentError,
    ModelFileError,
    ModelFormatError,
    ResourceError,
    SkipConfig,
    Tokenizer,
    _core,
)

INT32_MAX = 2**31 - 1
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)
# SmolLM2-135M: 30 layers, 3 KV heads of 64, f16 K and V.
SMOL_KV_BYTES_PER_POS = 30 * 2 * 3 * 64 * 2


def run_child(code: str, timeout: float = 60, preexec_fn=None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (same environment); fails the test if it hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec_fn,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process hung (killed after {timeout} s)")


def describe(r: subprocess.CompletedProcess) -> str:
    sig = f" ({signal.Signals(-r.returncode).name})" if r.returncode < 0 else ""
    out, err = r.stdout[-2000:], r.stderr[-2000:]
    return f"exit status {r.returncode}{sig}\nstdout: {out}\nstderr: {err}"


@pytest.fixture(scope="module")
def gen(smollm2_path):
    with Generator(smollm2_path, backend="cpu", n_ctx=64, n_threads=1, seed=0) as g:
        yield g


# ---- item 3: thread creation -------------------------------------------------------------------


# AddressSanitizer reserves terabytes of shadow address space: an RLIMIT_AS would break it.
needs_address_space_limit = pytest.mark.skipif(
    "asan" in os.environ.get("LD_PRELOAD", ""), reason="RLIMIT_AS cannot be set under ASan"
)


def _huge_thread_stacks() -> None:
    # glibc sizes new threads' stacks from RLIMIT_STACK: with 2 GiB each, a 4 GiB address space
    # holds at most one worker, so a pool of 4 threads fails to start its second or third.
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (2 << 30, hard))


@needs_address_space_limit
def test_thread_creation_failure_raises_resource_error(smollm2_path):
    """When std::thread threw, the pool's members were destroyed under its running workers:
    a deadlock in pthread_cond_destroy (workers asleep) or std::terminate (joinable threads)."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if hard != resource.RLIM_INFINITY and hard < 2 << 30:
        pytest.skip("the RLIMIT_STACK hard limit is too low to make thread stacks exhaust 4 GiB")
    r = run_child(
        f"""
        import resource
        import ffnskip_native as fn
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        try:
            fn.Generator({str(smollm2_path)!r}, backend="cpu", n_ctx=64, n_threads=4)
            print("loaded")
        except fn.ResourceError as e:
            print("ResourceError:", e)
        """,
        preexec_fn=_huge_thread_stacks,
    )
    assert r.returncode == 0, describe(r)
    assert "ResourceError: cannot start worker thread" in r.stdout, describe(r)


def test_n_threads_above_cap_is_refused(smollm2_path):
    cap = 4 * (os.cpu_count() or 1)
    for n in (cap + 1, 1000, INT32_MAX, 2**31, 2**70):
        with pytest.raises(InvalidArgumentError, match="n_threads"):
            Generator(smollm2_path, backend="cpu", n_ctx=16, n_threads=n)


# ---- item 6: the model file truncated under the process ---------------------------------------


@pytest.fixture(scope="module")
def q4k_model(tmp_path_factory) -> Path:
    # K-quant weights are not re-laid out at load: the CPU backend reads them where they lie.
    return _make_test_model()(
        tmp_path_factory.mktemp("q4k") / "q4k.gguf", wtype="Q4_K", n_embd=256, n_ff=512, seed=5
    )


@pytest.mark.parametrize("which", ["smollm2", "q4k"])
def test_truncated_model_file_keeps_working(which, smollm2_path, q4k_model, tmp_path):
    """`cp new.gguf model.gguf` truncates the file in place: reading a weight that was still
    mapped from it killed the process with SIGBUS."""
    model = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path if which == "smollm2" else q4k_model, model)
    r = run_child(
        f"""
        import ffnskip_native as fn
        path = {str(model)!r}
        g = fn.Generator(path, backend="cpu", n_ctx=64, n_threads=2)
        run = lambda: "".join(g.generate("The capital of France is", 8, temperature=0))
        before = run()
        with open(path, "r+b") as f:
            f.truncate(0)
        print(before == run())
        """
    )
    assert r.returncode == 0, describe(r)
    assert r.stdout.splitlines()[-1] == "True", describe(r)


# ---- item 7: a path that is not a regular file ------------------------------------------------


def test_fifo_model_path_is_refused(tmp_path):
    """open() of a FIFO without a writer blocked forever, in every loader."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    r = run_child(
        f"""
        import ffnskip_native as fn
        from ffnskip_native import _core
        path = {str(fifo)!r}
        for name, load in [("Generator", lambda: fn.Generator(path, backend="cpu")),
                           ("Tokenizer", lambda: fn.Tokenizer(path)),
                           ("gguf_read", lambda: _core.gguf_read(path))]:
            try:
                load()
                print(name, "loaded")
            except fn.ModelFileError as e:
                print(name, "ModelFileError", e)
        """,
        timeout=30,
    )
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    assert len(lines) == 3, describe(r)
    for line in lines:
        assert "ModelFileError" in line and "not a regular file (a FIFO)" in line, line


def test_character_device_is_refused():
    with pytest.raises(ModelFileError, match="not a regular file"):
        Tokenizer("/dev/null")


# ---- item 12: out-of-range arguments raise typed errors at the call ---------------------------

# Each case must raise InvalidArgumentError when called: generate() and chat() return a lazy
# iterator, so a check that runs only at the first token does not count.
CALL_CASES = {
    "n_ctx=2**31": lambda g, p: Generator(p, backend="cpu", n_ctx=2**31),
    "n_ctx=2**70": lambda g, p: Generator(p, backend="cpu", n_ctx=2**70),
    "n_ctx=1.5": lambda g, p: Generator(p, backend="cpu", n_ctx=1.5),
    "n_threads=2**31": lambda g, p: Generator(p, backend="cpu", n_ctx=16, n_threads=2**31),
    "backend=5": lambda g, p: Generator(p, backend=5),
    "model=5": lambda g, p: Generator(5),
    "model with NUL": lambda g, p: Generator(str(p) + "\0.txt"),
    "seed=1.5": lambda g, p: Generator(p, backend="cpu", n_ctx=16, seed=1.5),
    "span=2**31": lambda g, p: SkipConfig(span=2**31),
    "warmup=2**31": lambda g, p: SkipConfig(warmup=2**31),
    "cold_end=2**40": lambda g, p: SkipConfig(cold_end=2**40),
    "threshold=10**400": lambda g, p: SkipConfig(threshold=10**400),
    "generate seed=1.5": lambda g, p: g.generate("hi", seed=1.5),
    "generate top_k=10**12": lambda g, p: g.generate("hi", top_k=10**12),
    "generate top_k=2**31": lambda g, p: g.generate("hi", top_k=2**31),
    "generate surrogate": lambda g, p: g.generate("caf\udcff"),
    "chat surrogate": lambda g, p: g.chat([{"role": "user", "content": "\ud800"}]),
    "tokenize surrogate": lambda g, p: g.tokenize("\udcff"),
    "tokenize bytes": lambda g, p: g.tokenize(b"hi"),
    "detokenize 2**31": lambda g, p: g.detokenize([2**31]),
    "detokenize -2**40": lambda g, p: g.detokenize([-(2**40)]),
    "detokenize str": lambda g, p: g.detokenize(["a"]),
    "detokenize 5": lambda g, p: g.detokenize(5),
    "logits 2**70": lambda g, p: g.logits([2**70]),
    "logits 1.0": lambda g, p: g.logits([1.0]),
    "logits prompt_len=2**40": lambda g, p: g.logits([1, 2], prompt_len=2**40),
    "Tokenizer.encode surrogate": lambda g, p: Tokenizer(p).encode("a\udcff"),
    "Tokenizer.decode 2**31": lambda g, p: Tokenizer(p).decode([2**31]),
    "Tokenizer.token_to_bytes 2**40": lambda g, p: Tokenizer(p).token_to_bytes(2**40),
    "Tokenizer path 5": lambda g, p: Tokenizer(5),
    "Tokenizer.encode add_special='yes'": lambda g, p: Tokenizer(p).encode("a", add_special="yes"),
    "tokenize add_bos='yes'": lambda g, p: g.tokenize("a", add_bos="yes"),
    "logits all_positions='yes'": lambda g, p: g.logits([1], all_positions="yes"),
    "generate stop=5": lambda g, p: g.generate("hi", stop=5),
    "chat misspelt keyword": lambda g, p: g.chat([{"role": "user", "content": "x"}], temprature=0),
    "SkipConfig.from_dict threshold 'a'": lambda g, p: SkipConfig.from_dict({"threshold": ["a"]}),
    "SkipConfig.from_dict 5": lambda g, p: SkipConfig.from_dict(5),
}


@pytest.mark.parametrize("case", sorted(CALL_CASES))
def test_bad_argument_raises_invalid_argument_at_the_call(case, gen, smollm2_path):
    with pytest.raises(InvalidArgumentError):
        CALL_CASES[case](gen, smollm2_path)


def test_bad_argument_messages_name_the_problem(gen, smollm2_path):
    with pytest.raises(InvalidArgumentError, match=r"lone surrogate U\+DCFF at index 3"):
        gen.generate("caf\udcff")
    with pytest.raises(InvalidArgumentError, match="token id 2147483648 is out of range"):
        gen.detokenize([2**31])
    with pytest.raises(InvalidArgumentError, match=r"n_ctx must be an int in \[1, 2147483647\]"):
        Generator(smollm2_path, n_ctx=2**31)
    with pytest.raises(InvalidArgumentError, match=r"top_k must be an int in \[0, 2147483647\]"):
        gen.generate("hi", top_k=10**12)


def test_valid_edge_values_still_work(gen, smollm2_path):
    """The new checks accept the edges of each range (and numpy ints as token ids)."""
    assert gen.detokenize(np.array([28, 29], dtype=np.int64)) == gen.detokenize([28, 29])
    assert Tokenizer(smollm2_path).decode((28, 29)) == gen.detokenize([28, 29])
    out = "".join(gen.generate("hi", 2, temperature=0, top_k=INT32_MAX, seed=2**64 - 1))
    assert isinstance(out, str)
    assert gen.logits(np.array([1, 2]), prompt_len=1).shape == (gen.n_vocab,)
    assert SkipConfig(span=INT32_MAX, warmup=INT32_MAX).to_core().span == INT32_MAX


# ---- item 13: float32 overflow, seeds, stored profile integers, compensation shape ------------


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"temperature": 1e300},
            f"temperature must be 0 (greedy) or in [{FLT_MIN!r}, {FLT_MAX!r}] (float32), "
            "got 1e+300",
        ),
        ({"temperature": 1e-300}, "temperature must be 0 (greedy) or in"),
        (
            {"repetition_penalty": 1e-300},
            f"repetition_penalty must be in [{FLT_MIN!r}, {FLT_MAX!r}] (float32), got 1e-300",
        ),
        ({"repetition_penalty": 1e39}, "repetition_penalty must be in"),
        ({"top_p": 1e-50}, f"top_p must be in [{FLT_MIN!r}, 1] (float32), got 1e-50"),
    ],
)
def test_sampling_values_outside_float32_rejected_at_the_call(gen, kw, message):
    """Used to pass the call and fail at the first token (as inf, or as 'got 0.000000')."""
    with pytest.raises(InvalidArgumentError) as info:
        gen.generate("hi", **kw)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70, True])
def test_seed_outside_uint64_rejected(gen, smollm2_path, seed):
    """Seeds used to be reduced modulo 2**64 without a word."""
    with pytest.raises(InvalidArgumentError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        gen.generate("hi", seed=seed)
    with pytest.raises(InvalidArgumentError, match="seed"):
        Generator(smollm2_path, backend="cpu", n_ctx=16, seed=seed)


@pytest.mark.parametrize("key", ["warmup", "cold_start", "cold_end", "span"])
def test_stored_profile_integer_out_of_range_is_a_format_error(tmp_path, key):
    """A stored ffnskip.warmup of 2**32 + 5 used to become 5."""
    path = _make_test_model()(
        tmp_path / "m.gguf",
        wtype="F16",
        extra_metadata={"ffnskip.threshold": 0.9, f"ffnskip.{key}": 2**32 + 5},
    )
    with pytest.raises(ModelFormatError, match=f"ffnskip.{key} = 4294967301 is out of range"):
        Generator(path, backend="cpu", n_ctx=16)


def test_compensation_must_have_the_models_shape(gen):
    """A (n_layer * n_embd / 2, 2) array has the right size but the wrong shape; it used to be
    flattened and accepted."""
    n_layer, n_embd = gen.engine.n_layer, gen.engine.hparams["n_embd"]
    wrong = SkipConfig(compensation=np.zeros((n_layer * n_embd // 2, 2), np.float32))
    message = rf"shape \({n_layer * n_embd // 2}, 2\); this model needs \({n_layer}, {n_embd}\)"
    with pytest.raises(InvalidArgumentError, match=message):
        gen.skip = wrong
    with pytest.raises(InvalidArgumentError, match=message):
        gen.logits([1, 2, 3], skip=wrong, prompt_len=1)
    gen.skip = SkipConfig(compensation=np.zeros((n_layer, n_embd), np.float32))
    gen.skip = False


def test_tiny_repetition_penalty_cannot_overflow_a_logit():
    """logit / penalty used to reach +inf: the sampler then drew from NaN weights and returned
    whatever candidate came last instead of the (now overwhelmingly likely) penalised token."""
    s = _core.Sampler(0)
    logits = np.array([10.0, 0.0, -1.0], np.float32)
    kw = {"temperature": 1.0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": FLT_MIN}
    assert {s.sample(logits, recent=[0], **kw) for _ in range(50)} == {0}


def test_sampler_messages_print_the_value():
    """The low-level sampler printed a tiny value as 'got -0.000000'."""
    with pytest.raises(InvalidArgumentError, match=r"got -1e-20$"):
        _core.Sampler(0).sample(np.zeros(4, np.float32), temperature=-1e-20)


# ---- item 14: the context window and the KV cache ---------------------------------------------


def test_n_ctx_beyond_trained_context_warns(tmp_path):
    path = _make_test_model()(tmp_path / "m.gguf", wtype="F16", n_ctx=512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Generator(path, backend="cpu", n_ctx=512).close()
    with pytest.warns(ContextLengthWarning, match="n_ctx=513 is beyond the 512 positions"):
        Generator(path, backend="cpu", n_ctx=513).close()


def test_unallocatable_kv_cache_names_its_bytes(smollm2_path):
    """n_ctx = 2**31 - 1 needs 49 TB of KV cache: a raw MemoryError (std::bad_alloc) before."""
    need = SMOL_KV_BYTES_PER_POS * INT32_MAX
    with pytest.raises(ResourceError) as info:
        Generator(smollm2_path, backend="cpu", n_ctx=INT32_MAX)
    assert f"n_ctx={INT32_MAX} needs {need} bytes" in str(info.value)
    assert isinstance(info.value, MemoryError)


@needs_address_space_limit
def test_kv_cache_over_address_space_limit_is_refused(smollm2_path):
    """n_ctx = 10**6 (23 GB of KV cache) under a 4 GiB address-space limit."""
    r = run_child(
        f"""
        import resource, warnings
        import ffnskip_native as fn
        warnings.simplefilter("ignore", fn.ContextLengthWarning)
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        try:
            fn.Generator({str(smollm2_path)!r}, backend="cpu", n_ctx=10**6, n_threads=1)
            print("loaded")
        except fn.ResourceError as e:
            print("ResourceError:", e)
        """
    )
    assert r.returncode == 0, describe(r)
    need = SMOL_KV_BYTES_PER_POS * 10**6
    assert f"ResourceError: n_ctx=1000000 needs {need} bytes" in r.stdout, describe(r)
    assert "address-space limit" in r.stdout, describe(r)


def test_errors_are_package_errors():
    assert issubclass(ResourceError, Error) and issubclass(ResourceError, MemoryError)
    assert issubclass(ContextLengthWarning, UserWarning)
