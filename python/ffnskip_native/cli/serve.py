"""``ffnskip serve``: the OpenAI-compatible server (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import Optional

from .common import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (8080)")
    p.add_argument("--parallel", type=int, default=4, help="sequences decoded together (4)")
    p.add_argument("--n-ctx", type=int, default=2048, help="context per sequence (2048)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: physical cores)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max-queue", type=int, default=64, help="queued requests before 503 (64)")
    p.add_argument("--model-id", default=None, help="model name in the API (the file's stem)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="on SIGTERM, seconds running requests get to finish before they are cut (60)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import ServerConfig, create_app
    except ImportError as exc:
        raise UsageError(
            f"serve needs the serve extra (pip install 'ffnskip-native[serve]'): {exc}"
        ) from None
    for name in ("parallel", "n_ctx", "max_queue"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if not args.drain_timeout >= 0:
        raise UsageError("--drain-timeout must be >= 0")
    cfg = ServerConfig(
        model=args.model,
        n_parallel=args.parallel,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        api_key=args.api_key,
        max_queue=args.max_queue,
        model_id=args.model_id,
        drain_timeout=args.drain_timeout,
    )
    # uvicorn re-raises a caught SIGTERM once it has shut down, to the handler found at start;
    # this one turns it into exit status 0: the requests were drained, nothing failed.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: it stops accepting, lets running
    # responses finish (streams too: the app gives them drain_timeout), then runs the app's
    # shutdown, which stops the scheduler.
    uvicorn.run(
        create_app(cfg),
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=args.drain_timeout,
    )
    return 0


def _exit_cleanly(signum: int, frame: Optional[FrameType]) -> None:
    raise SystemExit(0)
