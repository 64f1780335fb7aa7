"""Decode-kernel bandwidth per quantized weight type, so that a slow type shows at once.

One thread runs the one-token matmul over matrices of random blocks (finite, positive f16 scales)
of each type, cycling through copies that together exceed ``total_bytes`` so that the weights
stream from DRAM, as in decode. The figure is matrix bytes / best time per matrix, in GB/s:
comparable with the 1-thread read bandwidth, the ceiling of a kernel that keeps up with memory.
"""

from __future__ import annotations

import numpy as np

from . import _core

# ggml type ids, block sizes (values, bytes) and the byte offsets of each block's f16 scales.
_TYPES: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "Q4_0": (2, 32, 18, (0,)),
    "Q4_1": (3, 32, 20, (0, 2)),
    "Q5_0": (6, 32, 22, (0,)),
    "Q8_0": (8, 32, 34, (0,)),
    "Q4_K": (12, 256, 144, (0, 2)),
    "Q5_K": (13, 256, 176, (0, 2)),
    "Q6_K": (14, 256, 210, (208,)),
}
KERNEL_TYPES = tuple(_TYPES)
# The types the AVX2 engine re-lays out at load (cpu/repack.h).
_GROUPED = ("Q4_0", "Q4_1", "Q4_K")


def _random_matrix(name: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    _, bs, tb, scales = _TYPES[name]
    nb = rows * cols // bs
    blocks = rng.integers(0, 256, (nb, tb), dtype=np.uint8)
    for off in scales:
        s = rng.uniform(1e-3, 1e-2, nb).astype(np.float16)
        blocks[:, off : off + 2] = s.view(np.uint8).reshape(nb, 2)
    return blocks


def kernel_bandwidth(
    types: tuple[str, ...] = KERNEL_TYPES,
    rows: int = 1536,
    cols: int = 1536,
    total_bytes: int = 512 << 20,
    reps: int = 3,
) -> dict[str, float]:
    """{type: GB/s} of the 1-thread one-token matmul on rows x cols matrices of each type.

    Q4_0, Q4_1 and Q4_K are measured in the grouped layout the AVX2 engine loads them into."""
    t = _core._testing
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    result: dict[str, float] = {}
    for name in types:
        qtype = _TYPES[name][0]
        one = _random_matrix(name, rows, cols, rng)
        n = max(1, total_bytes // one.nbytes)
        big = np.tile(one.reshape(1, -1), (n, 1))  # n distinct copies in one allocation
        copies = [big[i] for i in range(n)]
        grouped = name in _GROUPED and _core.simd_level() == "avx2"
        sec = t.bench_matmul(qtype, copies, rows, cols, x, n_threads=1, reps=reps, grouped=grouped)
        result[name] = one.nbytes / sec / 1e9
        del big, copies
    return result
