"""Kind 2 (channel sparsity) search over per-layer sparsity levels, on recorded magnitudes.

A layer's *level* s is the fraction of its recorded |v| below its threshold: the filters of a
variant take per-layer quantiles of their histograms (channel_stats.channel_thresholds) at s
times their scale; level 0 turns the layer's filters off (NaN: the dense FFN, no layout read).
Variants (Variant):

- ``in_mid@K`` (TEAL-like): t_in on |h| at quantile s, t_mid on |m| at quantile K s;
- ``gate`` (gate-first): t_gate on |g| alone.

The greedy allocation needs, per layer, what a level saves and what it costs:

- bytes: the FFN bytes the engine reported not read at measured levels (uniform runs), linear
  in between; the engine's count, so layout tables and partly active blocks are included;
- quality: the layer's measured KL to dense when only it is sparsified at a probe level, spread
  over other levels by the energy the filters drop, E(s) = sum of v^2 below the quantile over
  sum of v^2 (from the same histograms), i.e. cost(s) = KL_probe * E(s) / E(s_probe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from .. import _core
from ..channel_stats import channel_thresholds
from ..errors import InvalidArgumentError
from ..skip import SkipConfig

HIST_KEYS = ("hist_h", "hist_g", "hist_m")
MAX_LEVEL = 0.9  # above it one layer's FFN is mostly gone: block skipping's territory
LEVEL_STEP = 0.025  # greedy step; 1/40 keeps SmolLM2's 30-layer path at ~500 points


@dataclass(frozen=True)
class Variant:
    """Which filters a profile turns on, each at ``scale`` x the layer's level (capped at
    MAX_LEVEL): ``in_mid`` with mid_scale k puts t_in at quantile s and t_mid at quantile k s.
    The split matters: SmolLM2 at 25% of FFN bytes saved, calibration KL 0.055 with t_in and
    t_mid both at 0.31, 0.038 at 0.25 / 0.43 (k 1.7), 0.050 at 0.2 / 0.55 (k 2.75)."""

    name: str
    filters: tuple[tuple[str, str, float], ...]  # (SkipConfig field, histogram key, scale)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "filters": {f: k for f, _, k in self.filters}}


def in_mid(mid_scale: float) -> Variant:
    return Variant(
        f"in_mid@{mid_scale:g}", (("t_in", "hist_h", 1.0), ("t_mid", "hist_m", mid_scale))
    )


GATE = Variant("gate", (("t_gate", "hist_g", 1.0),))
# The variants calibrate tries by default (each matched to the byte target with the same level in
# every layer; the lowest KL goes on to the per-layer allocation).
DEFAULT_VARIANTS = (in_mid(1.0), in_mid(1.5), in_mid(2.0), in_mid(2.5), GATE)


def parse_variant(text: str) -> Variant:
    """``gate``, ``in_mid`` (mid scale 1) or ``in_mid@K``."""
    if text == "gate":
        return GATE
    if text == "in_mid":
        return in_mid(1.0)
    if text.startswith("in_mid@"):
        try:
            k = float(text[len("in_mid@") :])
        except ValueError:
            k = math.nan
        if math.isfinite(k) and k > 0:
            return in_mid(k)
    raise InvalidArgumentError(f"unknown channel variant {text!r}: gate, in_mid or in_mid@K")


def filter_levels(levels: np.ndarray, scale: float) -> np.ndarray:
    return np.where(levels > 0, np.minimum(levels * scale, MAX_LEVEL), 0.0)


def config_at(
    base: SkipConfig, variant: Variant, hists: dict[str, np.ndarray], levels: Sequence[float]
) -> SkipConfig:
    """``base`` with the variant's per-layer thresholds at ``levels`` (0: that layer off) and
    the other channel filters off."""
    lv = np.asarray(levels, dtype=np.float64)
    fields: dict[str, object] = {"t_in": None, "t_gate": None, "t_mid": None}
    for name, key, scale in variant.filters:
        fr = filter_levels(lv, scale)
        fr = np.where(fr > 0, fr, np.nan)
        fields[name] = [float(t) for t in channel_thresholds(hists[key], fr)]
    return replace(base, **fields)  # type: ignore[arg-type]


def dropped_energy(hist: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Per layer: the share of sum(v^2) carried by the values below the level's quantile
    (bin centres stand for the values; the bin that holds the quantile counts in part)."""
    counts = np.asarray(hist, dtype=np.float64)
    edges = _core.channel_hist_edges().astype(np.float64)
    upper = np.append(edges[1:], edges[-1])
    centre2 = ((edges + upper) / 2.0) ** 2
    out = np.zeros(counts.shape[0])
    for layer, (row, s) in enumerate(zip(counts, np.broadcast_to(levels, out.shape))):
        total_n, energy = row.sum(), row @ centre2
        if total_n == 0 or energy == 0 or s <= 0:
            continue
        cum = np.cumsum(row)
        want = s * total_n
        b = int(np.searchsorted(cum, want, side="left"))
        if b >= len(row):
            out[layer] = 1.0
            continue
        below = cum[b - 1] if b > 0 else 0.0
        part = (want - below) / row[b] if row[b] > 0 else 0.0
        out[layer] = (row[:b] @ centre2[:b] + part * row[b] * centre2[b]) / energy
    return out


