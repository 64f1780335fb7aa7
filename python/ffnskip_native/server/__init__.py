"""``ffnskip serve``: an OpenAI-compatible HTTP server over the BatchGenerator.

``create_app`` builds the Starlette app; ``scheduler`` runs the continuous-batching thread.
Needs the ``serve`` extra (starlette, uvicorn, sse-starlette, prometheus-client).
"""

from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
