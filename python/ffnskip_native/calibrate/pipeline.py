"""``calibrate()``: the phases (phases.py) run in order, each timed, into a CalibrationResult."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import _core
from ..errors import InvalidArgumentError
from ..quality import QualityResult, TeacherForcedEval
from ..skip import SkipConfig
from .phases import (
    Budget,
    budget_ratio,
    compensate,
    dense_pass,
    held_out,
    search_paths,
    select,
    sensitivity,
)
from .results import CalibrationResult, ReportRow
from .search import ScoredConfig, normalized_kl
from .texts import mix_tokens


class _Timer:
    """Adds each phase's wall time to ``timings`` and logs its start and end."""

    def __init__(self, timings: dict[str, float], log: Callable[[str], None]) -> None:
        self.timings, self.log = timings, log

    def phase(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        self.timer.log(f"[{self.name}] ...")

    def __exit__(self, *exc: Any) -> None:
        dt = time.perf_counter() - self.t0
        self.timer.timings[self.name] = self.timer.timings.get(self.name, 0.0) + dt
        if exc[0] is None:
            self.timer.log(f"[{self.name}] done in {dt:.1f} s")


class Scorer:
    """The Evaluator of one calibration: scores configs against the dense references, runs each
    distinct (split, config) once, and keeps every run for the report's curve. Held-out runs
    record gates (for the per-layer skip frequency)."""

    def __init__(self, calib: TeacherForcedEval, heldout: TeacherForcedEval) -> None:
        self._evals = {"calib": calib, "heldout": heldout}
        self._cache: dict[tuple[str, str], QualityResult] = {}
        self.curve: list[dict[str, Any]] = []

    def __call__(self, split: str, method: str) -> Callable[[SkipConfig], QualityResult]:
        ev = self._evals[split]

        def run(cfg: SkipConfig) -> QualityResult:
            cfg = replace(cfg, record_gates=(split == "heldout"))
            key = (split, cfg.to_json())
            if key not in self._cache:
                res = self._cache[key] = ev.score(cfg, label=f"{split} {method}")
                self.curve.append(
                    {
                        "split": split,
                        "method": method,
                        "skip_ratio": res.skip_ratio,
                        "kl_mean": res.kl_mean,
                        "ppl_skip": res.ppl_skip,
                        "ppl_dense": res.ppl_dense,
                    }
                )
            return self._cache[key]

        return run


def _check_settings(
    target_skip: Optional[float],
    max_ppl_increase: Optional[float],
    max_kl: Optional[float],
    report_ratios: Sequence[float],
    calib_texts: Sequence[str],
    heldout_texts: Sequence[str],
    spans: Sequence[int],
) -> Optional[float]:
    """Reject impossible settings before any engine work; returns the target ratio (None with a
    quality budget)."""
    goals = [g for g in (target_skip, max_ppl_increase, max_kl) if g is not None]
    if len(goals) > 1:
        raise InvalidArgumentError("give one goal: --target-skip, --max-ppl-increase or --max-kl")
    if not goals:
        target_skip = 0.1
    if target_skip is not None and not 0.0 < target_skip < 1.0:
        raise InvalidArgumentError(f"--target-skip must be in (0, 1), got {target_skip}")
    for name, v in (("--max-ppl-increase", max_ppl_increase), ("--max-kl", max_kl)):
        if v is not None and not v > 0.0:
            raise InvalidArgumentError(f"{name} must be > 0 (impossible budget), got {v}")
    for r in report_ratios:
        if not 0.0 < r < 1.0:
            raise InvalidArgumentError(f"report ratios must be in (0, 1), got {r}")
    if not calib_texts:
        raise InvalidArgumentError("no calibration text given")
    if not heldout_texts:
        raise InvalidArgumentError("no held-out text given")
    if not spans or any(s < 0 for s in spans):
        raise InvalidArgumentError(f"spans must be >= 0, got {list(spans)}")
    return target_skip


def _budget(max_ppl_increase: Optional[float], max_kl: Optional[float]) -> Budget:
    def within(res: QualityResult) -> bool:
        if max_kl is not None:
            return res.kl_mean <= max_kl
        return res.ppl_skip / res.ppl_dense - 1.0 <= float(max_ppl_increase or 0.0)

    return within


def calibrate(
    model: str,
    calib_texts: Sequence[str],
    heldout_texts: Sequence[str],
    *,
    target_skip: Optional[float] = None,
    max_ppl_increase: Optional[float] = None,
    max_kl: Optional[float] = None,
    report_ratios: Sequence[float] = (),
    calib_tokens: int = 2048,
    heldout_tokens: int = 2048,
    ctx: int = 512,
    prompt_len: int = 64,
    warmup: int = 32,
    spans: Sequence[int] = (1, 2, 3),
    cold_ends: Sequence[int] = (0, 1, 2),
    paper_cold: tuple[int, int] = (2, 2),
    sensitivity_tokens: int = 384,
    candidates: int = 2,
    compensation: bool = True,
    tol: float = 0.005,
    max_match_runs: int = 3,
    backend: str = "cpu",
    n_threads: Optional[int] = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> CalibrationResult:
    """Search a skip profile for ``model`` (see the package docstring). Writes no files."""
    target_skip = _check_settings(
        target_skip, max_ppl_increase, max_kl, report_ratios, calib_texts, heldout_texts, spans
    )
    timings: dict[str, float] = {}
    timer = _Timer(timings, log)
    t_start = time.perf_counter()
    engine = _core.Engine(model, backend=backend, n_ctx=ctx, n_threads=n_threads or 0)
    try:
        n_layer = engine.n_layer
        hot = n_layer - paper_cold[0] - paper_cold[1]
        if hot < 2:
            raise InvalidArgumentError(
                f"the model has {n_layer} layers: cold regions {paper_cold[0]} + {paper_cold[1]} "
                f"leave {max(hot, 0)} hot layers, at least 2 are needed "
                "(lower --cold-start/--cold-end)"
            )
        cold_ends = [c for c in cold_ends if n_layer - c >= 3]
        if not cold_ends:
            raise InvalidArgumentError(f"the model has {n_layer} layers: too few to skip any FFN")
        if warmup >= ctx - prompt_len:
            raise InvalidArgumentError(
                f"--skip-warmup {warmup} leaves no gated token in windows of {ctx - prompt_len} "
                "generated tokens"
            )
        calib = mix_tokens(engine, calib_texts, calib_tokens)
        held = mix_tokens(engine, heldout_texts, heldout_tokens)
        for name, toks in (("calibration", calib), ("held-out", held)):
            if len(toks) < ctx:
                raise InvalidArgumentError(
                    f"the {name} text has {len(toks)} tokens; at least --ctx {ctx} are needed"
                )

        with timer.phase("dense+gates"):
            cal = dense_pass(engine, calib, ctx, prompt_len, warmup, progress, compensation)
            held_ref = dense_pass(engine, held, ctx, prompt_len, warmup, progress)

        with timer.phase("sensitivity"):
            sens = sensitivity(engine, calib, cal.gates, sensitivity_tokens, progress)

        scorer = Scorer(cal.eval, held_ref.eval)
        max_needed = max([target_skip or 0.0, *report_ratios]) + 0.05
        if target_skip is None:
            max_needed = 0.6
        with timer.phase("search"):
            paths = search_paths(cal.gates, sens, spans, cold_ends, paper_cold, warmup, max_needed)

        goal: dict[str, Any]
        budget: Optional[Budget] = None
        if target_skip is not None:
            goal = {"target_skip": target_skip}
            target = target_skip
        else:
            goal = {"max_ppl_increase": max_ppl_increase, "max_kl": max_kl}
            budget = _budget(max_ppl_increase, max_kl)
            with timer.phase("budget search"):
                target = budget_ratio(paths.greedy, budget, scorer("calib", "budget"), goal)
            log(f"budget allows a skip ratio of about {target:.3f}")

        rows: list[ReportRow] = []
        chosen: Optional[ScoredConfig] = None
        source = ""
        skip_freq: Optional[np.ndarray] = None
        for ratio in [target, *[r for r in report_ratios if abs(r - target) > 1e-9]]:
            with timer.phase(f"select@{ratio:.3f}"):
                sel = select(ratio, paths, scorer, candidates, tol, max_match_runs, budget, n_layer)
            win = sel.chosen
            held_methods = [
                ("calibrated", sel.path),
                ("paper", sel.paper_path),
                ("static", paths.static),
            ]
            if cal.ffn is not None:
                with timer.phase(f"compensation@{ratio:.3f}"):
                    comp_path, comp = compensate(
                        sel.path, win, cal.gates, cal.ffn, scorer("calib", "compensated")
                    )
                log(
                    f"compensation at {ratio:.3f}: KL {win.result.kl_mean:.4f} -> "
                    f"{comp.result.kl_mean:.4f} on the calibration text"
                )
                # Kept only where it wins (the rule); the uncompensated profile is still
                # reported on held-out text so the gain is visible.
                if normalized_kl(comp.result) < normalized_kl(win.result):
                    rows.append(
                        ReportRow(ratio, "calibrated-nocomp", "calib", win.result, win.config)
                    )
                    held_methods = [("calibrated", comp_path), ("calibrated-nocomp", sel.path)]
                    held_methods += [("paper", sel.paper_path), ("static", paths.static)]
                    win = comp
            rows.append(ReportRow(ratio, "calibrated", "calib", win.result, win.config))
            rows.append(ReportRow(ratio, "paper", "calib", sel.paper.result, sel.paper.config))
            with timer.phase(f"held-out@{ratio:.3f}"):
                held_rows, freq = held_out(
                    ratio, held_methods, sel.path, held_ref.gates, scorer, tol, max_match_runs
                )
            rows += held_rows
            if chosen is None:
                chosen, skip_freq = win, freq
                # Which search family the profile came from: a baseline can win the selection
                # (the search never returns a profile worse than them on the calibration text).
                source = sel.path.name
                if win.config.compensation is not None:
                    source += " + compensation"
        assert chosen is not None
        timings["total"] = time.perf_counter() - t_start
        profile = replace(chosen.config, record_gates=False)
        return CalibrationResult(
            model=str(model),
            n_layer=n_layer,
            goal=goal,
            profile=profile,
            rows=rows,
            curve=scorer.curve,
            calib_gates=cal.gates,
            heldout_gates=held_ref.gates,
            heldout_skip_freq=skip_freq,
            sensitivity=sens,
            static_order=paths.static_order,
            profile_source=source,
            timings=timings,
            settings={
                "calib_tokens": len(calib),
                "heldout_tokens": len(held),
                "ctx": ctx,
                "prompt_len": prompt_len,
                "warmup": warmup,
                "spans": list(spans),
                "cold_ends": list(cold_ends),
                "paper_cold": list(paper_cold),
                "sensitivity_tokens": sensitivity_tokens,
                "candidates": candidates,
                "compensation": compensation,
                "tol": tol,
                "threads": engine.n_threads,
                "backend": engine.backend,
            },
        )
    finally:
        engine.close()
