"""Throughput of the CPU matmul kernels on SmolLM2-135M-sized matrices.

Decode (n_tok=1) cycles through enough copies of each matrix to defeat the caches, so its GB/s is
comparable with the streaming read bandwidth printed first. Prompt (n_tok=512) reports GFLOP/s
(2 * rows * cols * n_tok per matmul, 16-bit activation preparation included). All numbers are the
best of several rounds. On a shared machine, the 1-thread CPU-time column (thread CPU seconds, not
wall time) is the steadier measure of kernel efficiency.

    PYTHONPATH=python FFNSKIP_CORE_DIR=$PWD/build/dev-k16 python bench/bench_kernels.py
"""

from __future__ import annotations

import argparse

import numpy as np
from ffnskip_native import _core
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize

T = _core._testing

# (rows, cols): attention q/o, ffn gate/up, ffn down, output (tied embedding, Q8_0 in the file).
SHAPES = [(576, 576), (1536, 576), (576, 1536)]
OUTPUT = (49152, 576)
# f16 scale offsets inside the K-quant blocks, set to small finite values in random blocks.
K_SCALES = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def make_weight(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> bytes:
    if qtype in K_SCALES:  # gguf cannot quantize K-quants: random codes with sane scales
        bs, tb = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, (rows * cols // bs, tb), dtype=np.uint8)
        for off in K_SCALES[qtype]:
            scale = rng.uniform(1e-3, 1e-2, len(blocks)).astype(np.float16)
            blocks[:, off : off + 2] = scale.view(np.uint8).reshape(-1, 2)
        return blocks.tobytes()
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    return quantize(w, qtype).tobytes()


def bench(qtype: Q, rows: int, cols: int, threads: list[int], rng: np.random.Generator) -> None:
    w = make_weight(qtype, rows, cols, rng)
    copies = [w] + [bytes(w) + b"" for _ in range(max(0, (96 << 20) // len(w)))]
    copies = [bytes(bytearray(c)) for c in copies]  # distinct buffers, not one shared object
    for n_tok in (1, 512):
        x = rng.standard_normal((n_tok, cols)).astype(np.float32)
        ws = copies if n_tok == 1 else [w]
        reps = 5 if n_tok == 1 else 3
        for nt in threads:
            sec = T.bench_matmul(qtype, ws, rows, cols, x, n_threads=nt, reps=reps)
            cpu = T.bench_matmul(qtype, ws, rows, cols, x, n_threads=1, reps=reps, cpu_time=True)
            flop = 2.0 * rows * cols * n_tok
            print(
                f"{qtype.name:5s} {rows:6d}x{cols:<5d} n_tok={n_tok:<4d} threads={nt}  "
                f"{sec * 1e6:9.1f} us  {flop / sec / 1e9:7.1f} GFLOP/s  "
                f"{len(w) / sec / 1e9:6.2f} GB/s"
                + (f"  | 1-thread CPU time: {flop / cpu / 1e9:6.1f} GFLOP/s" if nt == 1 else "")
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q4_1,Q4_K,Q6_K,Q8_0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--simd", default="auto")
    args = ap.parse_args()
    if not T.set_simd_level(args.simd):
        raise SystemExit(f"this CPU cannot run SIMD level {args.simd!r}")
    threads = [int(t) for t in args.threads.split(",")]
    print(f"simd level: {_core.simd_level()}")
    for nt in threads:
        gbs = T.read_bandwidth(1 << 30, n_threads=nt, reps=3)
        print(f"read bandwidth, {nt} thread(s): {gbs:.2f} GB/s")
    rng = np.random.default_rng(0)
    for name in args.types.split(","):
        qtype = Q[name]
        for rows, cols in SHAPES:
            if cols % GGML_QUANT_SIZES[qtype][0] == 0:  # d = 576 is not a multiple of 256
                bench(qtype, rows, cols, threads, rng)
    bench(Q.Q8_0, *OUTPUT, threads, rng)


if __name__ == "__main__":
    main()
