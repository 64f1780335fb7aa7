"""Decode speed of the channel-sparse FFN against dense decoding and the byte-saving ideal.

Thresholds come from quantiles of the model's own |h|, |g| and |m| on a short text (one
threshold quantile in every layer). For each variant and sparsity, dense and sparse decoding
alternate in one process (the machine is shared: interleaved A/B, best of --rounds), each
decoding --n-gen tokens of a fixed sequence one at a time. The ideal speed-up is
1 / (1 - saved / bytes_per_token): the FFN bytes the sparse decode does not read, over all
weight bytes a dense token reads (attention, FFN, output row), i.e. what a decode bound by the
weight bytes it streams would gain.

    PYTHONPATH=python FFNSKIP_CORE_DIR=$PWD/build/dev python bench/channel_decode.py MODEL.gguf
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from ffnskip_native import SkipConfig, _core
from ffnskip_native.channel_stats import channel_thresholds

NAN = float("nan")
TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp. From "
    "the top he could see the fishing boats coming home across the grey water, and the gulls "
    "circling above the harbour. def mean(values):\n    total = 0\n    for v in values:\n"
    "        total += v\n    return total / len(values)\n"
)


def thresholds(eng: Any, tokens: list[int], fraction: float) -> dict[str, list[float]]:
    rec = SkipConfig(threshold=NAN, warmup=0, record_channels=True)
    eng.logits(tokens, skip=rec.to_core(), prompt_len=8)
    st = eng.skip_stats()
    return {
        key: [float(t) for t in channel_thresholds(st[hist], fraction)]
        for key, hist in (("t_in", "hist_h"), ("t_gate", "hist_g"), ("t_mid", "hist_m"))
    }


def decode_seconds(eng: Any, cfg: SkipConfig | None, prompt: list[int], gen: list[int]) -> float:
    eng.reset()
    eng.set_skip(cfg.to_core() if cfg else None)
    eng.eval(prompt)
    start = time.perf_counter()
    for i, t in enumerate(gen):
        eng.eval_generated(t, i)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-gen", type=int, default=48)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--fractions", default="0.25,0.4,0.5")
    p.add_argument("--variants", default="in_mid,gate")
    args = p.parse_args()
    eng = _core.Engine(args.model, backend="cpu", n_ctx=512, n_threads=args.threads)
    tokens = eng.tokenize(TEXT, True, False)
    prompt, gen = tokens[:8], (tokens[8:] * 4)[: args.n_gen]
    bytes_per_token = eng.bytes_per_token()
    print(f"{args.model}: {args.threads} threads, {bytes_per_token / 1e6:.1f} MB/token dense")
    for fraction in (float(f) for f in args.fractions.split(",")):
        th = thresholds(eng, tokens, fraction)
        for variant in args.variants.split(","):
            keys = {"in_mid": ("t_in", "t_mid"), "gate": ("t_gate",), "all": tuple(th)}[variant]
            cfg = SkipConfig(threshold=NAN, warmup=0, **{k: th[k] for k in keys})
            dense, sparse = [], []
            decode_seconds(eng, cfg, prompt, gen[:4])  # builds the layouts before timing
            for _ in range(args.rounds):
                dense.append(decode_seconds(eng, None, prompt, gen))
                sparse.append(decode_seconds(eng, cfg, prompt, gen))
                saved = eng.skip_stats()["ffn_bytes_saved"]
            ffn_dense = sum(eng.layer_ffn_bytes())
            ideal = 1.0 / (1.0 - saved * ffn_dense / bytes_per_token)
            speedup = min(dense) / min(sparse)
            print(
                f"{variant:6s} fraction {fraction:.2f}: FFN bytes saved {saved:.3f}  "
                f"dense {len(gen) / min(dense):6.1f} tok/s  sparse {len(gen) / min(sparse):6.1f} "
                f"tok/s  speed-up x{speedup:.3f}  ideal x{ideal:.3f}  "
                f"({speedup / ideal:.2f} of ideal; median speed-up "
                f"x{np.median(dense) / np.median(sparse):.3f})"
            )


if __name__ == "__main__":
    main()
