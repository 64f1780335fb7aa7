"""``calibrate_channel()``: kind 2 thresholds for a model-wide FFN byte target.

Phases (each timed):

1. record: |h|, |g| and |m| histograms of every layer over the calibration text (dense logits);
2. variants: each variant's uniform level (the same quantile in every layer) matched by the
   engine to the byte target on the search slice; the variant with the lower KL there goes on;
3. probes: per layer, KL to dense with only that layer sparsified at the uniform level;
4. greedy: the per-layer allocation path (channel_search.greedy_path), matched by the engine to
   the target; the lower KL of it and the uniform allocation is the profile;
5. held-out: the profile, and the uniform allocation matched to the profile's held-out bytes.

"Bytes saved" is always the engine's count (SkipStats.ffn_bytes_saved: 1 - FFN bytes read /
(generated tokens x dense FFN bytes), layout tables included). The search slice is pieces spread
over the calibration text (phases.sensitivity_windows); the held-out text is never searched on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import _core
from ..errors import InvalidArgumentError
from ..quality import QualityResult, TeacherForcedEval
from ..skip import SkipConfig
from .channel_search import (
    DEFAULT_VARIANTS,
    HIST_KEYS,
    LEVEL_STEP,
    MAX_LEVEL,
    ByteModel,
    GreedyPath,
    Variant,
    config_at,
    greedy_path,
    variant_energy,
)
from .phases import sensitivity_windows
from .results import ReportRow
from .texts import mix_tokens

Score = Callable[[SkipConfig], QualityResult]

# Calibration tokens each search run scores: the per-layer probes measure KLs of ~0.0015, which
# a few hundred tokens measure to +-30%. SmolLM2 at 26% of FFN bytes: the profile searched on 384
# tokens had perplexity +5.5% (KL 0.054) on the whole held-out text, the one searched on 768
# +4.0% (KL 0.057), i.e. equal within the held-out measurement's own noise; 768 costs 83 s for
# the whole calibration on an idle 2-core machine.
SEARCH_TOKENS = 768


def channel_only_base() -> SkipConfig:
    """The profile base of ``--kind channel``: no block skipping, and no warm-up, so that the
    bytes saved are those of every generated token (prompt tokens stay dense)."""
    return SkipConfig(threshold=math.nan, warmup=0, cold_start=0, cold_end=0)


def record_histograms(
    engine: _core.Engine, tokens: Sequence[int], ctx: int, prompt_len: int
) -> dict[str, np.ndarray]:
    """Every layer's |h|, |g|, |m| counts over the generated positions of each ctx window (all
    thresholds off: the FFN is dense while it is measured)."""
    rec = replace(channel_only_base(), record_channels=True).to_core()
    hists: dict[str, np.ndarray] = {}
    for w in range(len(tokens) // ctx):
        engine.logits(list(tokens[w * ctx : (w + 1) * ctx]), skip=rec, prompt_len=prompt_len)
        stats = engine.skip_stats()
        for key in HIST_KEYS:
            hists[key] = hists.get(key, 0) + np.asarray(stats[key], dtype=np.int64)
    return hists


def normalized_kl(res: QualityResult, target: float) -> float:
    """KL rescaled to the target bytes (runs land near, not on it): KL grows about like
    saved^3 for channel sparsity (issue 23's table: 25% -> 40% saved, KL x4-5)."""
    if res.ffn_bytes_saved <= 0:
        return math.inf
    return res.kl_mean * (target / res.ffn_bytes_saved) ** 3


@dataclass
class Matched:
    """A config matched to a byte target: its levels, config and result."""

    levels: np.ndarray
    config: SkipConfig
    result: QualityResult


def match_uniform(
    score: Score,
    make: Callable[[np.ndarray], SkipConfig],
    n_layer: int,
    target: float,
    tol: float,
    max_runs: int,
    model: Optional[ByteModel] = None,
    start: Optional[float] = None,
) -> Matched:
    """The uniform level whose engine-measured bytes saved is closest to ``target``: secant
    steps inside a shrinking bracket, at most ``max_runs`` engine runs."""
    lo, hi = (0.0, 0.0), (MAX_LEVEL + 0.05, math.inf)  # (level, saved)
    level = start if start is not None else min(target, MAX_LEVEL)
    best: Optional[Matched] = None
    for _ in range(max_runs):
        levels = np.full(n_layer, level)
        cfg = make(levels)
        res = score(cfg)
        if model is not None:
            model.add(level, res.layer_bytes_saved)
        if best is None or abs(res.ffn_bytes_saved - target) < abs(
            best.result.ffn_bytes_saved - target
        ):
            best = Matched(levels, cfg, res)
        if abs(res.ffn_bytes_saved - target) <= tol:
            break
        if res.ffn_bytes_saved < target:
            lo = (level, res.ffn_bytes_saved)
        else:
            hi = (level, res.ffn_bytes_saved)
        if math.isinf(hi[1]):
            slope = lo[1] / lo[0] if lo[0] > 0 else 1.0
            nxt = lo[0] + (target - lo[1]) / max(slope, 0.1)
        else:
            nxt = lo[0] + (target - lo[1]) * (hi[0] - lo[0]) / max(hi[1] - lo[1], 1e-9)
        nxt = min(max(nxt, lo[0] + 0.25 * LEVEL_STEP), hi[0] - 0.25 * LEVEL_STEP, MAX_LEVEL)
        if abs(nxt - level) < 1e-4 or nxt <= lo[0]:
            break
        level = nxt
    assert best is not None
    return best


def match_path(
    score: Score,
    make: Callable[[np.ndarray], SkipConfig],
    path: GreedyPath,
    target: float,
    tol: float,
    max_runs: int,
) -> Matched:
    """The greedy path's point whose engine-measured bytes saved is closest to ``target``:
    bisection over the path's steps, starting at the predicted one."""
    lo, hi = 0, len(path.saved) - 1
    i = path.index_for(target)
    best: Optional[Matched] = None
    for _ in range(max_runs):
        cfg = make(path.levels[i])
        res = score(cfg)
        if best is None or abs(res.ffn_bytes_saved - target) < abs(
            best.result.ffn_bytes_saved - target
        ):
            best = Matched(path.levels[i], cfg, res)
        if abs(res.ffn_bytes_saved - target) <= tol:
            break
        if res.ffn_bytes_saved < target:
            lo = i + 1
        else:
            hi = i - 1
        if lo > hi:
            break
        # Predicted bytes are off by a roughly constant factor: correct the target by it.
        want = target * path.saved[i] / max(res.ffn_bytes_saved, 1e-6)
        i = int(min(max(path.index_for(want), lo), hi))
    assert best is not None
    return best


@dataclass
class ChannelCalibration:
    """What calibrate_channel returns: the profile and everything measured on the way."""

    model: str
    n_layer: int
    target_bytes: float
    variant: Variant
    levels: np.ndarray
    profile: SkipConfig
    rows: list[ReportRow]
    variant_trials: dict[str, dict[str, Any]]
    probe_level: float
    probe_kl: np.ndarray
    allocation_source: str  # "greedy" or "uniform": which won on the search slice
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "channel",
            "model": self.model,
            "n_layer": self.n_layer,
            "target_bytes": self.target_bytes,
            "variant": self.variant.to_dict(),
            "allocation": self.allocation_source,
            "levels": [float(x) for x in self.levels],
            "profile": self.profile.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "variants": self.variant_trials,
            "probe_level": self.probe_level,
            "probe_kl": [float(x) for x in self.probe_kl],
            "timings_s": self.timings,
            "settings": self.settings,
        }


