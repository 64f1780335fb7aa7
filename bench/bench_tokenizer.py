"""Tokenizer encode throughput on English-like prose (MB/s of UTF-8 input).

PYTHONPATH=python:tests FFNSKIP_CORE_DIR=build/dev python bench/bench_tokenizer.py [model.gguf ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import smollm2_gguf  # noqa: E402
from ffnskip_native import _core  # noqa: E402
from tokenizer_corpus import build_corpus, english_text  # noqa: E402


def bench(path: str, text: str, repeats: int = 3) -> float:
    tok = _core.Tokenizer(path)
    tok.encode(text[:10000], add_special=False)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode(text, add_special=False)
        best = min(best, time.perf_counter() - t0)
    return len(text.encode()) / best / 1e6


def main() -> int:
    paths = sys.argv[1:] or [
        str(smollm2_gguf()),
        str(Path(__file__).resolve().parents[1] / "tests/data/qwen2.5-vocab.gguf"),
    ]
    english = english_text(4_000_000)
    # Code, Unicode and whitespace runs exercise the non-ASCII paths of the pre-tokenizers.
    mixed = "\n".join(build_corpus(n_random=20000, seed=99))
    for p in paths:
        for label, text in (("English", english), ("mixed corpus", mixed)):
            mb = len(text.encode()) / 1e6
            print(f"{Path(p).name}: {bench(p, text):.2f} MB/s encode ({mb:.1f} MB {label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
