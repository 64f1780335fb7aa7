"""The profile search behind ``ffnskip calibrate``: a policy simulator over recorded gates, the
greedy per-layer threshold search, the sensitivity-tilted global threshold, the two baselines,
and ratio matching against the engine.

Engine runs are the expensive part (a teacher-forced pass over the whole calibration text), so
the search is done on a surrogate: the dense gate values g[t, l] recorded once replay the exact
budget logic of shared/DESIGN.md for any config in microseconds, which predicts the skip pattern
(hence the skip ratio) and, with a per-layer cost per skipped block, the quality loss. The
engine then only verifies a few candidates and matches skip ratios precisely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, overload

import numpy as np

from ..quality import QualityResult
from ..skip import SkipConfig


@dataclass
class GateSet:
    """Dense gate values of one text split: what the policy sees when nothing is skipped."""

    gates: np.ndarray  # (tokens, n_layer) float32: every generated token, warm-up included
    past_warmup: np.ndarray  # (tokens,) bool: the token is past the warm-up (the policy may skip)

    @property
    def n_layer(self) -> int:
        return int(self.gates.shape[1])

    @classmethod
    def from_windows(cls, per_window: Sequence[np.ndarray], warmup: int) -> GateSet:
        gates = np.concatenate(per_window).astype(np.float32)
        past_warmup = np.concatenate([np.arange(len(w)) >= warmup for w in per_window])
        return cls(gates, past_warmup)


def simulate(gs: GateSet, threshold: np.ndarray, span: int, cold_start: int, cold_end: int):
    """Skip mask (gated tokens, n_layer) of the policy replayed on dense gates.

    Exact for the first skip of every token; after it, the engine sees gates of a perturbed
    residual stream, which is why candidates are verified with the engine."""
    g = gs.gates[gs.past_warmup]
    n_layer = gs.n_layer
    skip = np.zeros(g.shape, dtype=bool)
    budget = np.zeros(len(g), dtype=np.int64)
    refill = span if span > 0 else n_layer
    for layer in range(cold_start, n_layer - cold_end):
        skipped = budget > 0
        skip[:, layer] = skipped
        budget -= skipped
        th = threshold[layer]
        if not math.isnan(th):
            budget[~skipped & (g[:, layer] >= th)] = refill
    return skip


def ratio_of(gs: GateSet, skip: np.ndarray) -> float:
    """Skip ratio as the engine counts it: skipped / (all generated tokens x n_layer)."""
    return float(skip.sum()) / (len(gs.gates) * gs.n_layer)


def predicted_loss(gs: GateSet, cost: np.ndarray, skip: np.ndarray) -> float:
    """Predicted KL of a skip mask: the cost of its skipped blocks per generated token."""
    return float((cost * skip).sum()) / len(gs.gates)


def layer_thresholds(cfg: SkipConfig, n_layer: int) -> np.ndarray:
    """``cfg``'s thresholds as one float per layer (a global threshold repeated)."""
    th = np.asarray(cfg.threshold_list(), dtype=np.float64)
    return np.full(n_layer, th[0]) if th.size == 1 else th


def config_mask(gs: GateSet, cfg: SkipConfig) -> np.ndarray:
    """simulate() for a SkipConfig."""
    return simulate(gs, layer_thresholds(cfg, gs.n_layer), cfg.span, cfg.cold_start, cfg.cold_end)


def config_ratio(gs: GateSet, cfg: SkipConfig) -> float:
    return ratio_of(gs, config_mask(gs, cfg))


def cost_matrix(gs: GateSet, sensitivity: np.ndarray) -> np.ndarray:
    """Predicted loss of skipping layer l at token t: the layer's measured cost per skipped block,
    scaled by how large this token's FFN update is relative to the layer's average (1 - g)."""
    g = gs.gates[gs.past_warmup].astype(np.float64)
    update = np.clip(1.0 - g, 0.0, None)
    mean = update.mean(axis=0)
    # Layers that can never be skipped (infinite sensitivity) must not poison the sums with NaN.
    sens = np.nan_to_num(np.asarray(sensitivity, dtype=np.float64), posinf=1e6)
    return sens[None, :] * update / np.where(mean > 0, mean, 1.0)[None, :]


@dataclass
class ProfilePath:
    """A family of configs ordered by increasing predicted skip ratio (one search trajectory)."""

    name: str
    configs: list[SkipConfig]
    ratios: np.ndarray  # predicted ratio of each config on the split the path was built on
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # predicted loss (KL units)

    def ratios_on(self, gs: GateSet) -> np.ndarray:
        return np.array([config_ratio(gs, c) for c in self.configs])

    def index_for(self, ratio: float) -> int:
        return int(np.argmin(np.abs(self.ratios - ratio)))


