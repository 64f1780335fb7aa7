"""GGUF reader: valid files read back exactly as the `gguf` package writes/reads them, and every
kind of corrupt file is refused with a ModelFormatError that names the problem."""

from __future__ import annotations

import os
import re
from pathlib import Path

import gguf
import gguf_bytes as gb
import numpy as np
import pytest
from ffnskip_native import _core
from ffnskip_native.errors import ModelFileError, ModelFormatError

# ---- valid files -----------------------------------------------------------------------------

SCALARS = [
    ("t.u8", 200, gguf.GGUFValueType.UINT8),
    ("t.i8", -100, gguf.GGUFValueType.INT8),
    ("t.u16", 60000, gguf.GGUFValueType.UINT16),
    ("t.i16", -30000, gguf.GGUFValueType.INT16),
    ("t.u32", 4_000_000_000, gguf.GGUFValueType.UINT32),
    ("t.i32", -2_000_000_000, gguf.GGUFValueType.INT32),
    ("t.f32", 0.1, gguf.GGUFValueType.FLOAT32),
    ("t.bool_true", True, gguf.GGUFValueType.BOOL),
    ("t.bool_false", False, gguf.GGUFValueType.BOOL),
    ("t.str", "héllo ✓ wörld", gguf.GGUFValueType.STRING),
    ("t.empty_str", "", gguf.GGUFValueType.STRING),
    ("t.u64", 2**64 - 5, gguf.GGUFValueType.UINT64),
    ("t.i64", -(2**62), gguf.GGUFValueType.INT64),
    ("t.f64", 1e300, gguf.GGUFValueType.FLOAT64),
]
ARRAYS = [
    ("a.str", ["<s>", "", "Ġthe", "日本"], gguf.GGUFValueType.STRING),
    ("a.i32", [1, -2, 3], gguf.GGUFValueType.INT32),
    ("a.u8", [0, 255], gguf.GGUFValueType.UINT8),
    ("a.u64", [2**64 - 1, 0], gguf.GGUFValueType.UINT64),
    ("a.f32", [0.5, -1.25, 3e-5], gguf.GGUFValueType.FLOAT32),
    ("a.f64", [1e-300], gguf.GGUFValueType.FLOAT64),
    ("a.bool", [True, False, True], gguf.GGUFValueType.BOOL),
]


