"""Input side of the HF -> GGUF converter: the error type, a lazy safetensors reader, progress.

The reader parses each file's JSON header itself and reads one tensor at a time with a
positioned read (no mmap of the whole file), so the converter's resident memory stays near the
size of the largest single tensor rather than the size of the model.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, List, Optional, Tuple

import numpy as np

from .errors import Error


class ConvertError(Error):
    """A Hugging Face checkpoint cannot be converted (missing file, unsupported model, bad data)."""


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
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")
    base = 8 + n
    refs: List[TensorRef] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConvertError(f"{path}: malformed header entry for tensor {name!r}") from e
        if dtype not in _ST_DTYPES:
            raise ConvertError(
                f"{path.name}: tensor {name!r} has unsupported dtype {dtype} "
                f"(supported: {', '.join(_ST_DTYPES)})"
            )
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(d < 0 for d in shape) or end - begin != count * _ST_DTYPES[dtype][1]:
            raise ConvertError(
                f"{path.name}: tensor {name!r} byte range {begin}..{end} does not match "
                f"shape {list(shape)} of {dtype}"
            )
        if begin < 0 or base + end > size:
            raise ConvertError(f"{path.name}: tensor {name!r} lies outside the file (truncated?)")
        refs.append(TensorRef(name, path, dtype, shape, base + begin, end - begin))
    return refs


def open_checkpoint(hf_dir: Path) -> Dict[str, TensorRef]:
    """All tensors of a checkpoint dir: single or sharded (model.safetensors.index.json)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConvertError(f"{index}: not a valid safetensors index ({e})") from e
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (hf_dir / f).is_file()]
        if missing:
            raise ConvertError(f"{hf_dir}: shard(s) named in {index.name} are missing: {missing}")
        paths = [hf_dir / f for f in files]
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
        weight_map = None
    tensors: Dict[str, TensorRef] = {}
    for p in paths:
        for ref in read_safetensors_header(p):
            if ref.name in tensors:
                raise ConvertError(f"tensor {ref.name!r} appears in more than one shard")
            tensors[ref.name] = ref
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(tensors))
        if absent:
            raise ConvertError(f"{index.name} lists tensors its shards lack: {absent[:5]}")
    return tensors


class Progress:
    """A one-line progress bar on a stream (stderr), drawn only when enabled."""

    def __init__(self, total_bytes: int, enabled: bool, stream: Optional[IO[str]] = None) -> None:
        self.total = max(total_bytes, 1)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.monotonic()

    def update(self, nbytes: int, label: str) -> None:
        """Advance by nbytes written (label: the tensor just written) and redraw."""
        self.done += nbytes
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        mb = self.done / 2**20
        rate = mb / max(time.monotonic() - self.t0, 1e-9)
        self.stream.write(
            f"\r[{bar:<30}] {frac * 100:5.1f}% {mb:9.1f} MiB {rate:7.1f} MiB/s {label[:40]:<40}"
        )
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