def greedy_path(
    gs: GateSet,
    cost: np.ndarray,
    span: int,
    cold_end: int,
    warmup: int,
    max_ratio: float,
    min_cold_start: int = 0,
    levels: int = 20,
) -> ProfilePath:
    """Lower per-layer thresholds one quantile step at a time, always taking the step that buys
    the most predicted skip ratio per unit of predicted loss, until ``max_ratio`` is reached.

    Threshold level k of layer l fires for a fraction k/levels of that layer's gated tokens.
    """
    n_layer = gs.n_layer
    g = gs.gates[gs.past_warmup]
    qs = 1.0 - np.arange(levels + 1) / levels
    table = np.quantile(g, qs, axis=0).T  # (n_layer, levels + 1)
    table[:, 0] = np.nan
    table[:, -1] = -1.0
    # A trigger needs a later hot layer to skip.
    triggers = [layer for layer in range(min_cold_start, n_layer - cold_end - 1)]
    level = np.zeros(n_layer, dtype=np.int64)

    def thresholds(lv: np.ndarray) -> np.ndarray:
        return table[np.arange(n_layer), lv]

    def evaluate(lv: np.ndarray) -> tuple[float, float]:
        skip = simulate(gs, thresholds(lv), span, 0, cold_end)
        return ratio_of(gs, skip), predicted_loss(gs, cost, skip)

    ratio, loss = 0.0, 0.0
    configs, ratios, costs = [], [], []
    while ratio < max_ratio:
        best, best_gain = None, 0.0
        for layer in triggers:
            if level[layer] >= levels:
                continue
            level[layer] += 1
            r, c = evaluate(level)
            level[layer] -= 1
            if r <= ratio + 1e-12:
                continue
            gain = (r - ratio) / max(c - loss, 1e-12)
            if gain > best_gain:
                best, best_gain, best_rc = layer, gain, (r, c)
        if best is None:
            break
        level[best] += 1
        ratio, loss = best_rc
        configs.append(_profile(thresholds(level), span, cold_end, warmup))
        ratios.append(ratio)
        costs.append(loss)
    return ProfilePath(
        f"calibrated span={span} cold_end={cold_end}", configs, np.array(ratios), np.array(costs)
    )


def _profile(th: np.ndarray, span: int, cold_end: int, warmup: int) -> SkipConfig:
    # Layers before the first trigger can never skip, so naming them cold changes nothing in
    # the decisions and makes the profile easier to read.
    fires = np.flatnonzero(~np.isnan(th))
    cold_start = int(fires[0]) if fires.size else 0
    values = [float(t) for t in th]
    return SkipConfig(
        warmup=warmup, cold_start=cold_start, cold_end=cold_end, threshold=values, span=span
    )


def _threshold_grid(gs: GateSet, cold_start: int, cold_end: int, points: int) -> np.ndarray:
    """Global thresholds from firing never to always: quantiles of the hot layers' gates,
    descending (so the paths built on them have increasing skip ratios)."""
    g = gs.gates[gs.past_warmup][:, cold_start : gs.n_layer - cold_end]
    return np.unique(np.quantile(g, np.linspace(1.0, 0.0, points)))[::-1]


def global_threshold_path(
    gs: GateSet, span: int, cold_start: int, cold_end: int, warmup: int, points: int = 200
) -> ProfilePath:
    """Baseline (a), the paper's policy: one threshold for every layer, cold regions fixed."""
    configs = [
        SkipConfig(
            warmup=warmup,
            cold_start=cold_start,
            cold_end=cold_end,
            threshold=float(t),
            span=span,
        )
        for t in _threshold_grid(gs, cold_start, cold_end, points)
    ]
    path = ProfilePath(f"global threshold span={span}", configs, np.zeros(0))
    path.ratios = path.ratios_on(gs)
    return path


