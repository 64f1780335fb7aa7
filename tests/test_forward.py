"""The CPU forward pass against the independent numpy reference (tests/reference.py).

Tolerance: relative L2 error of every position's logits <= 1e-2 and the same top-1 token, as the
core issue states. Tiny random models cover every weight type and both architectures; SmolLM2
covers a real checkpoint with its activation outliers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import reference
from ffnskip_native import ModelFormatError, _core

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import WEIGHT_TYPES as TYPES  # noqa: E402
from make_test_model import make_model  # noqa: E402

REL_TOL = 1e-2
K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}


def rel_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def tiny(tmp_path_factory, arch: str, wtype: str, **kw) -> Path:
    # K-quant rows are 256-element blocks, so those models need 256-wide matrices.
    shape = dict(n_embd=256, n_ff=512, n_head=4, n_head_kv=2) if wtype in K_TYPES else {}
    shape.update(kw)
    path = tmp_path_factory.mktemp("m") / f"{arch}-{wtype}.gguf"
    return make_model(path, arch=arch, wtype=wtype, n_layer=2, seed=7, **shape)


def sample_tokens(n: int, n_vocab: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, n)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("wtype", TYPES)
def test_tiny_model_matches_reference(tmp_path_factory, arch, wtype):
    path = tiny(tmp_path_factory, arch, wtype)
    ref = reference.load(path)
    tokens = sample_tokens(24, ref.hp.n_vocab)
    expected = ref.forward(tokens)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    assert got.shape == expected.shape
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"{arch}/{wtype}: max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_decode_reproduces_batched_prompt(tmp_path_factory, arch):
    path = tiny(tmp_path_factory, arch, "Q4_K", tied=True)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    tokens = sample_tokens(40, eng.n_vocab, seed=3)
    batched = eng.logits(tokens, all_positions=True)
    eng.reset()
    stepwise = np.stack([eng.eval([t]) for t in tokens])
    # Batched and single-token matmuls may take different kernels; both stay at the reference.
    assert rel_err(stepwise, batched).max() <= 2e-3
    assert np.array_equal(stepwise.argmax(1), batched.argmax(1))
    assert eng.n_past == len(tokens)


def test_chunked_prompt_equals_one_pass(tmp_path_factory):
    # Prompts longer than the backend's chunk (256 tokens) are processed in pieces. Every piece
    # here has 32 tokens or more (576 = 256 + 256 + 64; 320 = 256 + 64; 256), so all take the
    # same prompt kernels: where the CPU has AMX, shorter pieces run the integer kernels, which
    # round differently (kernels.h gemm_amx).
    path = tiny(tmp_path_factory, "llama", "Q8_0", n_ctx=1024)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=600, n_threads=2)
    tokens = sample_tokens(576, eng.n_vocab, seed=5)
    full = eng.logits(tokens, all_positions=True)
    eng.reset()
    first = eng.eval(tokens[:320], all_logits=True)
    rest = eng.eval(tokens[320:], all_logits=True)
    assert rel_err(np.concatenate([first, rest]), full).max() <= 1e-5


def test_context_overflow_is_typed(tmp_path_factory):
    from ffnskip_native import ContextOverflowError

    path = tiny(tmp_path_factory, "llama", "Q8_0")
    eng = _core.Engine(str(path), backend="cpu", n_ctx=16, n_threads=1)
    eng.eval(sample_tokens(10, eng.n_vocab))
    with pytest.raises(ContextOverflowError, match="n_ctx 16"):
        eng.eval(sample_tokens(7, eng.n_vocab))
    assert eng.n_past == 10  # nothing was appended
    with pytest.raises(ValueError, match="out of range"):
        eng.eval([eng.n_vocab])


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_path):
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=256)
    text = (
        "In the beginning God created the heaven and the earth. And the earth was without "
        "form, and void; and darkness was upon the face of the deep. And the Spirit of God moved "
        "upon the face of the waters.\n\ndef fib(n):\n    if n < 2:\n        return n\n"
        "    return fib(n - 1) + fib(n - 2)\n"
    )
    tokens = eng.tokenize(text, False, False)[:64]
    assert len(tokens) == 64
    reference.limit_blas_threads(2)
    expected = reference.load(smollm2_path).forward(tokens)
    return eng, tokens, expected


def test_smollm2_matches_reference(smollm2_reference):
    eng, tokens, expected = smollm2_reference
    got = eng.logits(tokens, all_positions=True)
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"max rel err {err.max():.3g} at position {err.argmax()}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_smollm2_decode_matches_reference(smollm2_reference):
    eng, tokens, expected = smollm2_reference
    eng.reset()
    got = np.stack([eng.eval([t]) for t in tokens[:24]])
    err = rel_err(got, expected[:24])
    assert err.max() <= REL_TOL
    assert np.array_equal(got.argmax(1), expected[:24].argmax(1))


@pytest.mark.big
def test_qwen05_matches_reference(qwen05_path):
    eng = _core.Engine(str(qwen05_path), backend="cpu", n_ctx=128)
    tokens = eng.tokenize(
        "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n", False, False
    )
    expected = reference.load(qwen05_path).forward(tokens)
    got = eng.logits(tokens, all_positions=True)
    err = rel_err(got, expected)
    print(f"qwen2.5-0.5b: {len(tokens)} tokens, max rel err {err.max():.4g}, mean {err.mean():.4g}")
    assert err.max() <= REL_TOL
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.big
def test_qwen05_one_token_steps_match_reference(qwen05_path):
    # One token per eval runs the one-token decode tiles (Q4_K, Q5_0, Q6_K, Q8_0 in this file),
    # which the prompt above does not reach.
    eng = _core.Engine(str(qwen05_path), backend="cpu", n_ctx=128)
    tokens = eng.tokenize("def add(a, b):\n    return a + b\n", False, False)
    expected = reference.load(qwen05_path).forward(tokens)
    got = np.stack([eng.eval([t]) for t in tokens])
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL
    assert np.array_equal(got.argmax(1), expected.argmax(1))


# ---- model validation ------------------------------------------------------------------------


def rewrite(src: Path, dst: Path, *, arch=None, drop=None, reshape=None, drop_key=None) -> Path:
    """Copy a GGUF file with one thing changed (architecture, a tensor, a metadata key)."""
    r = gguf.GGUFReader(src)
    old_arch = str(r.fields["general.architecture"].contents())
    new_arch = arch or old_arch
    w = gguf.GGUFWriter(dst, new_arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key == drop_key:
            continue
        key2 = key.replace(old_arch + ".", new_arch + ".", 1) if key.startswith(old_arch) else key
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key2, value)
        else:
            w.add_key_value(key2, value, vtype)
    for t in r.tensors:
        if t.name == drop:
            continue
        data = np.array(t.data)
        shape = list(reversed([int(x) for x in t.shape]))
        if reshape and t.name == reshape[0]:
            shape = reshape[1]
            data = np.zeros(int(np.prod(shape)), dtype=np.float32).reshape(shape)
            w.add_tensor(t.name, data)
            continue
        w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(arch="gpt5"), r"unsupported architecture 'gpt5'"),
        (dict(drop="blk.1.ffn_up.weight"), r"missing tensor 'blk\.1\.ffn_up\.weight'"),
        (dict(drop_key="llama.block_count"), r"llama\.block_count"),
        (dict(reshape=("blk.0.attn_q.weight", [64, 32])), r"attn_q\.weight' has shape"),
        (dict(drop="output_norm.weight"), r"missing tensor 'output_norm\.weight'"),
    ],
)
def test_bad_models_are_rejected_by_name(tmp_path, change, message):
    src = make_model(tmp_path / "ok.gguf", wtype="F32", n_layer=2)
    bad = rewrite(src, tmp_path / "bad.gguf", **change)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_qwen2_requires_biases(tmp_path):
    src = make_model(tmp_path / "q.gguf", arch="qwen2", wtype="F32", n_layer=1)
    bad = rewrite(src, tmp_path / "bad.gguf", drop="blk.0.attn_k.bias")
    with pytest.raises(ModelFormatError, match=r"attn_k\.bias"):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_hparams_and_tied_output(tmp_path):
    path = make_model(tmp_path / "t.gguf", arch="qwen2", wtype="Q8_0", tied=True, n_layer=3)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=32)
    hp = eng.hparams
    assert (hp["arch"], hp["n_layer"], hp["rope"], hp["tied_output"]) == ("qwen2", 3, "neox", True)
    assert eng.n_vocab == 288  # make_model's default vocabulary
    assert eng.bytes_per_token() > eng.ffn_bytes() > 0


def test_cuda_backend_unavailable_is_typed(tmp_path):
    from ffnskip_native import BackendUnavailableError

    if _core.cuda_available():
        pytest.skip("a CUDA device is present")
    path = make_model(tmp_path / "t.gguf", wtype="F32", n_layer=1)
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        _core.Engine(str(path), backend="cuda", n_ctx=16)


def test_oversubscribed_thread_pool_completes_and_matches_one_thread(tmp_path_factory):
    # More threads than cores: workers get descheduled mid-run, which once let a worker holding a
    # stale ticket claim a task of the next run (a hang). Hundreds of tiny pool runs per token.
    path = tiny(tmp_path_factory, "qwen2", "Q4_0")
    tokens = sample_tokens(48, 288, seed=13)
    one = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=1)
    many = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=4 * _core.physical_cores())
    for _ in range(3):
        one.reset()
        many.reset()
        a = np.stack([one.eval([t]) for t in tokens])
        b = np.stack([many.eval([t]) for t in tokens])
        assert np.array_equal(a, b)


def test_smollm2_long_prompt_same_on_amx_and_integer_kernels(smollm2_path):
    # 700 tokens: a prompt step of 512, then one of 188 whose column chunks (1344 of 1536 on the
    # down projection) once split a group of grouped Q4_1 blocks and gave NaN logits on AMX.
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=1024, n_threads=2)
    tokens = sample_tokens(700, eng.n_vocab, seed=11)
    was = _core.gemm_amx()
    if not _core._testing.set_gemm_amx(True):
        pytest.skip("CPU (or OS) offers no AMX BF16 tiles")
    try:
        amx = eng.logits(tokens, all_positions=True)
        _core._testing.set_gemm_amx(False)
        integer = eng.logits(tokens, all_positions=True)
    finally:
        _core._testing.set_gemm_amx(was)
    assert np.isfinite(amx).all()
    assert rel_err(amx, integer).max() <= 1e-2
