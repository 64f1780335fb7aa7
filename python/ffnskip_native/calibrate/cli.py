"""``ffnskip calibrate``: its arguments and what it does with them (the ``ffnskip`` entry point,
cli/, parses them and reports errors)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..cli.common import add_backend_args, positive_int
from ..errors import InvalidArgumentError
from ..skip_flags import OldSpelling
from .channel_pipeline import SEARCH_TOKENS
from .channel_search import DEFAULT_VARIANTS, Variant, parse_variant
from .kinds import KINDS, calibrate_kind, format_kind_table
from .output import write_outputs
from .pipeline import calibrate
from .report import format_table
from .texts import builtin_texts, read_texts


def _variants(text: str) -> list[Variant]:
    try:
        return [parse_variant(x.strip()) for x in text.split(",") if x.strip()]
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated number list: {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated integer list: {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="block",
        help="block: skip whole FFN blocks (kind 1); channel: channel-sparse FFN (kind 2); "
        "both: a block profile plus channel thresholds (default block)",
    )
    g = p.add_argument_group("goal (one; default --target-skip 0.1)").add_mutually_exclusive_group()
    g.add_argument(
        "--target-bytes",
        type=float,
        metavar="R",
        help="fraction of FFN weight bytes per generated token not read, as the engine counts "
        "them (the goal of --kind channel/both; with --kind block the skip ratio, which is the "
        "same where every layer's FFN has the same size)",
    )
    g.add_argument("--target-skip", type=float, help="best quality at this skip ratio")
    g.add_argument("--max-ppl-increase", type=float, help="most skipping with ppl <= (1+P) x dense")
    g.add_argument("--max-kl", type=float, help="most skipping with mean KL(dense||skip) <= K")
    t = p.add_argument_group("texts (default: the built-in prose/dialogue/code mix)")
    t.add_argument("--calib-text", action="append", metavar="FILE", help="repeatable")
    t.add_argument("--heldout-text", action="append", metavar="FILE", help="repeatable")
    t.add_argument("--calib-tokens", type=int, default=2048)
    t.add_argument("--heldout-tokens", type=int, default=2048)
    t.add_argument("--ctx", type=int, default=512, help="tokens per teacher-forced window")
    t.add_argument("--prompt-len", type=int, default=64, help="dense prompt tokens per window")
    s = p.add_argument_group("search")
    s.add_argument(
        "--skip-warmup", type=int, default=32, help="the profile's dense generated tokens first"
    )
    s.add_argument(
        "--warmup",
        dest="skip_warmup",
        type=int,
        action=OldSpelling,
        new="--skip-warmup",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    s.add_argument("--spans", type=_ints, default=[1, 2, 3], help="spans searched (default 1,2,3)")
    s.add_argument("--cold-ends", type=_ints, default=[0, 1, 2], help="cold_end values searched")
    s.add_argument("--cold-start", type=int, default=2, help="baseline (a)'s cold start")
    s.add_argument("--cold-end", type=int, default=2, help="baseline (a)'s cold end")
    s.add_argument("--sensitivity-tokens", type=int, default=384, help="0: estimate from gates")
    s.add_argument("--candidates", type=int, default=2, help="candidates verified by the engine")
    s.add_argument(
        "--no-compensation",
        action="store_true",
        help="do not try replacing skipped FFN blocks by their calibrated mean update",
    )
    s.add_argument("--tol", type=float, default=0.005, help="skip-ratio matching tolerance")
    s.add_argument("--max-match-runs", type=positive_int, default=3)
    s.add_argument("--report-ratios", type=_floats, default=[], help="e.g. 0.1,0.2")
    c = p.add_argument_group("channel sparsity (--kind channel/both)")
    c.add_argument(
        "--channel-variants",
        type=_variants,
        default=list(DEFAULT_VARIANTS),
        help="variants tried: gate, in_mid, in_mid@K (t_mid at K x t_in's quantile); default "
        + ",".join(v.name for v in DEFAULT_VARIANTS),
    )
    c.add_argument(
        "--search-tokens",
        type=int,
        default=SEARCH_TOKENS,
        help=f"calibration tokens each search run scores (default {SEARCH_TOKENS})",
    )
    c.add_argument("--byte-tol", type=float, default=0.01, help="byte-target matching tolerance")
    c.add_argument(
        "--block-share",
        type=float,
        default=0.2,
        help="--kind both: the block profile's share of the target (default 0.2)",
    )
    c.add_argument(
        "--no-block-baseline",
        action="store_true",
        help="do not run the block calibration that baseline (b) needs",
    )
    o = p.add_argument_group("output")
    o.add_argument("--profile", type=Path, help="profile JSON (default: MODEL_STEM.skip.json)")
    o.add_argument("--report-json", type=Path, help="full report JSON")
    o.add_argument("--plot", type=Path, help="report PNG (default: MODEL_STEM.calibration.png)")
    o.add_argument("--no-plot", action="store_true")
    o.add_argument("--write-gguf", type=Path, metavar="OUT", help="model copy with the profile")
    add_backend_args(p, backend="cpu")
    p.add_argument("--progress", action="store_true", help="progress bars (default: on a tty)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    if not model.is_file():
        raise InvalidArgumentError(f"model not found: {model}")
    calib = read_texts(args.calib_text or builtin_texts("calib"), "calibration")
    held = read_texts(args.heldout_text or builtin_texts("heldout"), "held-out")
    stem = model.name.removesuffix(".gguf")
    profile_path = args.profile or Path(f"{stem}.skip.json")
    plot_path = None if args.no_plot else (args.plot or Path(f"{stem}.calibration.png"))
    if args.kind != "block":
        if args.plot is not None:
            raise InvalidArgumentError("--plot is the block calibration's report (--kind block)")
        plot_path = None
        if args.target_bytes is None:
            raise InvalidArgumentError(f"--kind {args.kind} needs --target-bytes R")
    outs = [profile_path, args.report_json, plot_path, args.write_gguf]
    for out in outs:
        if out is not None and not Path(out).resolve().parent.is_dir():
            raise InvalidArgumentError(f"output directory does not exist: {Path(out).parent}")
        if out is not None and Path(out).is_dir():
            raise InvalidArgumentError(f"output is a directory, not a file name: {out}")
    if args.write_gguf is not None and Path(args.write_gguf).resolve() == model.resolve():
        raise InvalidArgumentError("--write-gguf must not be the input model")
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InvalidArgumentError(
                "the PNG report needs matplotlib: pip install 'ffnskip-native[calibrate]' "
                "(or pass --no-plot)"
            ) from None
    quiet = args.quiet
    progress = not quiet and (args.progress or sys.stderr.isatty())

    def log(msg: str) -> None:
        if not quiet:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    common = dict(
        calib_tokens=args.calib_tokens,
        heldout_tokens=args.heldout_tokens,
        ctx=args.ctx,
        prompt_len=args.prompt_len,
        backend=args.backend,
        n_threads=args.threads,
        progress=progress,
    )
    block_kwargs = dict(
        report_ratios=args.report_ratios,
        warmup=args.skip_warmup,
        spans=args.spans,
        cold_ends=args.cold_ends,
        paper_cold=(args.cold_start, args.cold_end),
        sensitivity_tokens=args.sensitivity_tokens,
        candidates=args.candidates,
        compensation=not args.no_compensation,
        tol=args.tol,
        max_match_runs=args.max_match_runs,
    )
    if args.kind == "block":
        target_skip = args.target_skip if args.target_bytes is None else args.target_bytes
        result = calibrate(
            str(model),
            calib,
            held,
            target_skip=target_skip,
            max_ppl_increase=args.max_ppl_increase,
            max_kl=args.max_kl,
            log=log,
            **block_kwargs,
            **common,
        )
        table = format_table(result)
    else:
        kind_result = calibrate_kind(
            args.kind,
            str(model),
            calib,
            held,
            args.target_bytes,
            block_share=args.block_share,
            block_baseline=not args.no_block_baseline,
            variants=args.channel_variants,
            search_tokens=args.search_tokens,
            byte_tol=args.byte_tol,
            block_kwargs=block_kwargs,
            log=log,
            **common,
        )
        result, table = kind_result, format_kind_table(kind_result)
    written = write_outputs(result, profile_path, args.report_json, plot_path, args.write_gguf)
    print(table)
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``ffnskip calibrate ARGS`` (for tools/calibrate.py and ``python -m
    ffnskip_native.calibrate``): the ``ffnskip`` entry point parses and reports errors."""
    from ..cli import main as ffnskip_main

    return ffnskip_main(["calibrate", *(sys.argv[1:] if argv is None else argv)])