def tilted_threshold_path(
    gs: GateSet,
    sensitivity: np.ndarray,
    cost: np.ndarray,
    span: int,
    cold_start: int,
    cold_end: int,
    warmup: int,
    beta: float,
    points: int = 200,
) -> ProfilePath:
    """The global threshold t tilted per layer by what the layer's trigger makes skip:
    threshold_l = 1 - (1 - t) * exp(-beta * z_l), z_l the standardised log sensitivity of the
    layers l + 1 .. l + span. beta = 0 is baseline (a); a small beta keeps (a)'s token-adaptive
    spread of skips and moves them towards cheaper layers. The greedy path concentrates skips
    on a few layers, which wins at small ratios but carries over less to other text at larger
    ones (Qwen2.5-1.5B, 20%: greedy held-out perplexity 15.4, (a) 14.7, this with beta 0.3
    14.4)."""
    n_layer = gs.n_layer
    hot_end = n_layer - cold_end
    sens = np.nan_to_num(np.asarray(sensitivity, dtype=np.float64), posinf=np.nan)
    triggers = np.arange(cold_start, hot_end - 1)
    z = np.zeros(n_layer)
    if triggers.size:
        reach = [hot_end if span == 0 else min(hot_end, t + 1 + span) for t in triggers]
        log_cost = np.array(
            [np.log(max(np.nanmean(sens[t + 1 : r]), 1e-12)) for t, r in zip(triggers, reach)]
        )
        spread = log_cost.std()
        z[triggers] = (log_cost - log_cost.mean()) / (spread if spread > 0 else 1.0)
    tilt = np.exp(-beta * z)
    configs, ratios, costs = [], [], []
    for t in _threshold_grid(gs, cold_start, cold_end, points):
        th = np.full(n_layer, np.nan)
        th[cold_start:hot_end] = np.clip(1.0 - (1.0 - t) * tilt[cold_start:hot_end], -1.0, 1.0)
        configs.append(
            SkipConfig(
                warmup=warmup,
                cold_start=cold_start,
                cold_end=cold_end,
                threshold=[float(x) for x in th],
                span=span,
            )
        )
        skip = simulate(gs, th, span, cold_start, cold_end)
        ratios.append(ratio_of(gs, skip))
        costs.append(predicted_loss(gs, cost, skip))
    name = f"tilted threshold span={span} beta={beta:g}"
    return ProfilePath(name, configs, np.array(ratios), np.array(costs))


def static_removal_path(gs: GateSet, warmup: int, steps: int = 10) -> tuple[ProfilePath, list[int]]:
    """Baseline (b): remove the FFN blocks with the highest mean gate value outright.

    Layer l is removed by an always-firing gate (threshold -1, span 1) on layer l - 1. Removed
    layers cannot be adjacent (a skipped layer computes no gate, so it cannot trigger), and
    layer 0 has no trigger. Between k and k + 1 removed layers the next layer is removed for a
    growing fraction of tokens (its trigger's threshold at a quantile), so any ratio is reachable.
    """
    n_layer = gs.n_layer
    mean_gate = np.nanmean(gs.gates[gs.past_warmup], axis=0)
    order: list[int] = []
    for layer in np.argsort(-mean_gate):
        layer = int(layer)
        if layer >= 1 and all(abs(layer - o) > 1 for o in order):
            order.append(layer)
    g = gs.gates[gs.past_warmup]
    configs: list[SkipConfig] = []
    for k in range(len(order)):
        base = [math.nan] * n_layer
        for layer in order[:k]:
            base[layer - 1] = -1.0
        nxt = order[k] - 1
        for step in range(1, steps + 1):
            th = list(base)
            th[nxt] = -1.0 if step == steps else float(np.quantile(g[:, nxt], 1 - step / steps))
            configs.append(
                SkipConfig(warmup=warmup, cold_start=0, cold_end=0, threshold=th, span=1)
            )
    path = ProfilePath("static removal", configs, np.zeros(0))
    path.ratios = path.ratios_on(gs)
    return path, order


# ---- skip compensation -------------------------------------------------------------------------


def fit_compensation(gs: GateSet, ffn: np.ndarray, cfg: SkipConfig) -> np.ndarray:
    """Per layer, the mean dense FFN update of the tokens ``cfg`` skips there (zeros where it
    skips none): what a skipped block adds instead of nothing. ``ffn`` holds the dense FFN
    outputs of every recorded token, aligned with ``gs.gates`` (tokens, n_layer, n_embd)."""
    n_layer = gs.n_layer
    mask = config_mask(gs, cfg)
    rows = np.flatnonzero(gs.past_warmup)
    comp = np.zeros((n_layer, ffn.shape[2]), dtype=np.float32)
    for layer in range(n_layer):
        sel = rows[mask[:, layer]]
        if sel.size:
            comp[layer] = ffn[sel, layer, :].astype(np.float32).mean(axis=0)
    return comp


