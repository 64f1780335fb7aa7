"""Load test for `ffnskip serve`: N concurrent streaming clients, R requests in all.

    python bench/load_test.py --model model.gguf --parallel 4       # starts a server itself
    python bench/load_test.py --url http://127.0.0.1:8080 --server-pid PID

First every distinct prompt is sent alone, greedy (temperature 0): its text is the reference and
its inter-token times give one sequence's decode speed. Then `--clients` clients send
`--requests` streaming requests (prompts of mixed lengths, `--max-tokens` each) and every
completion must equal its prompt's reference text exactly (the batched step is batch-invariant).
Reports aggregate generated tokens/s over the loaded phase against the lone decode speed, p50/p99
time to first token and inter-token latency, and the server's RSS (VmRSS) after the first 100
requests and after all of them (when the server's pid is known). Traffic goes only to the given
URL; a server it starts listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx

# Mixed prompt lengths: a short question up to a few hundred tokens of running text.
_TEXT = (
    "The river rose through the night and by morning the lower streets of the town were under "
    "water. People carried what they could to the church on the hill, where the priest had "
    "opened the doors and lit the stoves. Nobody had seen a flood like it since the great storm "
    "sixty years before, when the old bridge was swept away and the mill burned. "
)
PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "Once upon a time, there was a",
    "Q: What is the boiling point of water at sea level?\nA:",
    _TEXT,
    _TEXT * 2 + "When the water went down,",
    _TEXT * 4 + "In the spring the town council decided",
    "Translate to French: Good morning, how are you?",
    _TEXT * 6 + "Years later, the children who had slept in the church",
    "A list of prime numbers: 2, 3, 5, 7,",
    _TEXT * 3 + "The priest wrote in his diary that",
]


@dataclass
class Result:
    prompt: int
    text: str = ""
    tokens: int = 0
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    error: Optional[str] = None


async def stream_one(
    client: httpx.AsyncClient, model: str, prompt_index: int, max_tokens: int
) -> Result:
    res = Result(prompt_index)
    body = {
        "model": model,
        "prompt": PROMPTS[prompt_index],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    last: Optional[float] = None
    pieces: list[str] = []
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    res.error = chunk["error"]["message"]
                    return res
                now = time.perf_counter()
                text = chunk["choices"][0]["text"]
                if text:
                    if last is None:
                        res.ttft = now - t0
                    else:
                        res.gaps.append(now - last)
                    last = now
                    pieces.append(text)
                if chunk.get("usage"):
                    res.tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    res.text = "".join(pieces)
    return res


def rss_mb(pid: Optional[int]) -> Optional[float]:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


async def decode_steps(client: httpx.AsyncClient) -> dict[str, dict[int, float]]:
    """The server's decode-only step counters (/metrics): tokens and seconds per batch size,
    and the prompt tokens it evaluated."""
    text = (await client.get("/metrics")).text
    out: dict[str, dict[int, float]] = {"tokens": {}, "seconds": {}, "prompt": {}}
    for m in re.finditer(
        r'^ffnskip_decode_step_(tokens|seconds)\{rows="(\d+)"\} (\S+)$', text, re.M
    ):
        out[m.group(1)][int(m.group(2))] = float(m.group(3))
    m = re.search(r"^ffnskip_prompt_tokens_evaluated (\S+)$", text, re.M)
    out["prompt"][0] = float(m.group(1)) if m else 0.0
    return out


def delta(after: dict[int, float], before: dict[int, float]) -> dict[int, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


async def run_load(args: argparse.Namespace, base: str, pid: Optional[int]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        # References, one request at a time: the texts, and a lone sequence's decode speed.
        refs: list[Result] = []
        for i in range(len(PROMPTS)):
            refs.append(await stream_one(client, model, i, args.max_tokens))
        bad = [r for r in refs if r.error]
        if bad:
            raise SystemExit(f"reference request failed: {bad[0].error}")
        lone_gaps = [g for r in refs for g in r.gaps]
        lone_tps = len(lone_gaps) / sum(lone_gaps)
        steps_lone = await decode_steps(client)

        results: list[Result] = []
        rss_100: Optional[float] = None
        next_index = 0
        lock = asyncio.Lock()

        async def worker() -> None:
            nonlocal next_index, rss_100
            while True:
                async with lock:
                    if next_index >= args.requests:
                        return
                    i = next_index
                    next_index += 1
                r = await stream_one(client, model, i % len(PROMPTS), args.max_tokens)
                results.append(r)
                if len(results) == min(100, args.requests):
                    rss_100 = rss_mb(pid)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        wall = time.perf_counter() - t0
        rss_end = rss_mb(pid)
        steps_end = await decode_steps(client)

    errors = [r.error for r in results if r.error]
    mismatches = [r.prompt for r in results if not r.error and r.text != refs[r.prompt].text]
    generated = sum(r.tokens for r in results)
    gaps = [g for r in results for g in r.gaps]
    ttfts = [r.ttft for r in results if not r.error]
    agg = generated / wall
    # Server side: decode-only steps of one row in the reference phase (the lone decode speed,
    # HTTP excluded) and of --parallel rows in the loaded phase; the loaded phase's share of
    # wall time in decode-only steps and the prompt tokens it evaluated.
    tok = delta(steps_end["tokens"], steps_lone["tokens"])
    sec = delta(steps_end["seconds"], steps_lone["seconds"])
    lone_step = steps_lone["tokens"].get(1, 0.0) / max(steps_lone["seconds"].get(1, 0.0), 1e-9)
    full = args.parallel
    full_step = tok.get(full, 0.0) / max(sec.get(full, 0.0), 1e-9)
    return {
        "requests": args.requests,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "completed": len(results) - len(errors),
        "errors": errors[:5],
        "n_errors": len(errors),
        "text_mismatches": len(mismatches),
        "generated_tokens": generated,
        "wall_s": round(wall, 2),
        "aggregate_tok_s": round(agg, 2),
        "lone_decode_tok_s": round(lone_tps, 2),
        "speedup": round(agg / lone_tps, 2),
        "server_lone_decode_step_tok_s": round(lone_step, 2),
        "server_full_decode_step_tok_s": round(full_step, 2),
        "decode_step_speedup": round(full_step / lone_step, 2) if lone_step else None,
        "decode_only_steps_share_of_wall": round(sum(sec.values()) / wall, 3),
        "prompt_tokens_evaluated": int(steps_end["prompt"][0] - steps_lone["prompt"][0]),
        "ttft_p50_s": round(pct(ttfts, 50), 4),
        "ttft_p99_s": round(pct(ttfts, 99), 4),
        "itl_p50_s": round(pct(gaps, 50), 4),
        "itl_p99_s": round(pct(gaps, 99), 4),
        "itl_mean_s": round(statistics.fmean(gaps), 4) if gaps else None,
        "rss_after_100_mb": None if rss_100 is None else round(rss_100, 1),
        "rss_after_all_mb": None if rss_end is None else round(rss_end, 1),
        "loadavg": os.getloadavg(),
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "ffnskip_native.cli", "serve", args.model, "--port", "0"]
    cmd += ["--parallel", str(args.parallel), "--n-ctx", str(args.n_ctx)]
    cmd += ["--max-queue", str(max(64, args.clients))]
    # stdout carries uvicorn's access log: one line per request, not wanted in the report.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            if m:
                found.append(m.group(1))
                ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise SystemExit("the server did not start within 120 s")
    base = found[0]
    deadline = time.monotonic() + 300
    while httpx.get(base + "/health").status_code != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the server did not load the model")
        time.sleep(0.2)
    return proc, base


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="a running server (else --model starts one on 127.0.0.1)")
    p.add_argument("--server-pid", type=int, help="the running server's pid, for its RSS")
    p.add_argument("--model", help="GGUF file for a server started here")
    p.add_argument("--parallel", type=int, default=4, help="--parallel of a server started here")
    p.add_argument("--n-ctx", type=int, default=2048, help="--n-ctx of a server started here")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    p.add_argument("--requests", type=int, default=200, help="requests in all (200)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (64)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, s (600)")
    p.add_argument("--json", help="write the report as JSON to this file")
    args = p.parse_args()
    if (args.url is None) == (args.model is None):
        p.error("give exactly one of --url and --model")
    proc: Optional[subprocess.Popen[str]] = None
    if args.model:
        proc, base = start_server(args)
        pid: Optional[int] = proc.pid
    else:
        base, pid = args.url.rstrip("/"), args.server_pid
    try:
        report = asyncio.run(run_load(args, base, pid))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = report["n_errors"] == 0 and report["text_mismatches"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
