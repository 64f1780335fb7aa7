"""Model families beyond llama/qwen2 on the CPU backend, against the numpy reference.

qwen3 (per-head q/k RMSNorm before NEOX rope, no q/k/v bias) and llama rope scaling (linear by
`{arch}.rope.scaling.type`, llama3-style by the `rope_freqs.weight` divisors llama.cpp's converter
writes for Llama 3.1/3.2). Tolerances are those of test_forward.py: rel. L2 <= 1e-2 and the same
top-1 at every position. Each family also runs the block-skip path under a forced policy.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from ffnskip_native import BackendUnavailableError, ModelFormatError, SkipConfig, _core
from test_forward import rel_err, rewrite, sample_tokens
from test_skip import check_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402

REL_TOL = 1e-2
HEAD_DIM = 16  # make_model's default shape: n_embd 64 over 4 heads


def llama3_factors(
    head_dim: int, base: float, factor: float, low: float, high: float, original_ctx: int
) -> list[float]:
    """Per-pair angle divisors of Llama 3.1 rope scaling (Meta's published rule).

    Wavelengths shorter than original_ctx/high keep their frequency, longer than original_ctx/low
    are divided by `factor`, and those between are interpolated in 1/divisor.
    """
    out = []
    for i in range(head_dim // 2):
        wavelen = 2 * math.pi * base ** (2 * i / head_dim)
        if wavelen < original_ctx / high:
            out.append(1.0)
        elif wavelen > original_ctx / low:
            out.append(factor)
        else:
            smooth = (original_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


# A small original context puts the interpolated band inside head_dim 16's wavelengths
# (2*pi .. 2*pi*10000^(7/8)), so all three regimes of the rule occur.
LLAMA3 = llama3_factors(HEAD_DIM, 10000.0, factor=8.0, low=1.0, high=4.0, original_ctx=256)
LINEAR = {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}


def family_model(path: Path, family: str, **kw) -> Path:
    """A random model of one family: qwen3, llama-linear (rope x1/4), llama3 (rope_freqs)."""
    if family == "qwen3":
        return make_model(path, arch="qwen3", **kw)
    if family == "llama-linear":
        return make_model(path, arch="llama", extra_metadata=LINEAR, **kw)
    if family == "llama3":
        return make_model(path, arch="llama", rope_freqs=LLAMA3, **kw)
    raise ValueError(family)


FAMILIES = ["qwen3", "llama-linear", "llama3"]


def test_llama3_factors_cover_all_three_regimes():
    assert LLAMA3[0] == 1.0 and LLAMA3[-1] == 8.0
    assert any(1.0 < f < 8.0 for f in LLAMA3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("wtype", ["F32", "Q8_0", "Q4_K"])
def test_family_matches_reference(tmp_path, family, wtype):
    shape = dict(n_embd=256, n_ff=512, n_head=16, n_head_kv=4) if wtype == "Q4_K" else {}
    path = family_model(tmp_path / "m.gguf", family, wtype=wtype, n_layer=2, seed=5, **shape)
    ref = reference.load(path)
    tokens = sample_tokens(48, ref.hp.n_vocab, seed=1)
    expected = ref.forward(tokens)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"{family}/{wtype}: max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("family", ["llama-linear", "llama3"])
def test_rope_scaling_changes_the_logits(tmp_path, family):
    # The reference agreeing means nothing if neither applied the scaling: the scaled model must
    # differ from the same weights without it, beyond the forward tolerance.
    plain = make_model(tmp_path / "plain.gguf", arch="llama", wtype="F32", seed=5)
    scaled = family_model(tmp_path / "scaled.gguf", family, wtype="F32", seed=5)
    tokens = sample_tokens(48, 288, seed=1)
    a = _core.Engine(str(plain), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    b = _core.Engine(str(scaled), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    assert np.array_equal(a[0], b[0])  # position 0 is never rotated
    assert rel_err(b[1:], a[1:]).max() > 10 * REL_TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_family_decode_reproduces_batched_prompt(tmp_path, family):
    path = family_model(tmp_path / "m.gguf", family, wtype="Q8_0", tied=True, seed=2)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    tokens = sample_tokens(40, eng.n_vocab, seed=3)
    batched = eng.logits(tokens, all_positions=True)
    eng.reset()
    stepwise = np.stack([eng.eval([t]) for t in tokens])
    assert rel_err(stepwise, batched).max() <= 2e-3
    assert np.array_equal(stepwise.argmax(1), batched.argmax(1))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_forced_block_skip_matches_reference(tmp_path, family):
    # threshold -1 fires on every evaluated hot layer: with span 1 the hot layers alternate.
    path = family_model(tmp_path / "m.gguf", family, wtype="F16", n_layer=6, seed=3)
    skip = SkipConfig(threshold=-1.0, span=1, warmup=0, cold_start=1, cold_end=1)
    stats, _ = check_policy(path, skip)
    assert stats["skipped"] == [0, 0, 32, 0, 32, 0]


def test_qwen3_hparams(tmp_path):
    path = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=1)
    hp = _core.Engine(str(path), backend="cpu", n_ctx=16).hparams
    assert (hp["arch"], hp["rope"]) == ("qwen3", "neox")


@pytest.mark.parametrize("name", ["blk.0.attn_q_norm.weight", "blk.1.attn_k_norm.weight"])
def test_qwen3_requires_qk_norms(tmp_path, name):
    src = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=2)
    bad = rewrite(src, tmp_path / "bad.gguf", drop=name)
    with pytest.raises(ModelFormatError, match=name.replace(".", r"\.")):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_qwen3_qk_norm_of_wrong_size_is_rejected(tmp_path):
    src = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=1)
    bad = rewrite(src, tmp_path / "bad.gguf", reshape=("blk.0.attn_k_norm.weight", [8]))
    with pytest.raises(ModelFormatError, match=r"attn_k_norm\.weight' has shape \[8\]"):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}, r"'yarn'"),
        ({"llama.rope.scaling.type": "longrope"}, r"'longrope'"),
        ({"llama.rope.scaling.type": "linear"}, r"llama\.rope\.scaling\.factor"),
        ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 0.5}, r"factor"),
    ],
)
def test_unsupported_rope_scaling_is_an_error(tmp_path, meta, message):
    path = make_model(tmp_path / "m.gguf", wtype="F32", n_layer=1, extra_metadata=meta)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(path), backend="cpu", n_ctx=16)


@pytest.mark.parametrize(
    "freqs, message", [([1.0] * 7, r"rope_freqs\.weight' has shape"), ([0.0] * 8, r"<= 0")]
)
def test_bad_rope_freqs_are_rejected(tmp_path, freqs, message):
    path = make_model(tmp_path / "m.gguf", wtype="F32", n_layer=1)
    bad = tmp_path / "bad.gguf"
    _with_rope_freqs(path, bad, freqs)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def _with_rope_freqs(src: Path, dst: Path, freqs: list[float]) -> None:
    """A copy of src with a rope_freqs.weight of any length (make_model checks the length)."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), field.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data))  # all F32 (make_model wtype="F32")
    w.add_tensor("rope_freqs.weight", np.asarray(freqs, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_cuda_refuses_what_it_cannot_compute(tmp_path, family):
    if not _core.cuda_available():
        pytest.skip("no CUDA device")
    path = family_model(tmp_path / "m.gguf", family, wtype="F32", n_layer=1)
    word = "q/k norm" if family == "qwen3" else "rope_freqs"
    with pytest.raises(BackendUnavailableError, match=word):
        _core.Engine(str(path), backend="cuda", n_ctx=16)
