#!/usr/bin/env python3
"""Write tiny random models and their numpy-reference logits for tests/cpp/forward_test.cpp.

    python tests/cpp/make_forward_cases.py OUT_DIR

For each case OUT_DIR gets NAME.gguf (tools/make_test_model.py) and NAME.ref: the magic
b"FFNSREF1", int32 n_tok, n_prompt, n_vocab, int32 tokens[n_tok], then float32 logits
[n_tok][n_vocab] from tests/reference.py (float64, independent of the C++ engine), little-endian.
The cases cover the weight types of Q4_0/Q4_1/Q8_0/Q4_K_M/F16 files, both rope styles (llama:
NORM, qwen2: NEOX with q/k/v biases), gemma3's sliding-window layers, Mistral's window on every
layer and phi3's fused tensors with Phi-4-mini's partial rotary and rope magnitude; the shapes and
seed are those of tests/test_forward.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
import reference  # noqa: E402
from make_test_model import make_model  # noqa: E402

MAGIC = b"FFNSREF1"
N_TOKENS, N_PROMPT = 24, 20  # 20 batched (prompt matmuls, >= 16: the float GEMM), 4 decoded
CASES = [  # (name, arch, weight type, make_model arguments)
    ("llama-Q4_0", "llama", "Q4_0", {}),
    ("qwen2-Q4_1", "qwen2", "Q4_1", {}),
    ("llama-Q8_0", "llama", "Q8_0", {}),
    ("qwen2-Q4_K", "qwen2", "Q4_K", {}),
    ("llama-Q6_K", "llama", "Q6_K", {}),
    ("llama-F16", "llama", "F16", {}),
    ("gemma3-Q8_0", "gemma3", "Q8_0", {}),  # GeGLU, post-norms, window 8 over the 24 tokens
    # Mistral: a window of 8 on every layer.
    ("mistral-Q4_0", "llama", "Q4_0", {"extra_metadata": {"llama.attention.sliding_window": 8}}),
    # Phi-4-mini's rope: 12 of 16 head dimensions rotated, a magnitude of 1.2 on them only.
    (
        "phi3-Q8_0",
        "phi3",
        "Q8_0",
        {"n_rot": 12, "extra_metadata": {"phi3.rope.scaling.attn_factor": 1.2}},
    ),
]
K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}


def write_case(out_dir: Path, name: str, arch: str, wtype: str, extra: dict) -> Path:
    """Writes NAME.gguf and NAME.ref; returns the model's path."""
    shape = dict(n_embd=256, n_ff=512, n_head=4, n_head_kv=2) if wtype in K_TYPES else {}
    path = make_model(
        out_dir / f"{name}.gguf", arch=arch, wtype=wtype, n_layer=2, seed=7, **shape, **extra
    )
    ref = reference.load(path)
    tokens = np.random.default_rng(0).integers(0, ref.hp.n_vocab, N_TOKENS).astype("<i4")
    logits = np.asarray(ref.forward([int(t) for t in tokens]), dtype="<f4")
    header = np.array([N_TOKENS, N_PROMPT, ref.hp.n_vocab], dtype="<i4")
    with open(path.with_suffix(".ref"), "wb") as f:
        f.write(MAGIC + header.tobytes() + tokens.tobytes() + logits.tobytes())
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    reference.limit_blas_threads()
    for name, arch, wtype, extra in CASES:
        print(f"wrote {write_case(out_dir, name, arch, wtype, extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
