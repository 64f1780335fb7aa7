"""The server replicated under Ray Serve: a local Ray instance, 2 replicas on SmolLM2 behind the
HTTP proxy on 127.0.0.1, concurrent greedy requests through it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("sse_starlette")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[serve,ray]')")
serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed")

import ffnskip_native  # noqa: E402
from ffnskip_native.errors import InvalidArgumentError  # noqa: E402
from ffnskip_native.server.ray_app import ServerConfig, build_app  # noqa: E402

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def fib(n):"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _replica_pids() -> list[int]:
    """The replica processes of the test's deployment (Ray titles them with its name)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"ServeReplica:default:ffnskip" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_build_app_checks_its_arguments(smollm2_path: Path) -> None:
    cfg = ServerConfig(str(smollm2_path), n_parallel=2)
    with pytest.raises(InvalidArgumentError, match="min_replicas"):
        build_app(cfg, min_replicas=3, max_replicas=2)
    with pytest.raises(InvalidArgumentError, match="target_ongoing_requests"):
        build_app(cfg, target_ongoing_requests=5, max_ongoing_requests=4)


@pytest.mark.slow
def test_two_replicas_serve_concurrent_requests(smollm2_path: Path) -> None:
    # The replicas import this checkout of the package (and its built core, if set apart).
    root = str(Path(ffnskip_native.__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if "FFNSKIP_CORE_DIR" in os.environ:
        env["FFNSKIP_CORE_DIR"] = os.environ["FFNSKIP_CORE_DIR"]
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cfg = ServerConfig(str(smollm2_path), n_parallel=2, n_ctx=256, n_threads=1)
        serve.run(build_app(cfg, min_replicas=2, max_replicas=2), route_prefix="/")
        status = serve.status().applications["default"].deployments["ffnskip"]
        assert status.replica_states.get("RUNNING") == 2

        pids = _replica_pids()
        assert len(pids) == 2

        async def main() -> Any:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=300) as c:

                async def complete(prompt: str, n: int = 8) -> Any:
                    body = {"prompt": prompt, "max_tokens": n, "temperature": 0}
                    try:
                        return await c.post("/v1/completions", json=body)
                    except httpx.HTTPError as exc:
                        return exc

                alone = [await complete(p) for p in PROMPTS]
                together = await asyncio.gather(*(complete(p) for p in PROMPTS * 4))
                # kill -9 one replica while 8 long requests run on the two.
                long = [asyncio.ensure_future(complete(p, 64)) for p in PROMPTS * 3][:8]
                await asyncio.sleep(2)
                os.kill(pids[0], signal.SIGKILL)
                during = await asyncio.gather(*long)
                after = await asyncio.gather(*(complete(p) for p in PROMPTS))
                return alone, together, during, after

        alone, together, during, after = asyncio.run(main())
        assert all(r.status_code == 200 for r in alone + together + after)
        ref = [r.json()["choices"][0]["text"] for r in alone]
        for i, r in enumerate(together + after):
            assert r.json()["choices"][0]["text"] == ref[i % len(PROMPTS)]
            assert r.json()["usage"]["completion_tokens"] == 8
        # Only the killed replica's requests fail (it holds at most max_ongoing_requests = 4);
        # the others complete in full.
        ok = [r for r in during if isinstance(r, httpx.Response) and r.status_code == 200]
        assert 4 <= len(ok) < len(during) or len(ok) == len(during)
        for r in ok:  # the greedy text, whole: its 8-token start, then to length or end of text
            choice = r.json()["choices"][0]
            assert choice["text"].startswith(ref[during.index(r) % len(PROMPTS)])
            assert choice["finish_reason"] == "stop" or r.json()["usage"]["completion_tokens"] == 64
    finally:
        serve.shutdown()
        ray.shutdown()
