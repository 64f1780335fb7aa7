"""`ffnskip serve` under faults: a failing engine step, a client that leaves, SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("sse_starlette")
pytest.importorskip("uvicorn")

import ffnskip_native  # noqa: E402
from ffnskip_native.server import ServerConfig, create_app  # noqa: E402

# The package root the subprocess server imports: the one this test imports.
PACKAGE_ROOT = Path(ffnskip_native.__file__).resolve().parents[1]


class _FailingEngine:
    """Delegates to the real BatchEngine; its next `fail` steps raise."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.fail = 0

    def step(self, seqs: Any) -> Any:
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("injected step failure")
        return self._engine.step(seqs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _app(path: Path, **cfg: Any) -> Any:
    return create_app(
        ServerConfig(str(path), n_parallel=2, n_ctx=256, **cfg), load_in_background=False
    )


def test_engine_failure_fails_its_requests_and_serving_goes_on(smollm2_path: Path) -> None:
    app = _app(smollm2_path)
    body = {"prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0}

    async def main() -> Any:
        async with app.router.lifespan_context(app):
            st = app.state.ffnskip
            engine = _FailingEngine(st.gen.engine)
            st.gen.engine = engine
            t = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=t, base_url="http://test", timeout=60) as c:
                # Bounded: before the fix the scheduler thread died and these waited forever.
                engine.fail = 1
                plain = await asyncio.wait_for(c.post("/v1/completions", json=body), 60)
                engine.fail = 1
                streamed = await asyncio.wait_for(
                    c.post("/v1/completions", json={**body, "stream": True}), 60
                )
                good = await asyncio.wait_for(c.post("/v1/completions", json=body), 60)
                return plain, streamed, good, st.sched.failed_steps, st.gen.active

    plain, streamed, good, failed_steps, active = asyncio.run(main())
    assert plain.status_code == 500
    assert "injected step failure" in plain.json()["error"]["message"]
    assert plain.json()["error"]["type"] == "server_error"
    data = [x[6:] for x in streamed.text.splitlines() if x.startswith("data: ")]
    assert len(data) == 1 and "injected step failure" in json.loads(data[0])["error"]["message"]
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 4
    assert failed_steps == 2 and active == 0


def test_non_streaming_client_disconnect_frees_its_slot(smollm2_path: Path) -> None:
    app = _app(smollm2_path)
    max_tokens = 200
    body = json.dumps({"prompt": "1, 2, 3,", "max_tokens": max_tokens, "temperature": 0})

    async def main() -> Any:
        async with app.router.lifespan_context(app):
            st = app.state.ffnskip
            calls = 0

            async def receive() -> dict[str, Any]:
                nonlocal calls
                calls += 1
                if calls == 1:
                    return {"type": "http.request", "body": body.encode(), "more_body": False}
                while st.gen.generated_tokens < 2:  # leave once decoding is under way
                    await asyncio.sleep(0.01)
                return {"type": "http.disconnect"}

            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v1/completions",
                "raw_path": b"/v1/completions",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"content-type", b"application/json")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "state": {},
                "app": app,
            }
            await asyncio.wait_for(app(scope, receive, send), timeout=120)
            deadline = time.monotonic() + 30
            while st.gen.active and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return st.gen.active, st.gen.generated_tokens

    active, generated = asyncio.run(main())
    assert active == 0
    # The request left long before its max_tokens (decoding stops within a step of leaving).
    assert generated < max_tokens


def test_sigterm_drains_a_running_stream_then_exits_0(smollm2_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    cmd = [sys.executable, "-m", "ffnskip_native.cli", "serve", str(smollm2_path)]
    cmd += ["--port", "0", "--parallel", "1", "--n-ctx", "256", "--drain-timeout", "120"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    port: list[int] = []
    found = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port.append(int(m.group(1)))
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not found.wait(0.2):
            assert proc.poll() is None, "the server exited at start"
            assert time.monotonic() < deadline, "the server did not start"
        base = f"http://127.0.0.1:{port[0]}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{base}/health").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.2)
        body = {"prompt": "1, 2, 3,", "max_tokens": 150, "temperature": 0, "stream": True}
        data: list[str] = []
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    data.append(line[6:])
                    if len(data) == 1:
                        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert last["usage"]["completion_tokens"] == 150
    assert last["choices"][0]["finish_reason"] == "length"
    assert rc == 0
