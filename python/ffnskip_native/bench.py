"""`ffnskip bench`: prompt and decode speed, and decode speed against the bandwidth floor.

Every figure is measured in the same run: the memory read bandwidth of this machine (same thread
count), the weight bytes one decoded token reads, and so the floor = bandwidth / bytes per token.
With a skip profile (the model's stored one unless the skip flags say otherwise), decode is
measured with it and without it, in turn (interleaved), with the FFN bytes it read per token
(the engine's count), per layer, and its speed against the byte-saving ideal (profile_bytes).
With --skip-ratios, decode speed under forced FFN skipping is
compared with the byte-saving ideal 1 / (1 - skipped FFN bytes / bytes per token). With the
bandwidth figures come the 1-thread decode-kernel bandwidth of each quantized weight type
(kernel_bandwidth.py) and the 1-thread read bandwidth it is bounded by.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np

from . import _core
from .errors import InvalidArgumentError
from .kernel_bandwidth import kernel_bandwidth
from .skip import SkipConfig


def forced_skip(n_layer: int, ratio: float) -> tuple[SkipConfig, list[int]]:
    """A policy that skips round(ratio * n_layer) FFN blocks of every decoded token.

    Gate threshold -1 (always fires) on the layer before each chosen layer, NaN (never) elsewhere,
    span 1, no cold layers, no warm-up: the chosen layers are skipped, every other FFN runs.
    """
    k = int(round(ratio * n_layer)) if math.isfinite(ratio) else -1
    if not 0 <= k <= n_layer // 2:
        raise InvalidArgumentError(
            f"skip ratio {ratio} is not reachable with span 1 on {n_layer} layers "
            f"(at most {n_layer // 2 / n_layer:g})"
        )
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


def _time_interleaved(
    eng: Any, profile: SkipConfig, prompt: list[int], n_gen: int, repeat: int
) -> tuple[float, float, dict[str, Any]]:
    """Decode with ``profile`` and dense in turn, ``repeat`` times each (best of each kept): on
    a shared machine the two see the same load. Returns (profile tok/s, dense tok/s, the skip
    stats of the last profile run)."""
    core = profile.to_core()
    eng.set_skip(core)
    _time_decode(eng, prompt, min(n_gen, 4), 1)  # a profile's channel layouts are built here
    best_profile = best_dense = 0.0
    stats: dict[str, Any] = {}
    for _ in range(repeat):
        eng.set_skip(core)
        best_profile = max(best_profile, _time_decode(eng, prompt, n_gen, 1))
        stats = eng.skip_stats()
        eng.set_skip(None)
        best_dense = max(best_dense, _time_decode(eng, prompt, n_gen, 1))
    return best_profile, best_dense, stats


def profile_bytes(eng: Any, profile: SkipConfig, stats: dict[str, Any]) -> dict[str, Any]:
    """What decoding with ``profile`` read, from the engine's stats of one decode run.

    ``ideal_speedup`` = bytes_per_token / (bytes_per_token - FFN bytes not read per token):
    the speed-up of a decode whose time is proportional to the weight bytes it reads, all of
    them (attention, FFN, output row; bytes_per_token is the dense token's), over the same
    tokens as the measurement (a profile's warm-up tokens read every byte)."""
    tokens = max(int(stats["tokens"]), 1)
    read = float(np.sum(stats["ffn_bytes_read"])) / tokens
    dense_ffn = float(np.sum(stats["ffn_bytes_dense"]))
    per_token = float(eng.bytes_per_token())
    dense_layer = np.maximum(np.asarray(stats["ffn_bytes_dense"], dtype=np.float64), 1.0)
    layer_saved = 1.0 - np.asarray(stats["ffn_bytes_read"], dtype=np.float64) / (
        tokens * dense_layer
    )
    return {
        "config": profile.to_dict(),
        "skip_ratio": stats["skip_ratio"],
        "ffn_bytes_read_per_token": read,
        "ffn_bytes_dense_per_token": dense_ffn,
        "ffn_bytes_saved": stats["ffn_bytes_saved"],
        "layer_ffn_bytes_saved": [float(x) for x in layer_saved],
        "ideal_speedup": per_token / (per_token - (dense_ffn - read)),
    }


def run_bench(
    model: str,
    backend: str = "auto",
    threads: Optional[int] = None,
    n_prompt: int = 512,
    n_gen: int = 128,
    repeat: int = 3,
    skip_ratios: tuple[float, ...] = (),
    bandwidth: bool = True,
    profile: Optional[SkipConfig] = None,
) -> dict[str, Any]:
    """Every figure of `ffnskip bench` from one engine. ``decode_tok_s`` is decode with
    ``profile`` (the command passes the model's stored profile unless told otherwise) and
    ``dense_decode_tok_s`` without it; they are equal when ``profile`` is None. Prompt tokens
    are always dense, so ``prompt_tok_s`` is the dense figure."""
    for name, n in (("n_prompt", n_prompt), ("n_gen", n_gen), ("repeat", repeat)):
        if n < 1:
            raise InvalidArgumentError(f"{name} must be >= 1, got {n}")
    n_ctx = n_prompt + n_gen + 16
    eng = _core.Engine(model, backend=backend, n_ctx=n_ctx, n_threads=threads or 0)
    try:
        forced = [(ratio, *forced_skip(eng.n_layer, ratio)) for ratio in skip_ratios]
        rng = np.random.default_rng(0)
        prompt = [int(t) for t in rng.integers(0, eng.n_vocab, n_prompt)]
        eng.set_skip(None)
        _time_prompt(eng, prompt[:32], 1)  # warm the page cache and the thread pool
        result: dict[str, Any] = {
            "model": model,
            "backend": eng.backend,
            "threads": eng.n_threads,
            "simd": _core.simd_level(),
            "sparse_lanes": _core.sparse_lanes(),
            "gemm_lanes": _core.gemm_lanes(),
            "gemm_amx": _core.gemm_amx(),
            "n_layer": eng.n_layer,
            "n_prompt": n_prompt,
            "prompt_tok_s": _time_prompt(eng, prompt, repeat),
            "n_gen": n_gen,
            "dense_decode_tok_s": _time_decode(eng, prompt[:16], n_gen, repeat),
            "bytes_per_token": eng.bytes_per_token(),
            "ffn_bytes": eng.ffn_bytes(),
        }
        if bandwidth and eng.backend == "cpu":
            bw = _core.measure_read_bandwidth(eng.n_threads, 1 << 30, 5)
            result.update(bandwidth_gb_s=bw / 1e9, floor_tok_s=bw / result["bytes_per_token"])
            bw1 = _core.measure_read_bandwidth(1, 1 << 30, 5)
            result.update(
                read_bandwidth_1thread_gbs=bw1 / 1e9, kernel_bandwidth_gbs=kernel_bandwidth()
            )
        layer_ffn = eng.layer_ffn_bytes()
        skips = []
        for ratio, cfg, chosen in forced:
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
        dense = result["dense_decode_tok_s"]
        if skips:
            # Dense again after the skip runs, best of both: a machine that speeds up or slows
            # down during the run must not show up as a skip speed-up.
            dense = max(dense, _time_decode(eng, prompt[:16], n_gen, repeat))
            for s in skips:
                s["speedup"] = s["decode_tok_s"] / dense
                s["fraction_of_ideal"] = s["speedup"] / s["ideal_speedup"]
            result["skip"] = skips
        result["dense_decode_tok_s"] = result["decode_tok_s"] = dense
        if profile is not None:
            # The pair the profile is judged by comes from the interleaved runs alone: on a
            # shared machine a dense figure from another moment differs by up to 3x (SmolLM2,
            # 2 threads, load 11: 41 tok/s before, 13.8 tok/s interleaved).
            with_profile, dense, stats = _time_interleaved(eng, profile, prompt[:16], n_gen, repeat)
            prof = result["profile"] = profile_bytes(eng, profile, stats)
            result["dense_decode_tok_s"], result["decode_tok_s"] = dense, with_profile
            prof["speedup"] = with_profile / dense
            prof["fraction_of_ideal"] = prof["speedup"] / prof["ideal_speedup"]
        if "floor_tok_s" in result:
            # The floor counts every weight byte: it is the dense decode's.
            result["decode_fraction_of_floor"] = dense / result["floor_tok_s"]
        return result
    finally:
        eng.close()
