"""Stress test of the threading rule (issue 16, "done when"): threads randomly generate, chat,
take logits, cancel, close and change the skip policy on shared and private Generators.

It passes with no crash, no hang, only the expected typed errors (BusyError, CancelledError,
closed, superseded), every completed result equal to an undisturbed run (or, if something may
have cancelled it, a prefix of one), and anonymous RSS growing by less than --max-leak-mib
after a warm-up (measured with every Generator closed). Run by test_stress.py in a child
process, or directly:

    python tests/stress_generators.py MODEL.gguf --seconds 60 [--threads 8] [--seed N]

Exit status 0 (a JSON summary on the last line), 1 on failures, 2 on a hang (stacks dumped).
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import gc
import json
import os
import queue
import random
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np
from ffnskip_native import BusyError, CancelledError, Error, Generator, SkipConfig

N_CTX = 128
MAX_NEW = 4  # tokens per generation: many short operations, so many interleavings
PROMPTS = ["Hello", "1, 2, 3,", "The sky is"]
CHAT = [{"role": "user", "content": "Hi"}]
LOGIT_TEXT = "The quick brown fox"
# The policies the workers switch between, by the name of their reference results. None (the
# file's profile) is dense on SmolLM2, which stores none.
SKIPS: dict[str, Any] = {"dense": False, "skip": SkipConfig(warmup=0, threshold=0.5, span=2)}
SKIP_SETTINGS = [False, None, SKIPS["skip"]]
# Extra time a phase may take to wind down before it counts as a hang.
GRACE_S = float(os.environ.get("FFNSKIP_STRESS_GRACE_SECONDS", "120"))


def open_generator(path: str, skip: Any = False) -> Generator:
    return Generator(path, backend="cpu", n_ctx=N_CTX, n_threads=1, seed=0, skip=skip)


class References:
    """Undisturbed results, computed once on a private Generator: what every completed
    operation under stress must reproduce exactly (or a prefix of, when cancelled)."""

    def __init__(self, path: str) -> None:
        self.texts: dict[tuple[str, str, int], str] = {}
        with open_generator(path) as g:
            self.logit_ids = g.tokenize(LOGIT_TEXT)
            self.logits = g.logits(self.logit_ids, all_positions=True)
            self.ids = {p: g.tokenize(p) for p in PROMPTS}
            for name, skip in SKIPS.items():
                g.skip = skip
                for k in range(1, MAX_NEW + 1):
                    for p in PROMPTS:
                        text = "".join(g.generate(p, max_new_tokens=k, temperature=0.0))
                        self.texts[(name, p, k)] = text
                    answer = g.chat(CHAT, stream=False, max_new_tokens=k, temperature=0.0)
                    self.texts[(name, "chat", k)] = str(answer)

    def check_text(self, prompt: str, k: int, text: str, exact: bool) -> None:
        """``exact``: nobody could have cancelled it. Otherwise a prefix may be cut short."""
        refs = [self.texts[(name, prompt, k)] for name in SKIPS]
        if exact and text not in refs:
            raise AssertionError(f"{prompt!r} k={k}: {text!r} is none of {refs!r}")
        if not any(r.startswith(text) for r in refs):
            raise AssertionError(f"{prompt!r} k={k}: {text!r} is no prefix of {refs!r}")

    def check_logits(self, got: np.ndarray, all_positions: bool) -> None:
        want = self.logits if all_positions else self.logits[-1]
        if got.shape != want.shape or not np.all(np.abs(got - want) <= 1e-3):
            raise AssertionError(f"logits differ from the undisturbed run (shape {got.shape})")


class Stress:
    """One phase: ``threads`` workers sharing ``shared`` and owning one private Generator each."""

    def __init__(self, path: str, refs: References, threads: int, seed: int) -> None:
        self.path = path
        self.refs = refs
        self.n_threads = threads
        self.seed = seed
        self.slots_lock = threading.Lock()
        self.shared: list[Generator] = []
        self.handoff: queue.Queue[tuple[Any, str, int]] = queue.Queue(maxsize=8)
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stats_lock = threading.Lock()
        self.end = 0.0
        self.phase = 0

    # ---- bookkeeping ------------------------------------------------------------------------

    def note(self, action: str, outcome: str) -> None:
        with self.stats_lock:
            self.counts[action] += 1
            self.outcomes[outcome] += 1

    def fail(self, action: str, exc: BaseException) -> None:
        with self.stats_lock:
            self.failures.append(f"{action}: {''.join(traceback.format_exception(exc))}"[-4000:])

    def pick_shared(self, rng: random.Random) -> Generator:
        with self.slots_lock:
            return rng.choice(self.shared)

    # ---- actions: each returns normally or raises -----------------------------------------------

    def generate(self, g: Generator, rng: random.Random, exact: bool) -> None:
        prompt, k = rng.choice(PROMPTS), rng.randint(1, MAX_NEW)
        text = "".join(g.generate(prompt, max_new_tokens=k, temperature=0.0))
        self.refs.check_text(prompt, k, text, exact)

    def sample(self, g: Generator, rng: random.Random, exact: bool) -> None:
        text = "".join(g.generate(rng.choice(PROMPTS), max_new_tokens=MAX_NEW, temperature=0.8))
        assert isinstance(text, str)

    def chat(self, g: Generator, rng: random.Random, exact: bool) -> None:
        k = rng.randint(1, MAX_NEW)
        if rng.random() < 0.5:
            text = g.chat(CHAT, stream=False, max_new_tokens=k, temperature=0.0)
        else:
            text = "".join(g.chat(CHAT, max_new_tokens=k, temperature=0.0))
        self.refs.check_text("chat", k, str(text), exact)

    def partial(self, g: Generator, rng: random.Random, exact: bool) -> None:
        it = g.generate(rng.choice(PROMPTS), max_new_tokens=MAX_NEW, temperature=0.0)
        next(it, None)
        if rng.random() < 0.5:
            it.close()  # else abandoned: superseded later, or freed with it

    def hand_off(self, g: Generator, rng: random.Random, exact: bool) -> None:
        prompt, k = rng.choice(PROMPTS), rng.randint(1, MAX_NEW)
        it = g.generate(prompt, max_new_tokens=k, temperature=0.0)
        try:
            self.handoff.put_nowait((it, prompt, k))
        except queue.Full:
            it.close()

    def take_over(self, g: Generator, rng: random.Random, exact: bool) -> None:
        """Consume an iterator another thread created (and maybe started)."""
        try:
            it, prompt, k = self.handoff.get_nowait()
        except queue.Empty:
            return
        self.refs.check_text(prompt, k, "".join(it), exact=False)

    def logits(self, g: Generator, rng: random.Random, exact: bool) -> None:
        all_positions = rng.random() < 0.5
        got = g.logits(self.refs.logit_ids, all_positions=all_positions)
        self.refs.check_logits(got, all_positions)

    def tokenize(self, g: Generator, rng: random.Random, exact: bool) -> None:
        prompt = rng.choice(PROMPTS)
        ids = g.tokenize(prompt)
        assert ids == self.refs.ids[prompt] and g.detokenize(ids) == prompt, ids

    def set_skip(self, g: Generator, rng: random.Random, exact: bool) -> None:
        g.skip = rng.choice(SKIP_SETTINGS)

    def cancel(self, g: Generator, rng: random.Random, exact: bool) -> None:
        g.cancel()

    def close_shared(self, g: Generator, rng: random.Random, exact: bool) -> None:
        """Close a shared Generator while others use it, and put a fresh one in its place."""
        g.close()
        fresh = open_generator(self.path)
        with self.slots_lock:
            if g in self.shared:
                self.shared[self.shared.index(g)] = fresh
                fresh = None
        if fresh is not None:
            fresh.close()

    # ---- workers ------------------------------------------------------------------------------

    def worker(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{self.phase}-{index}")
        shared_actions: list[tuple[Callable[..., None], int]] = [
            (self.generate, 6),
            (self.sample, 2),
            (self.chat, 3),
            (self.partial, 2),
            (self.hand_off, 2),
            (self.take_over, 2),
            (self.logits, 4),
            (self.tokenize, 2),
            (self.set_skip, 3),
            (self.cancel, 3),
            (self.close_shared, 1),
        ]
        private_actions = [(self.generate, 4), (self.chat, 2), (self.logits, 2)]
        private: Optional[Generator] = None
        try:
            while time.monotonic() < self.end:
                use_private = rng.random() < 0.3
                if use_private:
                    if private is None or rng.random() < 0.1:
                        if private is not None and rng.random() < 0.5:
                            private.close()
                        private = open_generator(self.path)  # else freed by __del__
                    g = private
                    fns, weights = zip(*private_actions)
                else:
                    g = self.pick_shared(rng)
                    fns, weights = zip(*shared_actions)
                action = rng.choices(fns, weights)[0]
                name = ("private." if use_private else "shared.") + action.__name__
                try:
                    # Only its owner uses a private Generator: nothing may cancel, supersede or
                    # refuse its work, and its results must be exact.
                    action(g, rng, use_private)
                    self.note(name, "ok")
                except BaseException as e:
                    if use_private:
                        self.fail(name, e)
                    else:
                        self.expect_typed(name, e)
        finally:
            if private is not None:
                private.close()

    def expect_typed(self, name: str, exc: BaseException) -> None:
        """The errors a shared Generator may raise under the rule; anything else fails."""
        if isinstance(exc, BusyError):
            self.note(name, "busy")
        elif isinstance(exc, CancelledError):
            self.note(name, "cancelled")
        elif type(exc) is Error and "superseded" in str(exc):
            self.note(name, "superseded")
        elif type(exc) is Error and "closed" in str(exc):
            self.note(name, "closed")
        else:
            self.fail(name, exc)

    def run(self, seconds: float) -> bool:
        """One phase; False if a worker did not finish within GRACE_S after it."""
        self.phase += 1
        self.shared = [open_generator(self.path) for _ in range(2)]
        self.end = time.monotonic() + seconds
        workers = [
            threading.Thread(target=self.worker, args=(i,), daemon=True, name=f"stress-{i}")
            for i in range(self.n_threads)
        ]
        for w in workers:
            w.start()
        give_up = self.end + GRACE_S
        for w in workers:
            w.join(max(0.0, give_up - time.monotonic()))
        if any(w.is_alive() for w in workers):
            return False
        while not self.handoff.empty():
            it, _, _ = self.handoff.get_nowait()
            it.close()
        for g in self.shared:
            g.close()
        self.shared = []
        return True


def anon_rss_bytes() -> int:
    """Anonymous resident memory (mapped model pages excluded), after returning free heap to
    the OS: glibc keeps it in per-thread arenas, ASan in its quarantine and size-class caches
    (without the purge, a 30 s ASan run "grew" by 98 MiB while a plain one stayed flat)."""
    gc.collect()
    process = ctypes.CDLL(None)
    if hasattr(process, "__sanitizer_purge_allocator"):
        process.__sanitizer_purge_allocator()
    elif hasattr(process, "malloc_trim"):
        process.malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-leak-mib", type=float, default=50.0)
    args = ap.parse_args()
    seed = random.randrange(2**31) if args.seed is None else args.seed
    print(f"stress: seed {seed}, {args.threads} threads, {args.seconds:g} s", flush=True)
    # A hang the phases cannot see (the main thread itself stuck) still ends with stacks.
    faulthandler.dump_traceback_later(args.seconds + 2 * GRACE_S + 300, exit=True)

    refs = References(args.model)
    # A warm-up, then four equal phases; every Generator is closed after each, and the anonymous
    # RSS measured. Heap that is free but still resident in a thread's malloc arena varies by
    # ~25 MiB from one measurement to the next (measured: malloc's in-use bytes stay flat), so
    # the leak is the smallest of the last two measurements over the smallest of the first two.
    warm_s = min(max(2.0, 0.2 * args.seconds), args.seconds / 2)
    stress = Stress(args.model, refs, args.threads, seed)
    phases = []
    for seconds in [warm_s] + [(args.seconds - warm_s) / 4] * 4:
        t0 = time.monotonic()
        if not stress.run(seconds):
            print("stress: HANG: workers still running; their stacks:", flush=True)
            faulthandler.dump_traceback(all_threads=True)
            os._exit(2)  # not sys.exit: interpreter shutdown would wait on the stuck workers
        phases.append((time.monotonic() - t0, anon_rss_bytes()))
    rss = [p[1] for p in phases]
    leak = min(rss[-2:]) - min(rss[:2])
    if leak > args.max_leak_mib * 2**20:
        stress.failures.append(f"anonymous RSS grew by {leak / 2**20:.1f} MiB after warm-up")
    summary = {
        "seed": seed,
        "phase_seconds": [round(p[0], 1) for p in phases],
        "rss_anon_mib": [round(p[1] / 2**20, 1) for p in phases],
        "outcomes": dict(stress.outcomes),
        "actions": dict(stress.counts),
        "failures": len(stress.failures),
    }
    for f in stress.failures[:10]:
        print(f"stress: FAILURE {f}", flush=True)
    print(json.dumps(summary), flush=True)
    return 1 if stress.failures else 0


if __name__ == "__main__":
    sys.exit(main())