def variant_energy(
    variant: Variant, hists: dict[str, np.ndarray], levels: np.ndarray
) -> np.ndarray:
    """The mean dropped energy of the variant's filters at per-layer ``levels``."""
    return np.mean(
        [dropped_energy(hists[key], filter_levels(levels, k)) for _, key, k in variant.filters],
        axis=0,
    )


@dataclass
class ByteModel:
    """Per-layer FFN bytes saved (fraction of the layer's dense bytes) against the level,
    from measured (level, saved) points: linear in between, the last slope beyond."""

    points: list[tuple[float, np.ndarray]]  # (uniform level, per-layer saved)
    weights: np.ndarray  # per layer: dense FFN bytes / all layers' dense FFN bytes

    def add(self, level: float, layer_saved: Sequence[float]) -> None:
        if level > 0:
            self.points.append((float(level), np.asarray(layer_saved, dtype=np.float64)))

    def layer_saved(self, layer: int, level: float) -> float:
        if level <= 0:
            return 0.0
        pts = sorted({p[0]: p[1][layer] for p in self.points}.items())
        if not pts:
            return level  # no measurement yet: bytes proportional to the level
        xs = np.array([0.0] + [p[0] for p in pts])
        ys = np.array([0.0] + [p[1] for p in pts])
        if level <= xs[-1]:
            return float(np.interp(level, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(ys[-1] + slope * (level - xs[-1]))

    def saved(self, levels: Sequence[float]) -> float:
        return float(
            sum(w * self.layer_saved(i, s) for i, (w, s) in enumerate(zip(self.weights, levels)))
        )


@dataclass
class GreedyPath:
    """Per-layer levels after each greedy step, with the predicted bytes saved and cost."""

    levels: np.ndarray  # (steps, n_layer)
    saved: np.ndarray  # (steps,) predicted model-wide FFN bytes saved
    cost: np.ndarray  # (steps,) predicted KL sum

    def index_for(self, target: float) -> int:
        return int(min(np.searchsorted(self.saved, target), len(self.saved) - 1))


def greedy_path(
    probe_kl: np.ndarray,
    probe_level: float,
    energy: np.ndarray,
    bytes_model: ByteModel,
    max_saved: float,
    step: float = LEVEL_STEP,
) -> GreedyPath:
    """Raise one layer's level by ``step`` at a time, always the layer whose step costs the
    least predicted KL per byte saved, until ``max_saved`` is predicted.

    ``energy`` is (n_grid, n_layer): the variant's dropped energy at levels k * step. A layer's
    predicted cost at level s is probe_kl * E(s) / E(probe_level)."""
    n_grid, n_layer = energy.shape
    probe_idx = int(round(probe_level / step))
    if not 0 < probe_idx < n_grid:
        raise InvalidArgumentError(f"probe level {probe_level} outside the level grid")
    scale = np.asarray(probe_kl, dtype=np.float64) / np.maximum(energy[probe_idx], 1e-12)
    cost_grid = energy * scale  # (n_grid, n_layer)
    saved_grid = bytes_model.weights * np.array(
        [[bytes_model.layer_saved(i, k * step) for i in range(n_layer)] for k in range(n_grid)]
    )
    at = np.zeros(n_layer, dtype=int)
    levels, saved, cost = [at.copy()], [0.0], [0.0]
    while saved[-1] < max_saved:
        best, best_ratio, best_to = -1, math.inf, 0
        for layer in range(n_layer):
            k = at[layer]
            # Look ahead to the first step that saves bytes (a layer's first level may read
            # its layout's tables for nothing).
            for nxt in range(k + 1, n_grid):
                gain = saved_grid[nxt, layer] - saved_grid[k, layer]
                if gain > 1e-9:
                    ratio = (cost_grid[nxt, layer] - cost_grid[k, layer]) / gain
                    if ratio < best_ratio:
                        best, best_ratio, best_to = layer, ratio, nxt
                    break
        if best < 0:
            break
        at[best] = best_to
        levels.append(at.copy())
        saved.append(float(saved_grid[at, np.arange(n_layer)].sum()))
        cost.append(float(cost_grid[at, np.arange(n_layer)].sum()))
    return GreedyPath(np.array(levels) * step, np.array(saved), np.array(cost))
