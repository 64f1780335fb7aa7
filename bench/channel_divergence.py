#!/usr/bin/env python3
"""Greedy generations with a file's stored skip profile against dense (issue 23): for each of 20
code prompts, how many generated text pieces (one per token, except where a multi-byte character
spans tokens) match the dense generation before the first divergence.

    python bench/channel_divergence.py PROFILE.gguf [--max-new-tokens 48] [--threads 2]

Prints one JSON object: per-prompt matching prefix lengths, their median and mean, and how many
generations matched dense to the end.
"""

from __future__ import annotations

import argparse
import json
import statistics

from ffnskip_native import Generator

PROMPTS = [
    "def fibonacci(n):\n",
    "def is_prime(n: int) -> bool:\n",
    "# Read a CSV file and print the sum of the second column\nimport csv\n",
    "class Stack:\n    def __init__(self):\n",
    "def binary_search(items, target):\n",
    "import json\n\ndef load_config(path):\n",
    "def reverse_words(sentence: str) -> str:\n",
    "def merge_sort(xs):\n",
    "# Count word frequencies in a text file\nfrom collections import Counter\n",
    'def flatten(nested):\n    """Flatten a list of lists."""\n',
    "async def fetch_all(urls):\n",
    "def gcd(a, b):\n",
    "class LinkedList:\n    class Node:\n",
    "def parse_args():\n    import argparse\n",
    "def matrix_multiply(a, b):\n",
    "def to_snake_case(name: str) -> str:\n",
    '# SQL: select the ten newest orders\nquery = """\n',
    "def memoize(fn):\n",
    "def quicksort(arr):\n",
    "function debounce(fn, ms) {\n",
]


def pieces(g: Generator, prompt: str, n: int) -> list[str]:
    return list(g.generate(prompt, max_new_tokens=n, temperature=0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    with Generator(a.model, n_threads=a.threads) as g:
        if g.skip is None:
            raise SystemExit(f"{a.model} stores no skip profile")
        matched, identical = [], 0
        for prompt in PROMPTS:
            g.skip = None  # the file's profile
            sparse = pieces(g, prompt, a.max_new_tokens)
            g.skip = False  # dense
            dense = pieces(g, prompt, a.max_new_tokens)
            k = 0
            while k < min(len(sparse), len(dense)) and sparse[k] == dense[k]:
                k += 1
            matched.append(k)
            identical += sparse == dense
    print(
        json.dumps(
            {
                "model": a.model,
                "max_new_tokens": a.max_new_tokens,
                "matched_before_divergence": matched,
                "median": statistics.median(matched),
                "mean": statistics.fmean(matched),
                "identical_to_the_end": identical,
            }
        )
    )


if __name__ == "__main__":
    main()
