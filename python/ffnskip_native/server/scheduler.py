"""The scheduler thread: steps the BatchGenerator while any request is queued or running, and
hands each request's events to its asyncio queue on the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Optional

from ..batch import BatchGenerator, Event, Request

log = logging.getLogger("ffnskip_native.server")


class Scheduler:
    def __init__(self, gen: BatchGenerator, max_queue: int) -> None:
        self.gen = gen
        self.max_queue = max_queue
        self._wake = threading.Event()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self.tokens_per_second = 0.0
        self.failed_steps = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ffnskip-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def full(self) -> bool:
        return self.gen.queue_depth >= self.max_queue

    def submit(self, req: Request, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Event]:
        """Queue req; its events arrive on the returned queue (last one has finish set)."""
        q: asyncio.Queue[Event] = asyncio.Queue()

        def on_event(ev: Event) -> None:
            # A closed loop means nobody waits for these events any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(q.put_nowait, ev)

        req.on_event = on_event
        self.gen.submit(req)
        self._wake.set()
        return q

    def _run(self) -> None:
        window_t, window_n = time.perf_counter(), self.gen.generated_tokens
        while not self._stop:
            try:
                worked = self.gen.step()
            except Exception:
                # The generator has finished the step's requests with an "error" event; the
                # thread lives on for the queued and later ones.
                log.exception("engine step failed")
                self.failed_steps += 1
                continue
            if not worked:
                self.tokens_per_second = 0.0
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                window_t, window_n = time.perf_counter(), self.gen.generated_tokens
                continue
            now = time.perf_counter()
            if now - window_t >= 1.0:
                self.tokens_per_second = (self.gen.generated_tokens - window_n) / (now - window_t)
                window_t, window_n = now, self.gen.generated_tokens
