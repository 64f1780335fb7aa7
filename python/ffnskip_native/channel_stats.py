"""Kind 2 (channel sparsity) thresholds from the engine's recorded magnitude histograms.

With ``SkipConfig(record_channels=True)`` the engine counts |h|, |g| and |m| of every FFN it runs
for a gated token into per-layer histograms (``skip_stats()["hist_h"]`` etc., shape
(n_layer, n_bins)) whose bins split each octave into 32 equal parts (``_core.channel_hist_edges``).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import InvalidArgumentError


def channel_thresholds(
    hist: npt.ArrayLike, fraction: Union[float, Sequence[float]]
) -> npt.NDArray[np.float64]:
    """Per-layer thresholds t with about ``fraction`` of the recorded |v| below t.

    ``hist`` is (n_layer, n_bins) counts; ``fraction`` one value for every layer or one per
    layer, in [0, 1]. The value is interpolated linearly inside the bin that holds the quantile,
    so it is within one bin (1/32 of an octave, 2.2%) of the exact quantile. A layer without
    counts, or a fraction of NaN, gets NaN (its filter off); a fraction of 0 gets 0 (keeps all).
    """
    counts = np.asarray(hist, dtype=np.float64)
    edges = _core.channel_hist_edges().astype(np.float64)
    if counts.ndim != 2 or counts.shape[1] != edges.size:
        raise InvalidArgumentError(
            f"channel histogram must be (n_layer, {edges.size}), got shape {counts.shape}"
        )
    fr = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (counts.shape[0],))
    if np.any((fr < 0) | (fr > 1)):
        raise InvalidArgumentError(f"fractions must be in [0, 1], got {fraction!r}")
    # Upper edges: the next bin's lower edge; the overflow bin ends at its own lower edge.
    upper = np.append(edges[1:], edges[-1])
    out = np.full(counts.shape[0], np.nan)
    for layer, (row, f) in enumerate(zip(counts, fr)):
        total = row.sum()
        if total == 0 or np.isnan(f):
            continue
        if f == 0:
            out[layer] = 0.0
            continue
        cum = np.cumsum(row)
        want = f * total
        b = int(np.searchsorted(cum, want, side="left"))
        below = cum[b - 1] if b > 0 else 0.0
        inside = (want - below) / row[b] if row[b] > 0 else 1.0
        out[layer] = edges[b] + inside * (upper[b] - edges[b])
    return out
