"""Where a serving step's time goes: the raw BatchEngine step at 1 and N decode rows, and the
BatchGenerator step (sampling, text pieces, events) over N decoding requests, interleaved.

    python bench/batch_step.py --model model.gguf --rows 4 --rounds 5

Each round times, back to back, `--steps` engine steps with one decode row, `--steps` with N rows,
and `--steps` BatchGenerator steps with N requests decoding (their prompts already read), so the
ratios come from the same stretch of machine load. Prints per round and the medians: ms per step,
tokens/s, the N-row / 1-row throughput ratio of the raw step, and the generator's overhead over the
raw N-row step. --cpu-time times process CPU time instead of wall time: with --threads 1 (the
step then runs on the calling thread) it is far less disturbed by other load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np
from ffnskip_native import _core
from ffnskip_native.batch import BatchGenerator, Event, Request

CLOCK: Callable[[], float] = time.perf_counter

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "The river rose through the night and",
    "A list of prime numbers: 2, 3, 5, 7,",
    "Q: What is the boiling point of water?\nA:",
    "Translate to French: Good morning",
]


def raw_steps(e: _core.BatchEngine, tok: _core.Tokenizer, rows: int, steps: int) -> float:
    """Seconds per engine step with `rows` greedy decode rows (prompts read outside the timing)."""
    slots = list(range(rows))
    prompts = [tok.encode(PROMPTS[s % len(PROMPTS)], add_special=True) for s in slots]
    for s in slots:
        e.truncate(s, 0)
    lg, _ = e.step([(s, p, -1, True) for s, p in zip(slots, prompts)])
    nxt = [int(np.argmax(lg[i])) for i in range(rows)]
    t0 = CLOCK()
    for k in range(steps):
        lg, _ = e.step([(s, [nxt[i]], k, True) for i, s in enumerate(slots)])
        nxt = [int(np.argmax(lg[i])) for i in range(rows)]
    return (CLOCK() - t0) / steps


def generator_steps(g: BatchGenerator, rows: int, steps: int) -> float:
    """Seconds per BatchGenerator step with `rows` requests decoding (their prompts read first)."""
    done: list[bool] = []

    def on_event(ev: Event) -> None:
        if ev.finish is not None:
            done.append(True)

    for s in range(rows):
        ids = g.tokenizer.encode(PROMPTS[s % len(PROMPTS)], add_special=True)
        g.submit(Request(ids, on_event, max_tokens=steps + 1, temperature=0.0))
    # Admit and read the prompts (one step), then every step decodes one token per request.
    g.step()
    t0 = CLOCK()
    for _ in range(steps):
        g.step()
    dt = (CLOCK() - t0) / steps
    while g.has_work():
        g.step()
    return dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=4, help="decode rows / requests per step (4)")
    p.add_argument("--steps", type=int, default=24, help="steps per measurement (24)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cpu-time", action="store_true", help="time process CPU time (--threads 1)")
    p.add_argument("--json", help="write the medians as JSON here")
    args = p.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    g = BatchGenerator(args.model, n_parallel=args.rows, n_ctx=512, n_threads=args.threads)
    g.engine.skip = None
    e, tok = g.engine, g.tokenizer
    rows: list[dict[str, float]] = []
    for r in range(args.rounds):
        one = raw_steps(e, tok, 1, args.steps)
        many = raw_steps(e, tok, args.rows, args.steps)
        gen = generator_steps(g, args.rows, args.steps)
        row = {
            "raw_1row_ms": one * 1e3,
            "raw_nrow_ms": many * 1e3,
            "gen_nrow_ms": gen * 1e3,
            "raw_ratio": args.rows * one / many,
            "gen_ratio": args.rows * one / gen,
        }
        rows.append(row)
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    med: dict[str, Any] = {k: round(statistics.median(x[k] for x in rows), 3) for k in rows[0]}
    med["rows"] = args.rows
    med["generator_overhead_ms"] = round(med["gen_nrow_ms"] - med["raw_nrow_ms"], 3)
    print(json.dumps(med, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(med, f, indent=2)


if __name__ == "__main__":
    main()
