"""Several sequences in one engine: :class:`BatchGenerator`, the continuous-batching scheduler.

Each request gets a KV slot of a ``_core.BatchEngine``; :meth:`BatchGenerator.step` runs one
engine step over every active sequence (a prompt chunk of at most ``prompt_chunk`` tokens for a
sequence still reading its prompt, one token for each decoding one), samples the next token of
each with that request's own ``_core.Sampler`` and reports text pieces through the request's
``on_event``. Requests join at the next step and leave as soon as they finish, so a long prompt
is read in chunks between the others' tokens. A sequence's logits are bitwise the same whatever
else shares its steps (see Backend::forward_batch), so a greedy request gives the same text under
load as alone. A new prompt goes to the free slot whose cached tokens share the longest prefix
with it, and only the rest is evaluated.

The class is not thread-safe except :meth:`submit` and :meth:`cancel`: one thread (the server's
scheduler) calls :meth:`step`.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import ContextOverflowError, InvalidArgumentError
from .streaming import StopMatcher, Utf8Assembler

REPEAT_LAST_N = 64


@dataclass
class TokenLogprob:
    """The chosen token's log-probability and the ``top`` most likely alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class Event:
    """A piece of a request's output. ``finish`` is set on the last event ("stop", "length",
    "cancelled" or "error", the latter with ``error`` saying what failed); ``logprobs`` holds one
    entry per token whose text is in ``text`` when asked."""

    text: str
    finish: Optional[str] = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class Request:
    """One completion. ``prompt``: token ids (non-empty). ``logprobs``: None, or how many
    alternatives (0..20) to report per token. ``on_event`` is called from the stepping thread."""

    prompt: list[int]
    on_event: Callable[[Event], None]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    stop: Sequence[str] = ()
    logprobs: Optional[int] = None
    # Filled in by the generator.
    prompt_evaluated: int = 0  # prompt tokens actually evaluated (the rest came from the cache)
    completion_tokens: int = 0
    cancelled: bool = False


class _Active:
    def __init__(self, req: Request, slot: int, kept: int) -> None:
        self.req = req
        self.slot = slot
        self.pending = list(req.prompt[kept:])  # prompt tokens still to evaluate
        self.next_token: Optional[int] = None  # sampled, not yet evaluated
        self.sampler = _core.Sampler(secrets.randbits(64) if req.seed is None else req.seed)
        self.recent: deque[int] = deque(req.prompt[-REPEAT_LAST_N:], maxlen=REPEAT_LAST_N)
        self.text = Utf8Assembler()
        self.matcher = StopMatcher(list(req.stop))
        req.prompt_evaluated = len(self.pending)


