"""The calibration report: a text table and a four-panel PNG (matplotlib, the `calibrate` extra)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .results import CalibrationResult

METHODS = {
    "calibrated": "calibrated (per-layer)",
    "calibrated-nocomp": "calibrated, no compensation",
    "paper": "(a) paper, global threshold",
    "static": "(b) static FFN removal",
}


def _source_note(source: str) -> str:
    if not source.startswith(("global threshold", "static removal")):
        return ""  # one of the search's own families (greedy or tilted)
    if source.endswith("+ compensation"):
        return "  (a baseline's thresholds won; the search added the compensation)"
    return "  (no per-layer profile beat this baseline on the calibration text)"


def format_table(result: CalibrationResult) -> str:
    """Per target ratio and method: achieved ratio, perplexity, KL and top-1 agreement."""
    lines = [
        f"model    {result.model} ({result.n_layer} layers)",
        f"goal     {result.goal}",
        f"profile  span={result.profile.span} cold_start={result.profile.cold_start} "
        f"cold_end={result.profile.cold_end} warmup={result.profile.warmup}",
        f"source   {result.profile_source}{_source_note(result.profile_source)}",
        "",
        f"{'split':<8} {'target':>6} {'method':<30} {'ratio':>6} {'ppl dense':>9} "
        f"{'ppl skip':>9} {'Δppl':>7} {'KL':>8} {'top-1':>6}",
    ]
    for r in sorted(result.rows, key=lambda r: (r.split != "heldout", r.target)):
        q = r.result
        lines.append(
            f"{r.split:<8} {r.target:>6.3f} {METHODS.get(r.method, r.method):<30} "
            f"{q.skip_ratio:>6.3f} {q.ppl_dense:>9.3f} {q.ppl_skip:>9.3f} "
            f"{100 * (q.ppl_skip / q.ppl_dense - 1):>+6.2f}% {q.kl_mean:>8.4f} "
            f"{100 * q.top1_agreement:>5.1f}%"
        )
    th = result.profile.threshold_list()
    lines.append("")
    lines.append("thresholds  " + " ".join("-" if math.isnan(t) else f"{t:.3f}" for t in th))
    lines.append("timings     " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    return "\n".join(lines)


def plot_report(result: CalibrationResult, path: Path) -> None:
    """Gate distributions, per-layer skip frequency, quality vs skip with the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layer = result.n_layer
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    fig.suptitle(f"FFN-skip calibration: {Path(result.model).name}", fontsize=12)

    ax = axes[0][0]
    g = result.calib_gates.gates[result.calib_gates.past_warmup]
    lo = float(np.nanpercentile(g[:, 1:], 1)) if n_layer > 1 else 0.0
    ax.boxplot(
        [g[:, layer] for layer in range(n_layer)], positions=range(n_layer), showfliers=False
    )
    th = np.asarray(result.profile.threshold_list(), dtype=float)
    if th.size == n_layer:
        ax.scatter(range(n_layer), th, color="C3", marker="_", s=200, label="chosen threshold")
        ax.legend(loc="lower right")
    ax.set_ylim(max(lo - 0.02, -1.0), 1.0)
    ax.set_xlabel("layer")
    ax.set_ylabel("gate cos(h, h')")
    ax.set_title("per-layer gate values (dense, calibration text)")
    ax.set_xticks(range(0, n_layer, max(1, n_layer // 15)))

    ax = axes[0][1]
    if result.heldout_skip_freq is not None:
        ax.bar(range(n_layer), result.heldout_skip_freq, color="C0")
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of gated tokens skipped")
    ax.set_title("per-layer skip frequency (chosen profile, held-out)")
    ax2 = ax.twinx()
    sens = np.where(np.isfinite(result.sensitivity), result.sensitivity, np.nan)
    ax2.plot(range(n_layer), sens, color="C1", marker=".", label="sensitivity (KL per block)")
    ax2.set_yscale("log")
    ax2.legend(loc="upper right")

    for ax, split, metric, label in (
        (axes[1][0], "heldout", "ppl", "held-out perplexity"),
        (axes[1][1], "calib", "kl_mean", "calibration KL(dense || skip)"),
    ):
        for i, method in enumerate(("calibrated", "paper", "static")):
            pts = [
                c
                for c in result.curve
                if c["split"] == split and _method_group(c["method"]) == method
            ]
            if split == "calib" and method == "calibrated":
                pts = [c for c in result.curve if c["split"] == "calib"]
            if not pts:
                continue
            pts.sort(key=lambda c: c["skip_ratio"])
            y = [c["ppl_skip"] if metric == "ppl" else c["kl_mean"] for c in pts]
            ax.plot(
                [c["skip_ratio"] for c in pts],
                y,
                marker="o",
                linestyle="-" if split == "heldout" else "none",
                color=f"C{i}",
                label=METHODS[method] if split == "heldout" else "engine runs",
            )
        for r in result.rows:
            if r.split != split:
                continue
            y = r.result.ppl_skip if metric == "ppl" else r.result.kl_mean
            if r.method == "calibrated":
                ax.scatter([r.result.skip_ratio], [y], marker="*", s=250, color="C3", zorder=5)
        if metric == "ppl" and result.rows:
            ax.axhline(result.rows[-1].result.ppl_dense, color="gray", linestyle=":", label="dense")
        ax.set_xlabel("skip ratio")
        ax.set_ylabel(label)
        ax.set_title(f"quality vs skip ({split}); ★ chosen")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def _method_group(method: str) -> str:
    return method if method in METHODS else "calibrated"
