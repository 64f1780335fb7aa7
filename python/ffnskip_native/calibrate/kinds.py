"""``ffnskip calibrate --kind channel|both``: kind 2 thresholds for a byte target, judged on
held-out text against (a) the uniform allocation and (b) the best block-skip profile at equal bytes.

- ``channel``: channel_pipeline.calibrate_channel on no block skipping;
- ``both``: the block calibration (pipeline.calibrate) at ``block_share`` x the target first, then
  kind 2 on top of its profile until the engine counts the whole target saved (on the tokens
  past the profile's warm-up, see calibrate_channel).

Baseline (b) is the block calibration run at the bytes the profile saved on the held-out text;
its held-out rows (calibrated, paper, static; each matched there) are FFN bytes saved too, since
a skipped block reads none of its bytes. The best of them by perplexity is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

from ..errors import InvalidArgumentError
from ..skip import SkipConfig
from .channel_pipeline import SEARCH_TOKENS, ChannelCalibration, calibrate_channel
from .channel_search import DEFAULT_VARIANTS, Variant
from .pipeline import calibrate
from .results import CalibrationResult, ReportRow

KINDS = ("block", "channel", "both")


@dataclass
class KindCalibration:
    """A ``--kind channel|both`` calibration: the kind 2 search, the block calibration ``both``
    started from, and baseline (b)."""

    kind: str
    channel: ChannelCalibration
    block: Optional[CalibrationResult]
    block_baseline: Optional[ReportRow]

    @property
    def model(self) -> str:
        return self.channel.model

    @property
    def profile(self) -> SkipConfig:
        return self.channel.profile

    def heldout(self, method: str) -> Optional[ReportRow]:
        return next(
            (r for r in self.channel.rows if r.split == "heldout" and r.method == method), None
        )

    def comparison(self) -> dict[str, Any]:
        """Held-out perplexity of the profile against the baselines at equal bytes."""

        def row(r: Optional[ReportRow]) -> Optional[dict[str, Any]]:
            if r is None:
                return None
            q = r.result
            return {
                "method": r.method,
                "ffn_bytes_saved": q.ffn_bytes_saved,
                "ppl_dense": q.ppl_dense,
                "ppl_skip": q.ppl_skip,
                "ppl_increase": q.ppl_skip / q.ppl_dense - 1.0,
                "kl_mean": q.kl_mean,
            }

        return {
            "calibrated": row(self.heldout("channel-calibrated")),
            "uniform": row(self.heldout("channel-uniform")),
            "block": row(self.block_baseline),
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.channel.to_dict()
        d["kind"] = self.kind
        d["heldout_comparison"] = self.comparison()
        if self.block is not None:
            d["block_calibration"] = self.block.to_dict()
        return d


def best_block_row(result: CalibrationResult) -> ReportRow:
    rows = result.rows_for("heldout")
    return min(rows, key=lambda r: r.result.ppl_skip)


def calibrate_kind(
    kind: str,
    model: str,
    calib_texts: Sequence[str],
    heldout_texts: Sequence[str],
    target_bytes: float,
    *,
    block_share: float = 0.2,
    block_baseline: bool = True,
    variants: Sequence[Variant] = DEFAULT_VARIANTS,
    search_tokens: int = SEARCH_TOKENS,
    byte_tol: float = 0.01,
    block_kwargs: Optional[dict[str, Any]] = None,
    log: Callable[[str], None] = lambda s: None,
    **common: Any,
) -> KindCalibration:
    """``common``: calib_tokens, heldout_tokens, ctx, prompt_len, backend, n_threads, progress
    (both searches); ``block_kwargs``: the rest of pipeline.calibrate's settings."""
    if kind not in ("channel", "both"):
        raise InvalidArgumentError(f"calibrate_kind: kind must be channel or both, got {kind!r}")
    if kind == "both" and not 0.0 < block_share < 1.0:
        raise InvalidArgumentError(f"--block-share must be in (0, 1), got {block_share}")
    block_kwargs = dict(block_kwargs or {})
    block = None
    base = None
    if kind == "both":
        log(f"[block] block profile at skip ratio {block_share * target_bytes:.3f}")
        block = calibrate(
            model,
            calib_texts,
            heldout_texts,
            target_skip=block_share * target_bytes,
            log=log,
            **block_kwargs,
            **common,
        )
        base = replace(block.profile, record_gates=False, record_ffn=False)
    channel = calibrate_channel(
        model,
        calib_texts,
        heldout_texts,
        target_bytes,
        base=base,
        variants=variants,
        search_tokens=search_tokens,
        tol=byte_tol,
        log=log,
        **common,
    )
    baseline = None
    held = next(r for r in channel.rows if r.method == "channel-calibrated")
    if block_baseline:
        ratio = held.result.ffn_bytes_saved
        log(f"[baseline] best block-skip profile at {ratio:.3f} of FFN bytes")
        try:
            res = calibrate(
                model,
                calib_texts,
                heldout_texts,
                target_skip=ratio,
                log=log,
                **block_kwargs,
                **common,
            )
            baseline = best_block_row(res)
        except InvalidArgumentError as exc:
            # Block skipping may not reach the ratio at all (too few hot layers): say so.
            log(f"[baseline] block skipping cannot be compared: {exc}")
    return KindCalibration(kind, channel, block, baseline)


def format_kind_table(result: KindCalibration) -> str:
    """The channel calibration's rows and the held-out comparison at equal bytes."""
    ch = result.channel
    lines = [
        f"model    {ch.model} ({ch.n_layer} layers)",
        f"kind     {result.kind}: FFN bytes saved target {ch.target_bytes:.3f} "
        f"(engine count, layout included)",
        f"variant  {ch.variant.name}, {ch.allocation_source} allocation",
        "",
        f"{'split':<8} {'method':<22} {'bytes saved':>11} {'ppl dense':>9} {'ppl skip':>9} "
        f"{'Δppl':>7} {'KL':>8} {'top-1':>6}",
    ]
    rows = sorted(ch.rows, key=lambda r: r.split != "heldout")
    if result.block_baseline is not None:
        rows.append(
            replace(result.block_baseline, method=f"block ({result.block_baseline.method})")
        )
    for r in rows:
        q = r.result
        lines.append(
            f"{r.split:<8} {r.method:<22} {q.ffn_bytes_saved:>11.3f} {q.ppl_dense:>9.3f} "
            f"{q.ppl_skip:>9.3f} {100 * (q.ppl_skip / q.ppl_dense - 1):>+6.2f}% "
            f"{q.kl_mean:>8.4f} {100 * q.top1_agreement:>5.1f}%"
        )
    lines.append("")
    lines.append("levels   " + " ".join(f"{x:.3f}" for x in ch.levels))
    lines.append("timings  " + ", ".join(f"{k} {v:.1f}s" for k, v in ch.timings.items()))
    return "\n".join(lines)
