"""The checkpoint's tensors: a lazy safetensors reader that validates every header.

The reader parses each file's JSON header itself and reads one tensor at a time with a
positioned read (no mmap of the whole file), so the converter's resident memory stays near the
size of the largest single tensor rather than the size of the model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import ConvertError
from .fields import Fields, is_int, parse_json

# safetensors dtype name -> (numpy dtype used to read the raw bytes, bytes per element).
# BF16 has no numpy dtype: it is read as uint16 and widened with bf16_to_f32().
_ST_DTYPES: Dict[str, Tuple[np.dtype, int]] = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}

# A header larger than this is not a real checkpoint (the reference implementation caps it too).
_MAX_HEADER = 100 * 1024 * 1024


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 exactly (bf16 = top half of an f32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: file, dtype name, shape and the byte range of its data."""

    name: str
    path: Path
    dtype: str
    shape: Tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int

    def read_raw(self) -> np.ndarray:
        """The tensor's values in their stored dtype (BF16 as uint16 bits), shaped, in memory."""
        np_dtype, item = _ST_DTYPES[self.dtype]
        count = self.nbytes // item
        with open(self.path, "rb") as f:
            f.seek(self.start)
            arr = np.fromfile(f, dtype=np_dtype, count=count)
        if arr.size != count:
            raise ConvertError(f"{self.path.name}: tensor {self.name!r} is truncated")
        return arr.reshape(self.shape)

    def read_f32(self) -> np.ndarray:
        """The tensor converted to float32 (exact for F16, BF16 and F32 sources)."""
        raw = self.read_raw()
        if self.dtype == "BF16":
            return bf16_to_f32(raw)
        return raw.astype(np.float32, copy=False)


# Median |x| below which a BF16 matrix is taken for F16 data labelled BF16 (both are 2 bytes, so
# the byte sizes cannot tell them apart). F16 bits read as BF16 turn a value near 2^k into one
# near 2^(8k-7): SmolLM2-135M's matrices (trained weights, median |x| 0.026 to 0.18) read that
# way have medians of 1e-15 to 6e-9. 2^-16 (1.5e-5) leaves over three decades on either side;
# an F16 matrix escapes only if its own median |x| exceeds about 0.46.
BF16_MIN_MEDIAN = 2.0**-16
_SAMPLE = 65536  # elements the check looks at (strided over the whole tensor)