def write_with_gguf_package(path: Path, alignment: int | None = None) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value, vtype in SCALARS:
        w.add_key_value(key, value, vtype)
    for key, values, sub in ARRAYS:
        w.add_key_value(key, values, gguf.GGUFValueType.ARRAY, sub_type=sub)
    rng = np.random.default_rng(0)
    w.add_tensor("f32.weight", rng.standard_normal((3, 8), dtype=np.float32))
    w.add_tensor("f16.weight", rng.standard_normal((5, 2, 4)).astype(np.float16))
    q8 = gguf.quants.quantize(
        rng.standard_normal((4, 64), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0
    )
    w.add_tensor("q8.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("vec", rng.standard_normal(7, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def field_value(f: gguf.ReaderField):
    v = f.contents()
    if f.types[0] == gguf.GGUFValueType.BOOL:
        return bool(v)
    if f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.BOOL:
        return [bool(x) for x in v]
    return v


def assert_matches_reader(path: Path, got: dict) -> None:
    """Compare our parse with gguf.GGUFReader's view of the same file."""
    r = gguf.GGUFReader(str(path))
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert list(got["metadata"]) == list(fields)
    for key, f in fields.items():
        assert got["metadata"][key] == field_value(f), key
    assert len(got["tensors"]) == len(r.tensors)
    for t, rt in zip(got["tensors"], r.tensors):
        assert t["name"] == rt.name
        assert t["type"] == int(rt.tensor_type)
        assert t["type_name"] == rt.tensor_type.name
        assert t["shape"] == [int(x) for x in rt.shape]
        assert got["data_offset"] + t["offset"] == rt.data_offset
        assert t["nbytes"] == rt.n_bytes
    assert got["alignment"] == r.alignment


@pytest.mark.parametrize("alignment", [None, 64])
def test_reads_gguf_package_file(tmp_path, alignment):
    path = tmp_path / "all.gguf"
    write_with_gguf_package(path, alignment)
    got = _core.gguf_read(str(path))
    assert got["version"] == 3
    assert got["alignment"] == (alignment or 32)
    assert got["data_offset"] % got["alignment"] == 0
    md = got["metadata"]
    assert md["general.architecture"] == "llama"
    for key, value, vtype in SCALARS:
        if vtype == gguf.GGUFValueType.FLOAT32:
            assert md[key] == float(np.float32(value))
        else:
            assert md[key] == value and type(md[key]) is type(value), key
    for key, values, vtype in ARRAYS:
        if vtype == gguf.GGUFValueType.FLOAT32:
            values = [float(np.float32(v)) for v in values]
        assert md[key] == values, key
    shapes = {t["name"]: (t["type_name"], t["shape"]) for t in got["tensors"]}
    assert shapes == {
        "f32.weight": ("F32", [8, 3]),
        "f16.weight": ("F16", [4, 2, 5]),
        "q8.weight": ("Q8_0", [64, 4]),
        "vec": ("F32", [7]),
    }
    assert_matches_reader(path, got)
    assert _core.gguf_parse_bytes(path.read_bytes()) == got


def test_smollm2_matches_gguf_reader(smollm2_path):
    got = _core.gguf_read(str(smollm2_path))
    assert got["version"] == 3
    assert len(got["tensors"]) > 100
    assert_matches_reader(smollm2_path, got)


def small_valid(version: int = 3) -> gb.Built:
    return gb.build(
        kvs=[
            gb.kv_str("general.architecture", "llama"),
            gb.kv("general.alignment", gb.VT.UINT32, 32),
            gb.kv("x.count", gb.VT.UINT64, 7),
            gb.kv_array("tok", gb.VT.STRING, ["a", "bc", ""]),
            gb.kv_array("scores", gb.VT.FLOAT32, [0.5, -2.0]),
            gb.kv("flag", gb.VT.BOOL, 1),
            gb.kv_array("none", gb.VT.INT32, []),
        ],
        tensors=[gb.Tensor("w", [32, 2], gb.Q8_0), gb.Tensor("n", [5], gb.F32)],
        version=version,
    )


@pytest.mark.parametrize("version", [2, 3])
def test_builder_file_versions(version):
    b = small_valid(version)
    got = _core.gguf_parse_bytes(b.data)
    assert got["version"] == version
    assert got["data_offset"] == b.data_offset
    assert got["metadata"] == {
        "general.architecture": "llama",
        "general.alignment": 32,
        "x.count": 7,
        "tok": ["a", "bc", ""],
        "scores": [0.5, -2.0],
        "flag": True,
        "none": [],
    }
    assert [(t["name"], t["shape"], t["offset"], t["nbytes"]) for t in got["tensors"]] == [
        ("w", [32, 2], b.offsets[0], 68),
        ("n", [5], b.offsets[1], 20),
    ]


def test_vocab_only_file_without_padding():
    b = gb.build(kvs=[gb.kv_str("k", "v")], pad_data_section=False)
    got = _core.gguf_parse_bytes(b.data)
    assert got["metadata"] == {"k": "v"} and got["tensors"] == []


# ---- corrupt files ---------------------------------------------------------------------------

T = gb.Tensor
KV_ARCH = gb.kv_str("general.architecture", "llama")


def one_tensor(t: gb.Tensor, **kw) -> bytes:
    return gb.build(kvs=[KV_ARCH], tensors=[t], **kw).data


CORRUPT = {
    "truncated_magic": (b"GG", r"truncated: magic"),
    "truncated_header": (gb.header(0, 0)[:15], r"truncated: tensor count"),
    "bad_magic": (b"GGML" + gb.build().data[4:], r"bad magic"),
    "version_0": (gb.build(version=0).data, r"unsupported GGUF version 0\b"),
    "version_1": (gb.build(version=1).data, r"unsupported GGUF version 1\b"),
    "version_4": (gb.build(version=4).data, r"unsupported GGUF version 4\b"),
    "big_endian": (gb.build(version=3 << 24).data, r"big-endian"),
    "kv_count_too_large": (
        gb.build(kvs=[KV_ARCH], n_kv=2**40).data,
        r"KV count 1099511627776 is larger than the file",
    ),
    "tensor_count_too_large": (
        gb.build(n_tensors=2**62).data,
        r"tensor count \d+ is larger than the file",
    ),
    "kv_count_lies": (gb.build(kvs=[KV_ARCH, KV_ARCH[:20]], n_kv=2).data, r"KV 1 .*exceeds"),
    "key_length_beyond_end": (
        gb.build(kvs=[gb.raw_kv("k", 8, gb.gstr("v"), key_length=10**6)]).data,
        r"key of metadata KV 0 .*length 1000000 exceeds",
    ),
    "string_value_beyond_end": (
        gb.build(kvs=[gb.raw_kv("k", 8, gb.gstr("abc", length=2**63))]).data,
        r"value of key 'k'.*exceeds",
    ),
    "invalid_utf8_key_in_message": (
        gb.build(kvs=[gb.raw_kv(b"a\xff\nb", gb.VT.UINT8, b"\x01")] * 2).data,
        r"duplicate key 'a\\xff\\x0ab'",
    ),
    "truncated_scalar_value": (
        gb.build(kvs=[gb.raw_kv("k", gb.VT.UINT64, b"\x01\x02")]).data,
        r"truncated: value of key 'k'",
    ),
    "empty_key": (
        gb.build(kvs=[gb.kv("", gb.VT.UINT8, 1), KV_ARCH]).data,
        r"metadata KV 0 at offset 24 has an empty key",
    ),
    "duplicate_key": (
        gb.build(kvs=[gb.kv("a", gb.VT.UINT8, 1), gb.kv("a", gb.VT.UINT8, 2)]).data,
        r"duplicate key 'a'",
    ),
    "unknown_value_type": (
        gb.build(kvs=[gb.raw_kv("k", 13, b"\0" * 8)]).data,
        r"key 'k': unknown value type 13",
    ),
    "unknown_array_elem_type": (
        gb.build(kvs=[gb.raw_kv("k", 9, gb.u32(99) + gb.u64(0))]).data,
        r"key 'k': unknown array element value type 99",
    ),
    "nested_array": (
        gb.build(kvs=[gb.raw_kv("k", 9, gb.array_payload(9, []))]).data,
        r"key 'k': nested array",
    ),
    "array_length_beyond_end": (
        gb.build(kvs=[gb.kv_array("k", gb.VT.UINT32, [1, 2], count=1000)]).data,
        r"key 'k': array length 1000 at offset \d+ exceeds the \d+ bytes remaining",
    ),
    "array_length_huge": (
        gb.build(kvs=[gb.kv_array("k", gb.VT.UINT64, [], count=2**64 - 1)]).data,
        r"key 'k': array length 18446744073709551615",
    ),
    "string_array_length_beyond_end": (
        gb.build(kvs=[gb.kv_array("k", gb.VT.STRING, ["a"] * 5, count=100)]).data,
        r"key 'k': array length 100 .*at least 8 bytes",
    ),
    "string_array_element_beyond_end": (
        gb.build(
            kvs=[gb.raw_kv("k", 9, gb.u32(8) + gb.u64(2) + gb.gstr("a") + gb.gstr("b", length=50))]
        ).data,
        r"array of key 'k' element .*length 50 exceeds",
    ),
    "bool_not_0_or_1": (
        gb.build(kvs=[gb.raw_kv("b", gb.VT.BOOL, b"\x02")]).data,
        r"bool byte is 2",
    ),
    "alignment_not_power_of_two": (
        gb.build(kvs=[gb.kv("general.alignment", gb.VT.UINT32, 48)]).data,
        r"general.alignment 48 is not a nonzero power of two",
    ),
    "alignment_zero": (
        gb.build(kvs=[gb.kv("general.alignment", gb.VT.UINT32, 0)]).data,
        r"general.alignment 0 is not a nonzero power of two",
    ),
    "alignment_not_u32": (
        gb.build(kvs=[gb.kv("general.alignment", gb.VT.UINT64, 32)]).data,
        r"general.alignment must be u32, got u64",
    ),
    "alignment_string": (
        gb.build(kvs=[gb.kv_str("general.alignment", "32")]).data,
        r"general.alignment must be u32, got string",
    ),
    "duplicate_tensor_name": (
        gb.build(tensors=[T("w", [4]), T("w", [4])]).data,
        r"duplicate tensor name 'w'",
    ),
    "empty_tensor_name": (one_tensor(T("", [4])), r"tensor 0 at offset \d+ has an empty name"),
    "tensor_name_beyond_end": (
        one_tensor(T("w", [4], name_length=10**9)),
        r"name of tensor 0 at offset \d+: length 1000000000 exceeds",
    ),
    "too_many_dims": (
        one_tensor(T("w", [1, 1, 1, 1, 4])),
        r"tensor 'w' has 5 dimensions \(at most 4\)",
    ),
    "dims_count_lies": (
        one_tensor(T("w", [4], n_dims=2**31)),
        r"tensor 'w' has 2147483648 dimensions",
    ),
    "zero_dim": (one_tensor(T("w", [4, 0]), data_size=64), r"tensor 'w': dimension 1 is zero"),
    "negative_dim": (
        one_tensor(T("w", [4, 2**63]), data_size=64),
        r"tensor 'w': dimension 1 is negative",
    ),
    "element_count_overflow": (
        one_tensor(T("w", [2**32, 2**32]), data_size=64),
        r"tensor 'w': element count overflows int64",
    ),
    "element_count_overflow_3d": (
        one_tensor(T("w", [2**21, 2**21, 2**21]), data_size=64),
        r"tensor 'w': element count overflows int64 at dimension 2",
    ),
    "unknown_ggml_type": (
        one_tensor(T("w", [32], 4, data=b"\0" * 32)),
        r"tensor 'w' has unknown ggml type 4",
    ),
    "unknown_ggml_type_large": (
        one_tensor(T("w", [32], 2**31, data=b"\0" * 32)),
        r"tensor 'w' has unknown ggml type 2147483648",
    ),
    "row_not_block_multiple": (
        one_tensor(T("w", [16, 2], gb.Q8_0, data=b"\0" * 34)),
        r"tensor 'w': row length 16 is not a multiple of the block size 32 of Q8_0",
    ),
    "offset_not_aligned": (
        one_tensor(T("w", [4], offset=4)),
        r"tensor 'w': offset 4 is not a multiple of the alignment 32",
    ),
    "offset_not_custom_aligned": (
        gb.build(
            kvs=[gb.kv("general.alignment", gb.VT.UINT32, 64)],
            tensors=[T("w", [4], offset=32)],
            alignment=64,
        ).data,
        r"offset 32 is not a multiple of the alignment 64",
    ),
    "tensors_overlap": (
        gb.build(tensors=[T("a", [16]), T("b", [16], offset=32)]).data,
        r"tensors 'a' \[0, 64\) and 'b' \[32, 96\) overlap",
    ),
    "tensors_same_offset": (
        gb.build(tensors=[T("a", [8]), T("b", [8], offset=0)]).data,
        r"tensors '[ab]' .* overlap",
    ),
    "data_beyond_eof": (
        one_tensor(T("w", [64]), data_size=128),
        r"tensor 'w': data \[0, 256\) lies beyond the end of the file",
    ),
    "offset_far_beyond_eof": (
        one_tensor(T("w", [4], offset=2**40), data_size=16),
        r"tensor 'w': data \[1099511627776, \d+\) lies beyond",
    ),
    "offset_plus_size_overflow": (
        one_tensor(T("w", [64], offset=2**64 - 32), data_size=16),
        r"tensor 'w': offset 18446744073709551584 \+ size 256 overflows",
    ),
    "data_section_beyond_eof": (
        gb.build(tensors=[T("w", [4])], pad_data_section=False, data_size=0).data,
        r"data section starts at offset \d+, beyond the end of the file",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_file_rejected(case):
    data, pattern = CORRUPT[case]
    with pytest.raises(ModelFormatError, match=pattern) as ei:
        _core.gguf_parse_bytes(data)
    assert isinstance(ei.value, ValueError)
    assert str(ei.value).startswith("<bytes>: ")


def test_data_section_case_is_really_unpadded():
    # The catalogue entry above only tests what it says if the header end is not aligned.
    b = gb.build(tensors=[T("w", [4])], pad_data_section=False, data_size=0)
    assert b.header_end % 32 != 0 and len(b.data) == b.header_end


def test_truncation_anywhere_is_a_format_error():
    b = small_valid()
    full = _core.gguf_parse_bytes(b.data)
    assert len(full["tensors"]) == 2
    data_cuts = range(b.data_offset, len(b.data), 7)
    for cut in [*range(b.data_offset + 1), *data_cuts, len(b.data) - 1]:
        with pytest.raises(ModelFormatError, match=r"truncated|exceeds|beyond|larger than|empty"):
            _core.gguf_parse_bytes(b.data[:cut])


def test_truncation_of_real_file_header(smollm2_path):
    head = smollm2_path.open("rb").read(4096)
    rng = np.random.default_rng(1)
    for cut in [0, 1, 4, 8, 23, 24, 25, *rng.integers(26, len(head), 40).tolist()]:
        with pytest.raises(ModelFormatError):
            _core.gguf_parse_bytes(head[:cut])


def test_random_byte_flips_never_crash():
    # Not a fuzzer, a smoke check: flipped header bytes give a clean result or a clean error.
    base = bytearray(small_valid().data)
    rng = np.random.default_rng(2)
    header_len = small_valid().header_end
    for _ in range(300):
        data = bytearray(base)
        for pos in rng.integers(0, header_len, 3):
            data[pos] = int(rng.integers(0, 256))
        try:
            _core.gguf_parse_bytes(bytes(data))
        except ModelFormatError:
            pass


# ---- files that are not GGUF at all ----------------------------------------------------------


def test_missing_path(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match=r"nope\.gguf.*No such file") as ei:
        _core.gguf_read(str(path))
    assert isinstance(ei.value, OSError)


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match=re.escape(str(tmp_path)) + r".*[Ii]s a directory"):
        _core.gguf_read(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable(tmp_path):
    path = tmp_path / "locked.gguf"
    path.write_bytes(small_valid().data)
    path.chmod(0)
    with pytest.raises(ModelFileError, match=r"locked\.gguf.*[Pp]ermission denied"):
        _core.gguf_read(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty\.gguf: empty file"):
        _core.gguf_read(str(path))


def test_text_file(tmp_path):
    path = tmp_path / "readme.gguf"
    path.write_text("This is not a model, just some text.\n" * 3)
    with pytest.raises(ModelFormatError, match=r"readme\.gguf: bad magic .*not a GGUF file"):
        _core.gguf_read(str(path))


def test_read_file_matches_parse_bytes(tmp_path):
    b = small_valid()
    path = tmp_path / "small.gguf"
    path.write_bytes(b.data)
    assert _core.gguf_read(str(path)) == _core.gguf_parse_bytes(b.data)
