"""Runs a one-input test function under atheris when it is installed, else (or with --plain) as
a seeded random-mutation loop over a corpus directory. Shared by the fuzz/py harnesses."""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager


def instrumented(*packages: str) -> ContextManager[object]:
    """Import the code under test inside this: atheris then instruments its bytecode for
    coverage feedback (a no-op without atheris)."""
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=list(packages))


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """A few libFuzzer-like mutations: flip, set interesting values, insert, erase, splice."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and len(b) >= 8:
            v = rng.choice([0, 1, 0xFF, 0x7F, 0x80, 2**32 - 1, 2**63, 2**64 - 1, 2**31])
            at = rng.randrange(len(b) - 7)
            b[at : at + 8] = v.to_bytes(8, "little")
        elif op == 2:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and b:
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 4 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            b[pos:] = other[cut:]
        elif b:
            b[pos % len(b)] = rng.randrange(256)
    return bytes(b)


def plain_loop(
    fn: Callable[[bytes], None], corpus: Path | None, runs: int, seed: int, seconds: float
) -> None:
    """The corpus, then ``runs`` mutations of it (or as many as fit in ``seconds`` when > 0)."""
    rng = random.Random(seed)
    pool = [p.read_bytes() for p in sorted(corpus.iterdir())] if corpus else []
    pool = pool or [b""]
    t0 = time.monotonic()
    for data in pool:
        fn(data)
    i = 0
    while (i < runs) if seconds <= 0 else (time.monotonic() - t0 < seconds):
        fn(mutate(rng, rng.choice(pool), pool))
        i += 1
        if i % 1000 == 0:
            rate = i / (time.monotonic() - t0)
            print(f"#{i} plain-mutation runs, {rate:.0f}/s", file=sys.stderr)
    print(f"done: {i} runs in {time.monotonic() - t0:.1f} s", file=sys.stderr)


def run(fn: Callable[[bytes], None], argv: list[str]) -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--plain", action="store_true", help="random mutation loop, no atheris")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0, help="plain loop: run this long")
    known, rest = ap.parse_known_args(argv)
    try:
        import atheris
    except ImportError:
        atheris = None
    if known.plain or atheris is None:
        corpus = next((Path(a) for a in rest if not a.startswith("-")), None)
        plain_loop(fn, corpus, known.runs, known.seed, known.seconds)
        return
    atheris.Setup([sys.argv[0], *rest], fn)
    atheris.Fuzz()
