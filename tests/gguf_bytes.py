"""A small GGUF byte builder for crafting valid and deliberately corrupt files.

Written with `struct` only, so that every field can be overridden with a wrong value (a count that
lies, a length past the end, a type id that does not exist). Pieces compose by concatenation:

    data = build(kvs=[kv_str("general.architecture", "llama")],
                 tensors=[Tensor("w", [32, 2], F32)]).data

Each helper takes keyword overrides for the fields a corrupt-file test wants to falsify.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Sequence

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32


class VT(IntEnum):
    """GGUF metadata value types (wire ids)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMAT = {
    VT.UINT8: "<B",
    VT.INT8: "<b",
    VT.UINT16: "<H",
    VT.INT16: "<h",
    VT.UINT32: "<I",
    VT.INT32: "<i",
    VT.FLOAT32: "<f",
    VT.BOOL: "<B",
    VT.UINT64: "<Q",
    VT.INT64: "<q",
    VT.FLOAT64: "<d",
}

# ggml tensor types used by the tests: id -> (elements per block, bytes per block).
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
BLOCK_GEOMETRY = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q8_0: (32, 34)}


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x)


def gstr(s: str | bytes, *, length: int | None = None) -> bytes:
    """A GGUF string: u64 length + bytes. `length` overrides the stored length."""
    raw = s.encode() if isinstance(s, str) else s
    return u64(len(raw) if length is None else length) + raw


def scalar(vtype: VT, value: Any) -> bytes:
    if vtype == VT.STRING:
        return gstr(value)
    return struct.pack(_SCALAR_FORMAT[vtype], value)


def array_payload(elem_type: int, values: Sequence[Any], *, count: int | None = None) -> bytes:
    """Array body: element type, u64 count (overridable), encoded elements."""
    body = b"".join(scalar(VT(elem_type), v) for v in values)
    return u32(elem_type) + u64(len(values) if count is None else count) + body


def raw_kv(
    key: str | bytes, type_id: int, payload: bytes, *, key_length: int | None = None
) -> bytes:
    """One KV from already encoded parts: any type id, any payload."""
    return gstr(key, length=key_length) + u32(type_id) + payload


def kv(key: str, vtype: VT, value: Any) -> bytes:
    return raw_kv(key, vtype, scalar(vtype, value))


def kv_str(key: str, value: str) -> bytes:
    return kv(key, VT.STRING, value)


def kv_array(key: str, elem_type: VT, values: Sequence[Any], *, count: int | None = None) -> bytes:
    return raw_kv(key, VT.ARRAY, array_payload(elem_type, values, count=count))


def header(n_tensors: int, n_kv: int, *, magic: bytes = MAGIC, version: int = 3) -> bytes:
    return magic + u32(version) + u64(n_tensors) + u64(n_kv)


def nbytes_of(ggml_type: int, shape: Sequence[int]) -> int:
    block, size = BLOCK_GEOMETRY[ggml_type]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


@dataclass
class Tensor:
    """A tensor entry. `shape` is ne[0] first. `offset=None` places it after the previous one
    (aligned); `data=None` fills nbytes_of(type, shape) bytes of a recognisable pattern."""

    name: str | bytes
    shape: Sequence[int]
    ggml_type: int = F32
    offset: int | None = None
    data: bytes | None = None
    n_dims: int | None = None  # overrides the stored dimension count
    name_length: int | None = None  # overrides the stored name length


def tensor_info(t: Tensor, offset: int) -> bytes:
    n_dims = len(t.shape) if t.n_dims is None else t.n_dims
    dims = b"".join(u64(d) for d in t.shape)
    return gstr(t.name, length=t.name_length) + u32(n_dims) + dims + u32(t.ggml_type) + u64(offset)


def pad_to(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class Built:
    data: bytes
    header_end: int  # end of the tensor infos (before padding)
    data_offset: int  # start of the data section
    offsets: list[int] = field(default_factory=list)  # tensor offsets as stored


def build(
    kvs: Sequence[bytes] = (),
    tensors: Sequence[Tensor] = (),
    *,
    version: int = 3,
    magic: bytes = MAGIC,
    alignment: int = DEFAULT_ALIGNMENT,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    pad_data_section: bool | None = None,
    data_size: int | None = None,
) -> Built:
    """A whole file. `alignment` is only the layout used here; to declare it in the file, pass
    kv("general.alignment", VT.UINT32, a) among `kvs`. The last tensor ends the file unless
    `data_size` fixes the data section's length (blobs are clipped to it; use it with huge
    offsets)."""
    offsets: list[int] = []
    blobs: list[bytes] = []
    cursor = 0
    for t in tensors:
        off = pad_to(cursor, alignment) if t.offset is None else t.offset
        if t.data is not None:
            blob = t.data
            size = len(blob)
        else:
            size = nbytes_of(t.ggml_type, t.shape)
            # Only materialise what lands in the file: corrupt shapes can claim exabytes.
            room = size if data_size is None else max(0, min(size, data_size - off))
            blob = _pattern(room)
        offsets.append(off)
        blobs.append(blob)
        cursor = max(cursor, off + size)
    head = header(
        len(tensors) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
        magic=magic,
        version=version,
    )
    head += b"".join(kvs)
    head += b"".join(tensor_info(t, off) for t, off in zip(tensors, offsets))
    header_end = len(head)
    if pad_data_section is None:
        pad_data_section = bool(tensors)  # a file without tensors needs no data section
    data_offset = pad_to(header_end, alignment) if pad_data_section else header_end
    section = bytearray(cursor if data_size is None else data_size)
    for off, blob in zip(offsets, blobs):
        if off < len(section):
            end = min(len(section), off + len(blob))
            section[off:end] = blob[: end - off]
    out = head + bytes(data_offset - header_end) + bytes(section)
    return Built(out, header_end, data_offset, offsets)


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))
