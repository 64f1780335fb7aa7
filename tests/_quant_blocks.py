"""Random weight blocks of every supported ggml type, for the quants and kernel tests."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize

WEIGHT_TYPES = [
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q8_0,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
]
# Byte offsets of the f16 scale fields inside one block (random bytes there could be inf/NaN).
F16_FIELDS = {
    Q.Q8_0: (0,),
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


def block_size(qtype: Q) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def random_blocks(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, row_bytes) uint8: random codes with finite scales of random sign (+-[1e-3, 1e-1])."""
    if qtype == Q.F32:
        return rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint8)
    if qtype == Q.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    if qtype == Q.BF16:
        return quantize(rng.standard_normal((rows, cols)).astype(np.float32), Q.BF16)
    bs, tb = GGML_QUANT_SIZES[qtype]
    nb = rows * cols // bs
    blocks = rng.integers(0, 256, (nb, tb), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = rng.uniform(1e-3, 1e-1, nb) * rng.choice([-1.0, 1.0], nb)
        blocks[:, off : off + 2] = scale.astype(np.float16).view(np.uint8).reshape(nb, 2)
    return blocks.reshape(rows, -1)


def can_quantize(qtype: Q) -> bool:
    try:
        quantize(np.zeros((1, 256), np.float32), qtype)
    except NotImplementedError:
        return False
    return True
