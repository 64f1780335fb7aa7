"""Helpers shared by the commands and tools: JSON output, atomic file writes, progress bars."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm


def json_safe(value: Any) -> Any:
    """``value`` with everything JSON cannot spell made plain, recursively.

    The rule: a non-finite float (NaN, +inf, -inf) becomes ``None`` (null). Python's json module
    would write ``NaN``/``Infinity``, which strict parsers (browsers, jq, Go, Rust) reject, and
    the places that produce them mean "no value" (a threshold that never fires, a layer with no
    measurement). numpy arrays and scalars become lists and numbers, bytes become hex, and
    mapping keys become strings.
    """
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def dumps_json(value: Any, indent: int = 2) -> str:
    """Strict JSON text of ``value`` after json_safe."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` completely or not at all: ``write`` fills a temporary file in the same
    directory, which is then renamed over ``path`` (a rename within one file system is atomic).
    On any failure, interrupts included, the temporary file is removed and ``path`` is left as
    it was. Returns ``path``."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp made the file private (0600): give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def progress_bar(total: int, label: str, enabled: bool, unit: str = "it") -> tqdm:
    """A progress bar on stderr, or, when not ``enabled``, an object with the same methods that
    prints nothing. Callers decide ``enabled`` (the commands: --progress, or stderr is a TTY);
    library code passes down what it was given and never turns one on by itself. ``unit="B"``
    counts bytes."""
    return tqdm(
        total=total,
        desc=label,
        disable=not enabled,
        file=sys.stderr,
        leave=True,
        unit=unit,
        unit_scale=unit == "B",  # bytes read best as KB/MB/GB
    )
