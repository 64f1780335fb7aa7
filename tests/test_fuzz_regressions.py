"""Hostile-input regressions: one named test per known GGUF vulnerability class, the reproducers
of bugs the fuzzers (fuzz/) found, and a load/close leak check on a real model.

Classes already in the corrupt-file catalogue of tests/test_gguf.py are replayed from it under
their class name (not copied); tokenizer classes extend tests/test_tokenizer.py.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import gguf_bytes as gb
import numpy as np
import pytest
from ffnskip_native import _core
from ffnskip_native.errors import Error, ModelFormatError
from test_gguf import CORRUPT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_test_model import make_model  # noqa: E402

T = gb.Tensor


def _rejected(data: bytes, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        _core.gguf_parse_bytes(data)


# ---- GGUF reader: every known class, by name -------------------------------------------------

# class -> the test_gguf.CORRUPT entries that already pin it down.
CLASSES_IN_CATALOGUE = {
    "string_length_past_end": [
        "key_length_beyond_end",
        "string_value_beyond_end",
        "string_array_element_beyond_end",
        "tensor_name_beyond_end",
    ],
    "array_count_past_end": [
        "array_length_beyond_end",
        "array_length_huge",
        "string_array_length_beyond_end",
    ],
    "dims_product_overflow": ["element_count_overflow", "element_count_overflow_3d"],
    "offset_plus_size_past_end": [
        "data_beyond_eof",
        "offset_far_beyond_eof",
        "offset_plus_size_overflow",
        "data_section_beyond_eof",
    ],
    "n_dims_above_4": ["too_many_dims", "dims_count_lies"],
    "alignment_zero_or_not_power_of_two": ["alignment_zero", "alignment_not_power_of_two"],
    "duplicate_tensor_names": ["duplicate_tensor_name"],
}


@pytest.mark.parametrize(
    ("vuln_class", "case"),
    [(cls, case) for cls, cases in CLASSES_IN_CATALOGUE.items() for case in cases],
)
def test_vulnerability_class_from_catalogue(vuln_class, case):
    data, pattern = CORRUPT[case]
    _rejected(data, pattern)


def test_array_count_times_element_size_wraps():
    # 2**61 + 1 eight-byte elements: count * 8 wraps to 8 in u64, which a multiply-then-compare
    # bound check would accept before allocating 2**64 bytes.
    n = 2**61 + 1
    for vtype in (gb.VT.UINT64, gb.VT.INT64, gb.VT.FLOAT64):
        data = gb.build(kvs=[gb.kv_array("k", vtype, [1], count=n)]).data
        _rejected(data, rf"key 'k': array length {n}")
    # Strings: each costs at least its 8-byte length field.
    data = gb.build(kvs=[gb.kv_array("k", gb.VT.STRING, ["a"], count=2**61 + 1)]).data
    _rejected(data, r"array length \d+ .*at least 8 bytes")


def test_tensor_byte_size_overflow():
    # The element count fits in int64 but elements x 4 bytes does not fit in u64.
    data = gb.build(tensors=[T("w", [2**31, 2**31], gb.F32)], data_size=64).data
    _rejected(data, r"tensor 'w': byte size overflows")


def test_dims_product_overflow_at_fourth_dim():
    data = gb.build(tensors=[T("w", [2**16, 2**16, 2**16, 2**16])], data_size=64).data
    _rejected(data, r"element count overflows int64 at dimension 3")


def test_alignment_huge_power_of_two():
    # 2**31 is a valid u32 power of two: the data section then starts far beyond the file.
    kvs = [gb.kv("general.alignment", gb.VT.UINT32, 2**31)]
    data = gb.build(kvs=kvs, tensors=[T("w", [4], offset=0)]).data
    _rejected(data, r"data section starts at offset 2147483648, beyond the end")


# ---- tokenizer metadata --------------------------------------------------------------------


def _vocab_file(tmp_path: Path, **over) -> Path:
    """A 4-token gpt2 vocabulary written with the byte builder, so any field can lie."""
    tokens = over.pop("tokens", ["a", "b", "ab", "<s>"])
    kvs = [
        gb.kv_str("tokenizer.ggml.model", "gpt2"),
        gb.kv_array("tokenizer.ggml.tokens", gb.VT.STRING, tokens),
        gb.kv_array("tokenizer.ggml.token_type", gb.VT.INT32, over.pop("types", [1, 1, 1, 3])),
        gb.kv_array("tokenizer.ggml.merges", gb.VT.STRING, over.pop("merges", ["a b"])),
    ]
    if "scores" in over:
        kvs.append(gb.kv_array("tokenizer.ggml.scores", gb.VT.FLOAT32, over.pop("scores")))
    for key, value in over.items():
        kvs.append(gb.kv(f"tokenizer.ggml.{key}", gb.VT.UINT32, value))
    path = tmp_path / "vocab.gguf"
    path.write_bytes(gb.build(kvs=kvs).data)
    return path


def test_valid_vocab_file_loads(tmp_path):
    tok = _core.Tokenizer(str(_vocab_file(tmp_path, bos_token_id=3)))
    assert tok.encode("abab", add_special=False) == [2, 2]


@pytest.mark.parametrize(
    "key", ["bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"]
)
@pytest.mark.parametrize("value", [4, 2**31, 2**32 - 1])
def test_special_token_id_not_below_n_vocab(tmp_path, key, value):
    # test_tokenizer.py covers bos = n_vocab; every id key and far-out values fail the same way.
    with pytest.raises(ModelFormatError, match=key):
        _core.Tokenizer(str(_vocab_file(tmp_path, **{key: value})))


@pytest.mark.parametrize(
    "merges",
    [["a c"], ["c a"], ["b a"], ["ab"], [" a"], ["a "], ["a  b"]],
    ids=[
        "right_missing",
        "left_missing",
        "result_missing",
        "no_space",
        "empty_left",
        "empty_right",
        "double_space",
    ],
)
def test_merges_naming_missing_tokens(tmp_path, merges):
    with pytest.raises(ModelFormatError, match="merges"):
        _core.Tokenizer(str(_vocab_file(tmp_path, merges=merges)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("types", [1, 1, 1]),
        ("types", [1, 1, 1, 3, 1]),
        ("scores", [0.0] * 3),
        ("scores", [0.0] * 5),
    ],
)
def test_per_token_arrays_of_wrong_length(tmp_path, field, value):
    with pytest.raises(ModelFormatError, match="token_type" if field == "types" else "scores"):
        _core.Tokenizer(str(_vocab_file(tmp_path, **{field: value})))


# ---- fuzzer findings -------------------------------------------------------------------------


def _patch_tensor(data: bytes, name: str, values: np.ndarray) -> bytes:
    info = _core.gguf_parse_bytes(data)
    t = next(t for t in info["tensors"] if t["name"] == name)
    start = info["data_offset"] + t["offset"]
    raw = values.tobytes()
    return data[:start] + raw + data[start + len(raw) :]


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_weights_forward(tmp_path, bad):
    """fuzz_tiny_model, UBSan float-cast-overflow (open, owner: CPU kernels).

    A model whose weights hold Inf/NaN makes the activations non-finite; the scalar activation
    quantizer (cpu/kernels_scalar.cpp, prepare_row_scalar) then casts nearbyint(NaN) to int16,
    which is undefined behaviour (x86 happens to produce garbage, not a crash). Fix there: treat a
    block with a non-finite amax as NaN (d = NaN, q = 0) so the logits come out NaN without UB.
    The loader does not scan GBs of weights for non-finite values (norms and biases it does).
    Here: the load and the forward pass must end in logits or a typed error, never a crash.
    """
    src = make_model(
        tmp_path / "m.gguf",
        wtype="F32",
        n_layer=1,
        n_embd=32,
        n_ff=32,
        n_head=2,
        n_head_kv=1,
        n_vocab=264,
    )
    data = _patch_tensor(src.read_bytes(), "token_embd.weight", np.full(32, bad, np.float32))
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    eng = _core.Engine(str(path), "cpu", 16, 1)
    try:
        out = eng.eval([0, 1], True)
        assert out.shape == (2, 264)
    finally:
        eng.close()


# ---- no leak across load/close ---------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/status")


CYCLES = 100
RSS_GROWTH_BOUND_KIB = 16 * 1024


def test_load_close_cycles_do_not_leak(smollm2_path):
    """100 Engine load/close cycles of SmolLM2 (CPU, n_ctx=64): RSS after the last cycle stays
    within 16 MiB of RSS after the first (allocator caching and the interpreter's own growth
    fit well inside that; a leaked model, KV cache or mapping would not: the file is 94 MiB)."""

    def cycle() -> None:
        eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=64, n_threads=1)
        eng.eval([1, 2], False)
        eng.close()
        del eng
        gc.collect()

    cycle()
    first = _rss_kib()
    for _ in range(CYCLES - 1):
        cycle()
    growth = _rss_kib() - first
    print(f"RSS after cycle 1: {first} KiB, growth over {CYCLES - 1} more cycles: {growth} KiB")
    assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew by {growth} KiB over {CYCLES} cycles"


def test_hostile_bytes_give_typed_errors_only():
    # Smoke replay of the fuzz seeds' shape: truncations of a tiny model at every 97th byte.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        data = make_model(
            Path(d) / "m.gguf",
            wtype="Q8_0",
            n_layer=1,
            n_embd=32,
            n_ff=32,
            n_head=2,
            n_head_kv=1,
            n_vocab=264,
        ).read_bytes()
    for cut in range(0, len(data), 97):
        try:
            _core.gguf_parse_bytes(data[:cut])
        except Error:
            pass


def test_deeply_nested_template_is_a_template_error():
    """fuzz/py/fuzz_chat_template.py: ~110 nested '[' in a hostile chat template make Jinja's
    recursive-descent parser raise RecursionError inside ChatTemplate(); it must become a
    TemplateError (fixed in ChatTemplate.__init__)."""
    from ffnskip_native.chat import ChatTemplate
    from ffnskip_native.errors import TemplateError

    source = "{% for m in " + "[" * 110 + "messages %}{{ m.role }}{% endfor %}"
    with pytest.raises(TemplateError):
        ChatTemplate(source)


BAD_UTF8 = b"x\xde(y"


@pytest.mark.parametrize(
    ("kvs", "match"),
    [
        ([gb.raw_kv("tokenizer.ggml.model", gb.VT.STRING, gb.gstr(BAD_UTF8))], "ggml.model"),
        (
            [
                gb.kv_str("tokenizer.ggml.model", "gpt2"),
                gb.kv_array("tokenizer.ggml.tokens", gb.VT.STRING, ["a"]),
                gb.raw_kv(
                    "tokenizer.ggml.merges",
                    gb.VT.ARRAY,
                    gb.u32(gb.VT.STRING) + gb.u64(1) + gb.gstr(BAD_UTF8 + b" b"),
                ),
            ],
            "merges",
        ),
        (
            [
                gb.kv_str("tokenizer.ggml.model", "llama"),
                gb.kv_array("tokenizer.ggml.tokens", gb.VT.STRING, ["a"]),
                gb.raw_kv("tokenizer.ffnskip.spm_algorithm", gb.VT.STRING, gb.gstr(BAD_UTF8)),
            ],
            "spm_algorithm",
        ),
    ],
    ids=["model", "merges", "spm_algorithm"],
)
def test_invalid_utf8_in_message_is_still_a_format_error(tmp_path, kvs, match):
    """fuzz/py/fuzz_python_api.py: FormatError messages embedded raw file strings, so invalid
    UTF-8 turned the typed error into a UnicodeDecodeError in Python. Fixed: gguf::quote()."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(gb.build(kvs=kvs).data)
    with pytest.raises(ModelFormatError, match=match) as ei:
        _core.Tokenizer(str(path))
    assert r"\xde" in str(ei.value)


def test_invalid_utf8_architecture_and_pre_warning(tmp_path):
    data = gb.build(kvs=[gb.raw_kv("general.architecture", gb.VT.STRING, gb.gstr(BAD_UTF8))])
    path = tmp_path / "arch.gguf"
    path.write_bytes(data.data)
    with pytest.raises(ModelFormatError, match=r"unsupported architecture 'x\\xde\(y'"):
        _core.Engine(str(path), "cpu", 16, 1)
    kvs = [
        gb.kv_str("tokenizer.ggml.model", "gpt2"),
        gb.kv_array("tokenizer.ggml.tokens", gb.VT.STRING, ["a", "b", "ab"]),
        gb.kv_array("tokenizer.ggml.merges", gb.VT.STRING, ["a b"]),
        gb.raw_kv("tokenizer.ggml.pre", gb.VT.STRING, gb.gstr(BAD_UTF8)),
    ]
    path.write_bytes(gb.build(kvs=kvs).data)
    tok = _core.Tokenizer(str(path))
    assert r"\xde" in tok.warnings[0]
