"""``ffnskip serve`` replicated under Ray Serve: N copies of the server app behind Ray Serve's
HTTP proxy, autoscaled on ongoing requests (needs the ``ray`` extra: ``pip install
".[serve,ray]"``).

Each replica is a Ray actor holding one model and its own BatchGenerator with ``n_parallel``
slots, i.e. the same Starlette app as ``ffnskip serve`` (same endpoints, errors, metrics). The
proxy routes each request to a replica; Serve adds replicas while the ongoing requests per
replica exceed ``target_ongoing_requests`` (by default the replica's slot count, so a replica is
"full" when every slot decodes) and removes them when traffic falls.

    from ray import serve
    from ffnskip_native.server.ray_app import ServerConfig, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app(ServerConfig("model.gguf", n_parallel=4), max_replicas=4))
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import InvalidArgumentError
from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "build_app"]


def build_app(
    cfg: ServerConfig,
    *,
    min_replicas: int = 1,
    max_replicas: int = 2,
    target_ongoing_requests: Optional[float] = None,
    max_ongoing_requests: Optional[int] = None,
    num_cpus: float = 1.0,
    name: str = "ffnskip",
) -> Any:
    """The Ray Serve application (pass it to ``serve.run``) for ``cfg``.

    ``target_ongoing_requests`` defaults to ``cfg.n_parallel``; ``max_ongoing_requests`` (beyond
    which the proxy queues instead of sending to the replica) to ``2 * cfg.n_parallel``, so a
    replica holds at most one batch waiting behind the running one. ``num_cpus``: CPUs Ray
    reserves per replica (set ``cfg.n_threads`` to match)."""
    from ray import serve

    if not 1 <= min_replicas <= max_replicas:
        raise InvalidArgumentError(
            f"need 1 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}"
        )
    target = float(cfg.n_parallel) if target_ongoing_requests is None else target_ongoing_requests
    max_ongoing = 2 * cfg.n_parallel if max_ongoing_requests is None else max_ongoing_requests
    if not 0 < target <= max_ongoing:
        raise InvalidArgumentError(
            f"need 0 < target_ongoing_requests <= max_ongoing_requests, got {target}, {max_ongoing}"
        )

    def asgi_app() -> Any:
        # Built on the replica; Serve runs the app's lifespan, so the model is loaded (not in
        # the background) before the replica reports ready and the proxy routes to it.
        return create_app(cfg, load_in_background=False)

    @serve.deployment(
        name=name,
        max_ongoing_requests=max_ongoing,
        autoscaling_config={
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target,
        },
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(asgi_app)
    class FfnskipServer:
        pass

    return FfnskipServer.bind()