class _CompensatedConfigs(Sequence[SkipConfig]):
    """The configs of a path with their fitted compensation, fitted when first asked for."""

    def __init__(self, base: Sequence[SkipConfig], gs: GateSet, ffn: np.ndarray) -> None:
        self._base, self._gs, self._ffn = base, gs, ffn
        self._done: dict[int, SkipConfig] = {}

    def __len__(self) -> int:
        return len(self._base)

    @overload
    def __getitem__(self, i: int) -> SkipConfig: ...
    @overload
    def __getitem__(self, i: slice) -> list[SkipConfig]: ...
    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self._done:
            cfg = self._base[i]
            comp = fit_compensation(self._gs, self._ffn, cfg)
            self._done[i] = replace(cfg, compensation=comp)
        return self._done[i]


def compensated_path(path: ProfilePath, gs: GateSet, ffn: np.ndarray) -> ProfilePath:
    """``path`` with every config's skipped FFN blocks compensated (same thresholds, so the
    same predicted ratios; the configs are fitted lazily, only those the engine evaluates)."""
    configs = _CompensatedConfigs(path.configs, gs, ffn)
    return ProfilePath(f"{path.name} + compensation", configs, path.ratios, path.costs)  # type: ignore[arg-type]


# ---- matching a skip ratio with the engine ------------------------------------------------------


@dataclass
class ScoredConfig:
    """A config and its quality as the engine measured it."""

    config: SkipConfig
    result: QualityResult


def match_ratio(
    path: ProfilePath,
    predicted: np.ndarray,
    target: float,
    evaluate: Callable[[SkipConfig], QualityResult],
    tol: float,
    max_runs: int,
) -> tuple[ScoredConfig, list[ScoredConfig]]:
    """Find the config of ``path`` whose real skip ratio is closest to ``target``.

    Starts at the simulator's prediction, then corrects by the observed offset or, once two runs
    bracket the target, by interpolating between them. Returns the closest run and all runs.
    """
    tried: dict[int, ScoredConfig] = {}
    offset = 0.0
    for _ in range(max_runs):
        idx = _next_index(predicted, target, offset, tried)
        if idx in tried:
            break
        res = evaluate(path.configs[idx])
        tried[idx] = ScoredConfig(path.configs[idx], res)
        if abs(res.skip_ratio - target) <= tol:
            break
        offset = res.skip_ratio - predicted[idx]
    best = min(tried.values(), key=lambda t: abs(t.result.skip_ratio - target))
    return best, list(tried.values())


def _next_index(predicted: np.ndarray, target: float, offset: float, tried: dict) -> int:
    below = [(i, t.result.skip_ratio) for i, t in tried.items() if t.result.skip_ratio < target]
    above = [(i, t.result.skip_ratio) for i, t in tried.items() if t.result.skip_ratio > target]
    if below and above:
        (i0, r0), (i1, r1) = max(below, key=lambda x: x[1]), min(above, key=lambda x: x[1])
        p = predicted[i0] + (target - r0) / (r1 - r0) * (predicted[i1] - predicted[i0])
        lo, hi = sorted((i0, i1))
        inner = np.arange(lo + 1, hi)
        if inner.size == 0:
            return i0
        return int(inner[np.argmin(np.abs(predicted[inner] - p))])
    return int(np.argmin(np.abs(predicted + offset - target)))


def normalized_kl(res: QualityResult) -> float:
    """KL / skip_ratio**1.5, to compare trials that landed at slightly different ratios.

    KL grows faster than the ratio (Qwen2.5-1.5B, global threshold, ratio 0.154 -> 0.198:
    KL 0.300 -> 0.442, an exponent of 1.54), so plain KL per unit of skip favours whichever trial
    skipped less; the 1.5th power compares them on an equal footing."""
    return res.kl_mean / max(res.skip_ratio, 1e-9) ** 1.5


def decision_key(cfg: SkipConfig, n_layer: int) -> tuple:
    """Equal keys make equal skip decisions for every token: the hot layers that can trigger,
    their thresholds, the span, the last layer a skip can reach, warm-up and compensation
    (cold_start and cold_end matter only through these)."""
    th = layer_thresholds(cfg, n_layer)
    hot_end = n_layer - cfg.cold_end
    # A trigger on the last hot layer has nothing left to skip.
    fires = [layer for layer in range(cfg.cold_start, hot_end - 1) if not math.isnan(th[layer])]
    if not cfg.enabled or not fires:
        return ("dense",)
    reach = hot_end if cfg.span == 0 else min(hot_end, fires[-1] + cfg.span + 1)
    comp = None if cfg.compensation is None else np.asarray(cfg.compensation).tobytes()
    return (cfg.warmup, cfg.span, reach, tuple((f, float(th[f])) for f in fires), comp)


def predicted_cost_at(path: ProfilePath, ratio: float) -> Optional[float]:
    if not len(path.ratios) or path.ratios[-1] < ratio * 0.98:
        return None
    return float(path.costs[path.index_for(ratio)])