def _check(target: float, variants: Sequence[Variant], tol: float) -> None:
    if not 0.0 < target < MAX_LEVEL:
        raise InvalidArgumentError(f"--target-bytes must be in (0, {MAX_LEVEL}), got {target}")
    if not variants:
        raise InvalidArgumentError("no channel variant to try")
    if not 0.0 < tol < 0.1:
        raise InvalidArgumentError(f"byte tolerance must be in (0, 0.1), got {tol}")


def calibrate_channel(
    model: str,
    calib_texts: Sequence[str],
    heldout_texts: Sequence[str],
    target_bytes: float,
    *,
    base: Optional[SkipConfig] = None,
    variants: Sequence[Variant] = DEFAULT_VARIANTS,
    calib_tokens: int = 2048,
    heldout_tokens: int = 2048,
    ctx: int = 512,
    prompt_len: int = 64,
    search_tokens: int = SEARCH_TOKENS,
    tol: float = 0.01,
    max_match_runs: int = 4,
    backend: str = "cpu",
    n_threads: Optional[int] = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> ChannelCalibration:
    """Per-layer kind 2 thresholds saving ``target_bytes`` of the FFN bytes per generated token
    (see the module docstring); ``base`` carries the other fields of the profile (a block
    profile for ``--kind both``; default channel_only_base()). Writes no files.

    The search runs without ``base``'s warm-up: in its 128-token pieces of the calibration text
    a warm-up of 32 generated tokens would be a quarter of the tokens. With a warm-up the target
    so counts the tokens past it; the held-out runs use the profile as stored."""
    _check(target_bytes, variants, tol)
    base = base or channel_only_base()
    profile_warmup = base.warmup
    base = replace(base, warmup=0)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def phase(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        log(f"[{name}] done in {timings[name]:.1f} s")

    engine = _core.Engine(model, backend=backend, n_ctx=ctx, n_threads=n_threads or 0)
    try:
        n_layer = engine.n_layer
        calib = mix_tokens(engine, calib_texts, calib_tokens)
        held = mix_tokens(engine, heldout_texts, heldout_tokens)
        for name, toks in (("calibration", calib), ("held-out", held)):
            if len(toks) < ctx:
                raise InvalidArgumentError(
                    f"the {name} text has {len(toks)} tokens; at least --ctx {ctx} are needed"
                )
        t0 = time.perf_counter()
        hists = record_histograms(engine, calib, ctx, prompt_len)
        phase("record", t0)

        pieces = sensitivity_windows(len(calib), max(search_tokens, 16))
        width = pieces[0][1] - pieces[0][0]
        search = TeacherForcedEval(
            engine,
            [t for a, b in pieces for t in calib[a:b]],
            ctx=width,
            prompt_len=max(4, width // 8),
            progress=progress,
        )
        runs: list[dict[str, Any]] = []

        def score(cfg: SkipConfig) -> QualityResult:
            res = search.score(cfg)
            runs.append({"saved": res.ffn_bytes_saved, "kl": res.kl_mean})
            return res

        dense_bytes = np.asarray(engine.layer_ffn_bytes(), dtype=np.float64)
        weights = dense_bytes / dense_bytes.sum()

        def maker(variant: Variant) -> Callable[[np.ndarray], SkipConfig]:
            return lambda levels: config_at(base, variant, hists, levels)

        t0 = time.perf_counter()
        trials: dict[str, dict[str, Any]] = {}
        uniform: dict[Variant, Matched] = {}
        models: dict[Variant, ByteModel] = {}
        for v in variants:
            models[v] = ByteModel([], weights)
            m = match_uniform(
                score, maker(v), n_layer, target_bytes, tol, max_match_runs, models[v]
            )
            uniform[v] = m
            trials[v.name] = {
                "uniform_level": float(m.levels[0]),
                "calib": m.result.to_dict(),
                "reached": abs(m.result.ffn_bytes_saved - target_bytes) <= 2 * tol,
            }
            log(
                f"{v.name}: uniform level {m.levels[0]:.3f} saves {m.result.ffn_bytes_saved:.3f}, "
                f"KL {m.result.kl_mean:.4f}"
            )
        phase("variants", t0)
        reached = [v for v in variants if trials[v.name]["reached"]]
        if not reached:
            best = max(uniform.values(), key=lambda m: m.result.ffn_bytes_saved)
            raise InvalidArgumentError(
                f"--target-bytes {target_bytes} is not reachable: uniform channel sparsity up "
                f"to level {MAX_LEVEL} saved at most {best.result.ffn_bytes_saved:.3f}"
            )
        variant = min(reached, key=lambda v: normalized_kl(uniform[v].result, target_bytes))
        make = maker(variant)
        uni = uniform[variant]
        log(f"variant {variant.name}")

        t0 = time.perf_counter()
        probe_level = float(min(max(round(uni.levels[0] / LEVEL_STEP), 1) * LEVEL_STEP, MAX_LEVEL))
        probe_kl = np.zeros(n_layer)
        for layer in range(n_layer):
            levels = np.zeros(n_layer)
            levels[layer] = probe_level
            probe_kl[layer] = max(score(make(levels)).kl_mean, 1e-9)
        phase("probes", t0)

        t0 = time.perf_counter()
        grid = np.arange(0.0, MAX_LEVEL + 1e-9, LEVEL_STEP)
        energy = np.stack([variant_energy(variant, hists, np.full(n_layer, s)) for s in grid])
        path = greedy_path(
            probe_kl, probe_level, energy, models[variant], min(target_bytes + 0.15, 0.95)
        )
        greedy = match_path(score, make, path, target_bytes, tol, max_match_runs)
        phase("greedy", t0)
        close = [
            (name, m)
            for name, m in (("greedy", greedy), ("uniform", uni))
            if abs(m.result.ffn_bytes_saved - target_bytes) <= 2 * tol
        ] or [("uniform", uni)]
        source, chosen = min(close, key=lambda x: normalized_kl(x[1].result, target_bytes))
        log(
            f"greedy saves {greedy.result.ffn_bytes_saved:.3f} at KL {greedy.result.kl_mean:.4f}; "
            f"uniform {uni.result.ffn_bytes_saved:.3f} at KL {uni.result.kl_mean:.4f}: {source}"
        )
        rows = [
            ReportRow(target_bytes, "channel-greedy", "calib", greedy.result, greedy.config),
            ReportRow(target_bytes, "channel-uniform", "calib", uni.result, uni.config),
        ]

        t0 = time.perf_counter()
        profile = replace(chosen.config, warmup=profile_warmup)
        held_eval = TeacherForcedEval(engine, held, ctx, prompt_len, progress=progress)
        held_res = held_eval.score(profile)
        rows.append(ReportRow(target_bytes, "channel-calibrated", "heldout", held_res, profile))
        held_uni = match_uniform(
            held_eval.score,
            lambda levels: replace(make(levels), warmup=profile_warmup),
            n_layer,
            held_res.ffn_bytes_saved,
            tol / 2,
            max_match_runs,
            start=float(uni.levels[0]),
        )
        rows.append(
            ReportRow(target_bytes, "channel-uniform", "heldout", held_uni.result, held_uni.config)
        )
        phase("held-out", t0)
        timings["total"] = time.perf_counter() - t_start
        return ChannelCalibration(
            model=str(model),
            n_layer=n_layer,
            target_bytes=target_bytes,
            variant=variant,
            levels=chosen.levels,
            profile=profile,
            rows=rows,
            variant_trials=trials,
            probe_level=probe_level,
            probe_kl=probe_kl,
            allocation_source=source,
            timings=timings,
            settings={
                "calib_tokens": len(calib),
                "heldout_tokens": len(held),
                "search_tokens": len(pieces) * width,
                "ctx": ctx,
                "prompt_len": prompt_len,
                "tol": tol,
                "max_match_runs": max_match_runs,
                "variants": [v.name for v in variants],
                "engine_runs": len(runs),
                "threads": engine.n_threads,
                "backend": engine.backend,
            },
        )
    finally:
        engine.close()
