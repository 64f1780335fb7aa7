"""The phases of a calibration, one function each, in the order pipeline.calibrate runs them:

1. dense_pass: the dense reference and every layer's gate (and FFN output) on one text split;
2. sensitivity: what removing one layer's FFN costs, per layer;
3. search_paths: the surrogate search (search.py) builds the candidate profile families;
   (budget_ratio: with a quality budget instead of a target ratio, the ratio that budget allows;)
4. select: the engine verifies the best candidates and the baselines at one ratio;
5. compensate: the winner with its skipped blocks replaced by their mean update;
6. held_out: the chosen profile and the baselines matched to the ratio on held-out text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import _core
from .._util import progress_bar
from ..errors import InvalidArgumentError
from ..quality import QualityResult, TeacherForcedEval
from ..skip import SkipConfig
from .results import ReportRow
from .search import (
    GateSet,
    ProfilePath,
    ScoredConfig,
    compensated_path,
    cost_matrix,
    decision_key,
    global_threshold_path,
    greedy_path,
    match_ratio,
    normalized_kl,
    predicted_cost_at,
    static_removal_path,
    tilted_threshold_path,
)

# score(split, method) -> a function that scores one config on that split (split: "calib" or
# "heldout"; method: the label its runs carry in the report's curve).
Evaluator = Callable[[str, str], Callable[[SkipConfig], QualityResult]]
Budget = Callable[[QualityResult], bool]

# ---- 1. dense reference + gates -----------------------------------------------------------------


class _GateRecorder:
    """Engine stand-in for TeacherForcedEval's dense pass: thresholds that never fire give the
    dense logits bit for bit while the engine records every layer's gate, so the reference pass
    doubles as the gate-recording pass."""

    def __init__(self, engine: _core.Engine, record_ffn: bool = False) -> None:
        self._engine = engine
        n = engine.n_layer
        self._cfg = SkipConfig(
            threshold=[math.nan] * n,
            warmup=0,
            cold_start=0,
            cold_end=0,
            record_gates=True,
            record_ffn=record_ffn,
        ).to_core()
        self.gates: list[np.ndarray] = []
        self.ffn: list[np.ndarray] = []  # per window (tokens, n_layer, n_embd), float16

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def logits(
        self, tokens: Any, all_positions: bool = False, skip: Any = None, prompt_len: Any = None
    ):
        out = self._engine.logits(
            tokens, all_positions=all_positions, skip=self._cfg, prompt_len=prompt_len
        )
        stats = self._engine.skip_stats()
        self.gates.append(np.array(stats["gates"], dtype=np.float32))
        if "ffn_out" in stats:  # half precision: only means are taken of it
            self.ffn.append(stats["ffn_out"].astype(np.float16))
        return out


@dataclass
class DenseReference:
    """One text split's dense pass: the evaluator that scores configs against it, the gates
    the policy sees, and (when recorded) every FFN output, for the compensation."""

    eval: TeacherForcedEval
    gates: GateSet
    ffn: Optional[np.ndarray] = None  # (tokens, n_layer, n_embd) float16


def dense_pass(
    engine: _core.Engine,
    tokens: list[int],
    ctx: int,
    prompt_len: int,
    warmup: int,
    progress: bool,
    record_ffn: bool = False,
) -> DenseReference:
    """Dense reference + gates (and with record_ffn every FFN output)."""
    rec = _GateRecorder(engine, record_ffn)
    ev = TeacherForcedEval(rec, tokens, ctx, prompt_len, progress=progress)  # type: ignore[arg-type]
    ev.engine = engine
    ffn = np.concatenate(rec.ffn) if rec.ffn else None
    return DenseReference(ev, GateSet.from_windows(rec.gates, warmup), ffn)


# ---- 2. sensitivity -----------------------------------------------------------------------------

# The sensitivity sample is split into pieces spread evenly over the calibration text: the
# text is a mix of genres laid end to end, and a layer's cost differs by up to 8x between them
# (Qwen2.5-1.5B, layer 1's FFN removed: KL 0.014 on code, 0.12 on dialogue, 0.11 on prose).
# A prefix sample saw only code and ranked the early layers as the cheapest to skip.
SENSITIVITY_PIECES = 3
MIN_SENSITIVITY_PIECE = 32


def sensitivity_windows(n_text: int, n_tokens: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of the sensitivity sample: about ``n_tokens`` tokens in up to
    SENSITIVITY_PIECES equal pieces, the first at the text's start, the last at its end."""
    n_tokens = min(n_tokens, n_text)
    pieces = max(1, min(SENSITIVITY_PIECES, n_tokens // MIN_SENSITIVITY_PIECE))
    width = n_tokens // pieces
    starts = np.linspace(0, n_text - width, pieces).round().astype(int)
    return [(int(s), int(s) + width) for s in starts]


def sensitivity(
    engine: _core.Engine, tokens: list[int], gs: GateSet, n_tokens: int, progress: bool
) -> np.ndarray:
    """KL per skipped block when layer l's FFN is removed for every token (layer 0 has no
    trigger layer, so it can never be skipped), averaged over pieces of the whole calibration
    text (sensitivity_windows). Without a budget: the layer's mean 1 - g."""
    n_layer = gs.n_layer
    update = np.clip(1.0 - gs.gates[gs.past_warmup], 0.0, None).mean(axis=0).astype(np.float64)
    if n_tokens <= 0:
        return update
    evals = [
        TeacherForcedEval(engine, tokens[a:b], ctx=b - a, prompt_len=max(4, (b - a) // 8))
        for a, b in sensitivity_windows(len(tokens), n_tokens)
    ]
    # Pieces weigh by their scored tokens.
    weights = np.array([ev.n_scored for ev in evals], dtype=np.float64)
    weights /= weights.sum()
    sens = np.full(n_layer, np.inf)
    with progress_bar(n_layer - 1, "sensitivity", progress) as bar:
        for layer in range(1, n_layer):
            th = [math.nan] * n_layer
            th[layer - 1] = -1.0
            cfg = SkipConfig(threshold=th, span=1, warmup=0, cold_start=0, cold_end=0)
            # Every scored token skipped exactly this one block.
            kl = float(weights @ [ev.score(cfg).kl_mean for ev in evals])
            sens[layer] = max(kl, 1e-9)
            bar.update()
    return sens


# ---- 3. search ----------------------------------------------------------------------------------

# How far the tilted family moves thresholds by sensitivity (search.tilted_threshold_path).
# Qwen2.5-1.5B at 20%, calibration KL / ratio^1.5: 4.91 at beta 0 (the global threshold), 4.51
# at 0.3, 4.60 at 0.6; held-out perplexity 14.69 / 14.37 / 14.97.
TILT_BETA = 0.3


@dataclass
class SearchPaths:
    """The candidate profile families of the surrogate search, and the two baselines."""

    greedy: list[ProfilePath]  # one per (span, cold_end)
    tilted: list[ProfilePath]  # sensitivity-tilted global threshold, one per span
    paper: list[ProfilePath]  # baseline (a): the paper's global threshold, one per span
    static: ProfilePath  # baseline (b): static removal of the highest-gate FFN blocks
    static_order: list[int] = field(default_factory=list)  # layers in the order (b) removes them


def search_paths(
    gs: GateSet,
    sens: np.ndarray,
    spans: Sequence[int],
    cold_ends: Sequence[int],
    paper_cold: tuple[int, int],
    warmup: int,
    max_ratio: float,
) -> SearchPaths:
    """Every family on the calibration gates: the greedy path per (span, cold_end) up to
    ``max_ratio``, the tilted and the global threshold per span, and static removal."""
    cost = cost_matrix(gs, sens)
    greedy = [greedy_path(gs, cost, s, ce, warmup, max_ratio) for s in spans for ce in cold_ends]
    paper = [global_threshold_path(gs, s, paper_cold[0], paper_cold[1], warmup) for s in spans]
    static, order = static_removal_path(gs, warmup)
    tilted = [
        tilted_threshold_path(gs, sens, cost, s, paper_cold[0], paper_cold[1], warmup, TILT_BETA)
        for s in spans
    ]
    return SearchPaths(greedy, tilted, paper, static, order)


def budget_ratio(
    paths: list[ProfilePath],
    within: Budget,
    ev: Callable[[SkipConfig], QualityResult],
    goal: dict[str, Any],
    steps: int = 6,
) -> float:
    """The largest skip ratio whose profile stays within the budget: bisection over the path
    with the lowest predicted loss, scored by the engine on the calibration text."""
    ref = 0.1
    scored = [(c, p) for p in paths if (c := predicted_cost_at(p, ref)) is not None]
    path = min(scored, key=lambda x: x[0])[1] if scored else max(paths, key=lambda p: len(p.ratios))
    if not len(path.configs):
        raise InvalidArgumentError("no skip profile could be built for this model")
    lo, hi = -1, len(path.configs) - 1
    first = ev(path.configs[0])
    if not within(first):
        raise InvalidArgumentError(
            f"impossible budget {goal_text(goal)}: the smallest profile found (skip ratio "
            f"{first.skip_ratio:.4f}) already costs KL {first.kl_mean:.4f}, perplexity "
            f"{100 * (first.ppl_skip / first.ppl_dense - 1):+.2f}%"
        )
    lo, best = 0, first
    for _ in range(steps):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        res = ev(path.configs[mid])
        if within(res):
            lo, best = mid, res
        else:
            hi = mid
    return float(best.skip_ratio)


def goal_text(goal: dict[str, Any]) -> str:
    if goal.get("max_kl") is not None:
        return f"--max-kl {goal['max_kl']}"
    return f"--max-ppl-increase {goal['max_ppl_increase']}"


# ---- 4. select ----------------------------------------------------------------------------------


@dataclass
class Selection:
    """The outcome of select at one ratio: the winner and the global-threshold baseline, each
    with the path it came from (matched to the ratio on the calibration text)."""

    path: ProfilePath
    chosen: ScoredConfig
    paper_path: ProfilePath
    paper: ScoredConfig


def select(
    ratio: float,
    paths: SearchPaths,
    evaluator: Evaluator,
    candidates: int,
    tol: float,
    max_runs: int,
    budget: Optional[Budget],
    n_layer: int,
) -> Selection:
    """Verify the best predicted calibrated candidates and the baselines at ``ratio`` on the
    calibration text. The best of the search's own candidates (static removal included) and
    the best global threshold are each matched to ``ratio``; the lower KL there wins
    (baselines are profiles too, so the result is never worse than them on this text)."""
    ranked = sorted(
        ((c, p) for p in paths.greedy if (c := predicted_cost_at(p, ratio)) is not None),
        key=lambda x: x[0],
    )
    # Paths that differ only in cold_end often pick the same profile: verify distinct ones.
    reachable: list[ProfilePath] = []
    seen: set[tuple] = set()
    for _, p in ranked:
        key = decision_key(p.configs[p.index_for(ratio)], n_layer)
        if key not in seen and len(reachable) < max(1, candidates):
            seen.add(key)
            reachable.append(p)
    if not reachable:
        best_r = max((float(p.ratios[-1]) for p in paths.greedy if len(p.ratios)), default=0.0)
        raise InvalidArgumentError(
            f"skip ratio {ratio:.3f} is not reachable with these settings: the search reached "
            f"at most {best_r:.3f} (a lower target, a smaller --skip-warmup or fewer cold layers)"
        )
    ev = evaluator("calib", "search")

    def first_runs(ps: list[ProfilePath]) -> list[tuple[ProfilePath, ScoredConfig]]:
        out = []
        for p in ps:
            if len(p.ratios) and p.ratios.max() >= ratio * 0.98:
                cfg = p.configs[p.index_for(ratio)]
                out.append((p, ScoredConfig(cfg, ev(cfg))))
        return out

    # The tilted family's predicted costs are in the greedy's units but the greedy minimises
    # them by construction, so the best tilted path is verified in its own right.
    tilted = [(c, p) for p in paths.tilted if (c := predicted_cost_at(p, ratio)) is not None]
    best_tilted = [min(tilted, key=lambda x: x[0])[1]] if tilted else []
    own = first_runs(reachable + best_tilted) + first_runs([paths.static])
    paper_runs = first_runs(paths.paper)

    Run = tuple[ProfilePath, ScoredConfig]

    def within(ts: list[Run]) -> list[Run]:
        return [t for t in ts if budget is None or budget(t[1].result)] or ts

    # The best of each family (first runs land at slightly different ratios, hence the
    # normalisation) is matched to the ratio; the two are then compared at that ratio.
    finals = []
    for family in (own, paper_runs):
        if family:
            path, _ = min(within(family), key=lambda t: normalized_kl(t[1].result))
            finals.append((path, match_ratio(path, path.ratios, ratio, ev, tol, max_runs)[0]))
    win_path, win = min(within(finals), key=lambda t: normalized_kl(t[1].result))
    paper_path, paper = finals[-1] if paper_runs else (win_path, win)
    return Selection(win_path, win, paper_path, paper)


# ---- 5. compensation ----------------------------------------------------------------------------


def compensate(
    path: ProfilePath,
    chosen: ScoredConfig,
    gs: GateSet,
    ffn: np.ndarray,
    score: Callable[[SkipConfig], QualityResult],
) -> tuple[ProfilePath, ScoredConfig]:
    """``path`` with its skipped blocks compensated (search.compensated_path), and the chosen
    config's compensated twin scored on the calibration text."""
    comp_path = compensated_path(path, gs, ffn)
    at = next(i for i, c in enumerate(path.configs) if c is chosen.config)
    comp = comp_path.configs[at]
    return comp_path, ScoredConfig(comp, score(comp))


# ---- 6. held-out --------------------------------------------------------------------------------


def held_out(
    ratio: float,
    methods: list[tuple[str, ProfilePath]],
    calibrated_base: ProfilePath,
    gs: GateSet,
    evaluator: Evaluator,
    tol: float,
    max_runs: int,
) -> tuple[list[ReportRow], Optional[np.ndarray]]:
    """Each method's path matched to ``ratio`` on the held-out text: its report rows, and the
    per-layer skip frequency of the calibrated profile there (None if not recorded)."""
    rows = []
    skip_freq = None
    for method, path in methods:
        # Compensation changes no threshold: the uncompensated path predicts the ratios.
        base = calibrated_base if method.startswith("calibrated") else path
        best, _ = match_ratio(
            path, base.ratios_on(gs), ratio, evaluator("heldout", method), tol, max_runs
        )
        rows.append(ReportRow(ratio, method, "heldout", best.result, best.config))
        if method == "calibrated" and best.result.gates is not None:
            g = best.result.gates
            past_warmup = gs.past_warmup[: len(g)]
            skip_freq = np.isnan(g[past_warmup]).mean(axis=0)
    return rows, skip_freq
