"""`ffnskip bench`'s per-type decode-kernel bandwidth (kernel_bandwidth.py) and its text line."""

from __future__ import annotations

import math

from ffnskip_native.cli.bench import format_text
from ffnskip_native.kernel_bandwidth import KERNEL_TYPES, kernel_bandwidth


def test_kernel_bandwidth_measures_every_type_asked():
    got = kernel_bandwidth(KERNEL_TYPES, rows=8, cols=512, total_bytes=1 << 16, reps=1)
    assert list(got) == list(KERNEL_TYPES)
    assert all(math.isfinite(v) and v > 0 for v in got.values())


def test_bench_text_shows_each_type_and_the_read_bandwidth():
    r = {
        "model": "m.gguf",
        "backend": "cpu",
        "threads": 2,
        "simd": "avx2",
        "prompt_tok_s": 100.0,
        "n_prompt": 8,
        "dense_decode_tok_s": 20.0,
        "n_gen": 4,
        "bytes_per_token": 1e9,
        "ffn_bytes": 5e8,
        "bandwidth_gb_s": 20.0,
        "floor_tok_s": 20.0,
        "decode_fraction_of_floor": 1.0,
        "read_bandwidth_1thread_gbs": 15.25,
        "kernel_bandwidth_gbs": {"Q4_K": 12.34, "Q6_K": 9.87},
    }
    line = next(x for x in format_text(r).splitlines() if x.startswith("kernels"))
    assert "read 15.2" in line and "Q4_K 12.3" in line and "Q6_K 9.9" in line