def check_bf16_scale(ref: TensorRef, bits: np.ndarray) -> None:
    """Refuse a BF16 matrix whose values are what mislabelled F16 data looks like."""
    if ref.dtype != "BF16" or len(ref.shape) != 2:
        return
    flat = bits.reshape(-1)
    mag = np.abs(bf16_to_f32(flat[:: max(1, flat.size // _SAMPLE)]))
    mag = mag[mag != 0]
    if mag.size and np.median(mag) < BF16_MIN_MEDIAN:
        raise ConvertError(
            f"{ref.path.name}: tensor {ref.name!r} is declared BF16 but its median |value| is "
            f"{np.median(mag):.1e}, which is what F16 data read as BF16 looks like "
            "(wrong dtype in the safetensors header?)"
        )


def read_safetensors_header(path: Path) -> List[TensorRef]:
    """Parse one .safetensors file's header into TensorRefs, validating every offset."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ConvertError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise ConvertError(f"{path}: not a safetensors file (header length {n} is invalid)")
            raw = f.read(n)
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror or e}") from e
    header = parse_json(raw, f"{path}: safetensors header")
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")
    base = 8 + n
    refs: List[TensorRef] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        refs.append(_header_entry(path, name, info, base, size))
    _check_no_overlap(path, refs)
    return refs


def _header_entry(path: Path, name: str, info: object, base: int, size: int) -> TensorRef:
    """One tensor's header entry, checked: dtype, shape, and a byte range inside the file that
    matches shape x dtype."""
    fields = info if isinstance(info, dict) else {}
    dtype, shape, offsets = (fields.get(k) for k in ("dtype", "shape", "data_offsets"))
    ok = isinstance(dtype, str) and isinstance(shape, list) and isinstance(offsets, list)
    ok = ok and all(is_int(d) and d >= 0 for d in shape) and len(offsets) == 2
    ok = ok and all(is_int(v) for v in offsets)
    if not ok:
        raise ConvertError(f"{path}: malformed header entry for tensor {name!r}")
    if dtype not in _ST_DTYPES:
        raise ConvertError(
            f"{path.name}: tensor {name!r} has unsupported dtype {dtype} "
            f"(supported: {', '.join(_ST_DTYPES)})"
        )
    begin, end = offsets
    count = 1
    for d in shape:  # Python ints: a lying shape cannot overflow into a matching size
        count *= d
    if end - begin != count * _ST_DTYPES[dtype][1]:
        raise ConvertError(
            f"{path.name}: tensor {name!r} byte range {begin}..{end} does not match "
            f"shape {shape} of {dtype}"
        )
    if begin < 0 or base + end > size:
        raise ConvertError(f"{path.name}: tensor {name!r} lies outside the file (truncated?)")
    return TensorRef(name, path, dtype, tuple(shape), base + begin, end - begin)


def _check_no_overlap(path: Path, refs: List[TensorRef]) -> None:
    """Two tensors sharing bytes is a corrupt (or crafted) header: writing to one would change
    the other in the source framework, and here both would silently read the same data."""
    spans = sorted((r.start, r.start + r.nbytes, r.name) for r in refs if r.nbytes)
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise ConvertError(
                f"{path.name}: tensors {name_a!r} and {name_b!r} overlap in the file "
                f"(corrupt safetensors header)"
            )


def _shard_path(hf_dir: Path, index_name: str, entry: object) -> Path:
    """A shard file named by the index, kept inside the checkpoint directory.

    The check is on the name, not on the resolved path: Hugging Face's cache stores shards as
    symlinks into a blobs/ directory beside the snapshot, which must keep working, while a name
    like ../../etc/passwd or /etc/passwd is refused (and backslashes, Windows separators, which
    no real shard name contains).
    """
    if not isinstance(entry, str) or not entry:
        raise ConvertError(f"{index_name}: weight_map values must be file names, found {entry!r}")
    rel = PurePosixPath(entry)
    if rel.is_absolute() or ".." in rel.parts or "\\" in entry:
        raise ConvertError(f"{index_name}: shard {entry!r} is outside the checkpoint directory")
    return hf_dir / rel


def open_checkpoint(hf_dir: Path) -> Dict[str, TensorRef]:
    """All tensors of a checkpoint dir: single or sharded (model.safetensors.index.json)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = Fields.load(index).get_obj("weight_map", required=True)
        files = sorted({str(_shard_path(hf_dir, index.name, f)) for _, f in weight_map.items()})
        paths = [Path(f) for f in files]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise ConvertError(f"{hf_dir}: shard(s) named in {index.name} are missing: {missing}")
        listed: Optional[List[str]] = [name for name, _ in weight_map.items()]
    else:
        paths = sorted(hf_dir.glob("*.safetensors"))
        if not paths:
            others = sorted(p.name for p in hf_dir.glob("*.bin")) + sorted(
                p.name for p in hf_dir.glob("*.pth")
            )
            hint = (
                f" (found {others}: only safetensors checkpoints are supported)" if others else ""
            )
            raise ConvertError(f"{hf_dir}: no *.safetensors weights found{hint}")
        listed = None
    for p in paths:  # a FIFO or device would block the read below, or never end
        if not p.is_file():
            raise ConvertError(f"{p}: not a regular file")
    tensors: Dict[str, TensorRef] = {}
    for p in paths:
        for ref in read_safetensors_header(p):
            if ref.name in tensors:
                raise ConvertError(f"tensor {ref.name!r} appears in more than one shard")
            tensors[ref.name] = ref
    if listed is not None:
        absent = sorted(set(listed) - set(tensors))
        if absent:
            raise ConvertError(f"{index.name} lists tensors its shards lack: {absent[:5]}")
    return tensors