class BatchGenerator:
    """Continuous batching over ``n_parallel`` KV slots of one model (CPU backend)."""

    def __init__(
        self,
        model: str,
        *,
        n_parallel: int = 4,
        n_ctx: int = 2048,
        n_threads: int = 0,
        backend: str = "cpu",
        prompt_chunk: int = 64,
    ) -> None:
        if isinstance(n_parallel, bool) or not isinstance(n_parallel, int) or n_parallel < 1:
            raise InvalidArgumentError(f"n_parallel must be an int >= 1, got {n_parallel!r}")
        if isinstance(prompt_chunk, bool) or not isinstance(prompt_chunk, int) or prompt_chunk < 1:
            raise InvalidArgumentError(f"prompt_chunk must be an int >= 1, got {prompt_chunk!r}")
        self.engine = _core.BatchEngine(model, backend, n_ctx, n_parallel, n_threads)
        self.tokenizer = _core.Tokenizer(model)
        self._eog = frozenset(self.tokenizer.eog_ids)
        # Each step's rows must fit the engine's step limit: one decode row per other slot.
        self.prompt_chunk = min(prompt_chunk, self.engine.max_step_tokens - n_parallel + 1)
        self._lock = threading.Lock()
        self._waiting: deque[Request] = deque()
        self._active: dict[int, _Active] = {}
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.prompt_evaluated = 0  # prompt tokens actually evaluated (prefix reuse skips some)
        # Steps that only decode, by their number of rows: tokens and seconds (the whole step:
        # engine, sampling, events). Their ratio is the served decode speed at that batch size.
        self.decode_step_tokens: dict[int, int] = {}
        self.decode_step_seconds: dict[int, float] = {}

    @property
    def n_ctx(self) -> int:
        return int(self.engine.n_ctx)

    @property
    def n_parallel(self) -> int:
        return int(self.engine.n_slots)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._active)

    def kv_usage(self) -> float:
        """Fraction of the KV cache held by active sequences."""
        used = sum(len(self.engine.cached(a.slot)) for a in list(self._active.values()))
        return used / (self.n_ctx * self.n_parallel)

    def submit(self, req: Request) -> None:
        """Queue ``req`` (thread-safe); it joins at a later step."""
        if not req.prompt:
            raise InvalidArgumentError("the prompt is empty")
        if len(req.prompt) > self.n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(req.prompt)} tokens does not fit in the context "
                f"(n_ctx={self.n_ctx})"
            )
        with self._lock:
            self._waiting.append(req)

    def cancel(self, req: Request) -> None:
        """Stop ``req`` (thread-safe): it leaves at the next step with finish "cancelled"."""
        req.cancelled = True

    def has_work(self) -> bool:
        return bool(self._active or self._waiting)

    # ---- the step ---------------------------------------------------------------------------

    def step(self) -> bool:
        """One engine step over the active sequences. Returns False when there was nothing to do.

        If the step raises, every active request is finished with an "error" event, its slot is
        emptied (its cache may be half written) and the exception propagates; queued requests
        stay queued, so the generator keeps serving."""
        try:
            return self._step()
        except Exception as exc:
            self._fail_active(f"{type(exc).__name__}: {exc}")
            raise

    def _fail_active(self, message: str) -> None:
        failed = list(self._active.values())
        self._active.clear()
        for a in failed:
            a.req.on_event(Event("", finish="error", error=message))
        for a in failed:
            self.engine.truncate(a.slot, 0)

    def _step(self) -> bool:
        t0 = time.perf_counter()
        self._admit()
        for a in [a for a in self._active.values() if a.req.cancelled]:
            self._finish(a, "cancelled", "")
        if not self._active:
            return False
        n_prompt = 0
        seqs = []
        order = []
        for a in self._active.values():
            if a.pending:
                chunk, a.pending = a.pending[: self.prompt_chunk], a.pending[self.prompt_chunk :]
                seqs.append((a.slot, chunk, -1, not a.pending))
                n_prompt += len(chunk)
            else:
                assert a.next_token is not None
                seqs.append((a.slot, [a.next_token], a.req.completion_tokens - 1, True))
            order.append(a)
        logits, _ = self.engine.step(seqs)
        row = 0
        for a, s in zip(order, seqs):
            if not s[3]:
                continue
            if s[2] < 0:
                self.prompt_tokens += len(a.req.prompt)
            self._advance(a, logits[row])
            row += 1
        self.prompt_evaluated += n_prompt
        if n_prompt == 0:
            # Seconds first: a reader (the server's /metrics) that sees a size's tokens finds
            # its seconds.
            n, dt = len(seqs), time.perf_counter() - t0
            self.decode_step_seconds[n] = self.decode_step_seconds.get(n, 0.0) + dt
            self.decode_step_tokens[n] = self.decode_step_tokens.get(n, 0) + n
        return True

    def _admit(self) -> None:
        with self._lock:
            while self._waiting and len(self._active) < self.n_parallel:
                req = self._waiting.popleft()
                if req.cancelled:
                    req.on_event(Event("", finish="cancelled"))
                    continue
                free = [s for s in range(self.n_parallel) if s not in self._active]
                try:
                    # The free slot whose cache shares the longest prefix with the prompt.
                    best = max(
                        free, key=lambda s: _common_prefix(self.engine.cached(s), req.prompt)
                    )
                    kept = self.engine.reuse_prefix(best, req.prompt)
                    self._active[best] = _Active(req, best, kept)
                except Exception as exc:
                    req.on_event(Event("", finish="error", error=f"{type(exc).__name__}: {exc}"))
                    raise

    def _advance(self, a: _Active, logits: npt.NDArray[np.float32]) -> None:
        req = a.req
        token = int(
            a.sampler.sample(
                logits,
                temperature=req.temperature,
                top_k=req.top_k,
                top_p=req.top_p,
                min_p=req.min_p,
                repetition_penalty=req.repetition_penalty,
                recent=list(a.recent) if req.repetition_penalty != 1.0 else [],
            )
        )
        if token in self._eog:
            self._finish(a, "stop", "")
            return
        req.completion_tokens += 1
        self.generated_tokens += 1
        a.recent.append(token)
        raw = self.tokenizer.token_to_bytes(token)
        piece, stopped = a.matcher.feed(a.text.feed(raw))
        lp = [self._logprob(logits, token, req.logprobs)] if req.logprobs is not None else []
        if stopped:
            self._finish(a, "stop", piece, lp)
            return
        used = len(req.prompt) + req.completion_tokens
        if req.completion_tokens >= req.max_tokens or used >= self.n_ctx:
            self._finish(a, "length", piece, lp)
            return
        a.next_token = token
        if piece or lp:
            req.on_event(Event(piece, logprobs=lp))

    def _finish(
        self, a: _Active, reason: str, piece: str, lp: Optional[list[TokenLogprob]] = None
    ) -> None:
        if reason != "cancelled" and not a.matcher.stopped:
            tail, _ = a.matcher.feed(a.text.flush())
            piece += tail + a.matcher.flush()
        del self._active[a.slot]
        a.req.on_event(Event(piece, finish=reason, logprobs=lp or []))

    def _logprob(self, logits: npt.NDArray[np.float32], token: int, k: int) -> TokenLogprob:
        x = logits.astype(np.float64)
        m = float(x.max())
        lse = m + math.log(float(np.exp(x - m).sum()))
        top: list[tuple[str, float]] = []
        if k > 0:
            idx = np.argpartition(-x, k)[:k]
            idx = idx[np.argsort(-x[idx])]
            top = [(self._text(int(i)), float(x[i] - lse)) for i in idx]
        return TokenLogprob(self._text(token), float(x[token] - lse), top)

    def _text(self, token: int) -> str:
        return self.tokenizer.token_to_bytes(token).decode("utf-8", errors="replace")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
