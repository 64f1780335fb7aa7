"""A one-line progress bar for the conversion (stderr, only when asked)."""

from __future__ import annotations

import sys
import time
from typing import IO, Optional


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
