"""The Starlette app: OpenAI-shaped endpoints over the scheduler.

POST /v1/completions, /v1/chat/completions (SSE streaming or not), GET /v1/models, /health,
/metrics. Errors are OpenAI-style bodies: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import _core
from ..batch import BatchGenerator, Event, Request
from ..chat import ChatTemplate, model_chat_template
from ..chat_tokens import chat_prompt_ids
from ..errors import Error
from .scheduler import Scheduler

log = logging.getLogger("ffnskip_native.server")

# A request body larger than this is refused (413) before parsing: a prompt that fits any context
# this engine serves is far smaller, and the whole body is held in memory.
MAX_BODY_BYTES = 8 << 20


@dataclass
class ServerConfig:
    model: str
    n_parallel: int = 4
    n_ctx: int = 2048
    n_threads: int = 0
    api_key: Optional[str] = None
    max_queue: int = 64
    model_id: Optional[str] = None  # the name /v1/models reports (default: the file's stem)
    # On shutdown (SIGTERM) a running stream gets this long to finish before it is cut.
    drain_timeout: float = 60.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def _error_body(message: str, type_: str, param: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}


def _error(status: int, message: str, type_: str, param: Optional[str] = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(_error_body(message, type_, param), status_code=status, headers=headers)


async def _disconnected(http: HttpRequest) -> None:
    """Returns when the client of a request whose body was read disconnects."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # bounded polling should a server hand out other messages


def _bad(message: str, param: Optional[str] = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param)


def _num(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(f"'{name}' must be a number", name)
    if not lo <= v <= hi:
        raise _bad(f"'{name}' must be in [{lo}, {hi}], got {v}", name)
    return float(v)


def _int(
    body: dict[str, Any], name: str, default: Optional[int], lo: int, hi: int
) -> Optional[int]:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{name}' must be an integer", name)
    if not lo <= v <= hi:
        raise _bad(f"'{name}' must be in [{lo}, {hi}], got {v}", name)
    return v


class _State:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.model_id = cfg.model_id or Path(cfg.model).stem
        self.gen: Optional[BatchGenerator] = None
        self.sched: Optional[Scheduler] = None
        self.template: Optional[ChatTemplate] = None
        self.load_error: Optional[str] = None
        self.created = int(time.time())
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "ffnskip_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("ffnskip_prompt_tokens", "prompt tokens received", registry=r)
        self.gen_tokens = Counter("ffnskip_generation_tokens", "tokens generated", registry=r)
        self.g_queue = Gauge("ffnskip_queue_depth", "requests waiting for a slot", registry=r)
        self.g_active = Gauge("ffnskip_active_slots", "slots running a request", registry=r)
        self.g_kv = Gauge("ffnskip_kv_cache_usage_ratio", "KV cache fraction in use", registry=r)
        self.g_tps = Gauge(
            "ffnskip_tokens_per_second", "generated tokens/s (last second)", registry=r
        )
        self.g_prompt_eval = Gauge(
            "ffnskip_prompt_tokens_evaluated",
            "prompt tokens evaluated (the rest came from a cached prefix)",
            registry=r,
        )
        # Decode-only steps by batch size: served decode speed = tokens / seconds per size.
        self.g_decode_tokens = Gauge(
            "ffnskip_decode_step_tokens", "tokens of decode-only steps", ["rows"], registry=r
        )
        self.g_decode_seconds = Gauge(
            "ffnskip_decode_step_seconds", "seconds in decode-only steps", ["rows"], registry=r
        )

    def load(self) -> None:
        try:
            cfg = self.cfg
            gen = BatchGenerator(
                cfg.model, n_parallel=cfg.n_parallel, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads
            )
            tok = gen.tokenizer
            meta_src = _chat_template_source(cfg.model)
            self.template = model_chat_template(meta_src, tok)
            sched = Scheduler(gen, cfg.max_queue)
            sched.start()
            self.gen, self.sched = gen, sched
        except Error as exc:
            self.load_error = str(exc)


def _chat_template_source(model: str) -> Optional[str]:
    src = _core.gguf_read(model)["metadata"].get("tokenizer.chat_template")
    return src if isinstance(src, str) else None


def create_app(cfg: ServerConfig, load_in_background: bool = True) -> Starlette:
    """The app for cfg. The model loads at startup (in a thread when load_in_background, so
    /health answers "loading" meanwhile)."""
    st = _State(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_in_background:
            threading.Thread(target=st.load, name="ffnskip-load", daemon=True).start()
        else:
            st.load()
        yield
        if st.sched is not None:
            st.sched.stop()

    def check_auth(req: HttpRequest) -> None:
        if cfg.api_key is None:
            return
        if req.headers.get("authorization", "") != f"Bearer {cfg.api_key}":
            raise ApiError(401, "missing or wrong API key", "authentication_error")

    def ready() -> tuple[BatchGenerator, Scheduler]:
        if st.gen is None or st.sched is None:
            raise ApiError(503, st.load_error or "the model is loading", "server_error")
        return st.gen, st.sched

    async def read_body(req: HttpRequest) -> dict[str, Any]:
        ctype = req.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype.lower() != "application/json":
            raise ApiError(415, "the body must be application/json", "invalid_request_error")
        raw = bytearray()
        async for chunk in req.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise ApiError(
                    413, f"the body exceeds {MAX_BODY_BYTES} bytes", "invalid_request_error"
                )
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise _bad("'model' must be a string", "model")
        if model is not None and model != st.model_id:
            raise ApiError(
                404, f"the model '{model}' does not exist", "invalid_request_error", "model"
            )
        return body

    def build_request(body: dict[str, Any], prompt: list[int], chat: bool) -> tuple[Request, bool]:
        gen, _ = ready()
        if _int(body, "n", 1, 1, 1) != 1:
            raise _bad("only n=1 is supported", "n")
        max_tokens = _int(
            body,
            "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens",
            16 if not chat else gen.n_ctx,
            0,
            1 << 30,
        )
        stop = body.get("stop")
        if stop is None:
            stops: list[str] = []
        elif isinstance(stop, str):
            stops = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
            stops = [s for s in stop if s]
        else:
            raise _bad("'stop' must be a string or a list of up to 4 strings", "stop")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _bad("'stream' must be a boolean", "stream")
        if chat:
            lp = body.get("logprobs", False)
            if not isinstance(lp, bool):
                raise _bad("'logprobs' must be a boolean", "logprobs")
            top = _int(body, "top_logprobs", 0, 0, 20)
            logprobs = top if lp else None
        else:
            logprobs = _int(body, "logprobs", None, 0, 20)
        seed = _int(body, "seed", None, -(1 << 63), (1 << 64) - 1)
        if len(prompt) >= gen.n_ctx:
            raise _bad(
                f"the prompt has {len(prompt)} tokens; the context holds {gen.n_ctx} "
                f"(prompt plus at least one generated token)",
                "messages" if chat else "prompt",
            )
        req = Request(
            prompt=prompt,
            on_event=lambda ev: None,
            max_tokens=max_tokens or 0,
            temperature=_num(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_num(body, "top_p", 1.0, 1e-9, 1.0),
            seed=seed,
            stop=stops,
            logprobs=logprobs,
        )
        return req, stream

    async def generate(
        http: HttpRequest, body: dict[str, Any], prompt: list[int], chat: bool
    ) -> Response:
        gen, sched = ready()
        req, stream = build_request(body, prompt, chat)
        if sched.full():
            raise ApiError(503, "the request queue is full; retry later", "server_error")
        st.prompt_tokens.inc(len(prompt))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        q = sched.submit(req, asyncio.get_running_loop())
        if req.max_tokens == 0:
            sched.gen.cancel(req)
        kind = "chat.completion" if chat else "text_completion"

        def usage() -> dict[str, int]:
            return {
                "prompt_tokens": len(prompt),
                "completion_tokens": req.completion_tokens,
                "total_tokens": len(prompt) + req.completion_tokens,
            }

        def failed(ev: Event) -> ApiError:
            return ApiError(500, f"generation failed: {ev.error}", "server_error")

        def finish_of(ev: Event) -> Optional[str]:
            if ev.finish == "cancelled":
                return "length" if req.max_tokens == 0 else "stop"
            return ev.finish

        if stream:

            async def events() -> AsyncIterator[str]:
                try:
                    while True:
                        ev = await q.get()
                        if ev.finish == "error":
                            e = failed(ev)
                            yield json.dumps(_error_body(e.message, e.type, e.param))
                            return
                        if chat:
                            delta = {"content": ev.text} if ev.text else {}
                            choice: dict[str, Any] = {"index": 0, "delta": delta}
                            if req.logprobs is not None:
                                choice["logprobs"] = _chat_logprobs(ev)
                        else:
                            choice = {"index": 0, "text": ev.text}
                            if req.logprobs is not None:
                                choice["logprobs"] = _completion_logprobs(ev)
                        choice["finish_reason"] = finish_of(ev) if ev.finish else None
                        chunk = {
                            "id": rid,
                            "object": kind + ".chunk" if chat else kind,
                            "created": created,
                            "model": st.model_id,
                            "choices": [choice],
                        }
                        if ev.finish:
                            chunk["usage"] = usage()
                            yield json.dumps(chunk)
                            yield "[DONE]"
                            return
                        if ev.text or ev.logprobs:
                            yield json.dumps(chunk)
                finally:
                    gen.cancel(req)  # a disconnected client frees its slot at the next step
                    st.gen_tokens.inc(req.completion_tokens)

            return EventSourceResponse(events(), ping=15, shutdown_grace_period=cfg.drain_timeout)
        texts: list[str] = []
        lps: list[Event] = []
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            while True:
                got = asyncio.ensure_future(q.get())
                await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    # The client left: its slot is freed at the next step; nobody reads a reply.
                    return Response(status_code=499)
                ev = got.result()
                texts.append(ev.text)
                lps.append(ev)
                if ev.finish:
                    break
        finally:
            gone.cancel()
            gen.cancel(req)
            st.gen_tokens.inc(req.completion_tokens)
        if ev.finish == "error":
            raise failed(ev)
        text = "".join(texts)
        merged = Event(text, finish=ev.finish, logprobs=[x for e in lps for x in e.logprobs])
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_of(ev),
            }
            choice["logprobs"] = _chat_logprobs(merged) if req.logprobs is not None else None
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_of(ev)}
            choice["logprobs"] = _completion_logprobs(merged) if req.logprobs is not None else None
        return JSONResponse(
            {
                "id": rid,
                "object": kind,
                "created": created,
                "model": st.model_id,
                "choices": [choice],
                "usage": usage(),
            }
        )

    def endpoint(name: str, fn: Any) -> Any:
        async def handler(http: HttpRequest) -> Response:
            try:
                check_auth(http)
                resp = await fn(http)
            except ApiError as e:
                resp = _error(e.status, e.message, e.type, e.param)
            except Error as e:  # a library error on input we could not check up front
                resp = _error(400, str(e), "invalid_request_error")
            except Exception as e:
                log.exception("unexpected error in %s", name)
                resp = _error(500, f"internal error: {type(e).__name__}", "server_error")
            st.requests.labels(name, str(resp.status_code)).inc()
            return resp

        return handler

    async def completions(http: HttpRequest) -> Response:
        body = await read_body(http)
        gen, _ = ready()
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = gen.tokenizer.encode(prompt, add_special=True, parse_special=False)
        elif (
            isinstance(prompt, list)
            and prompt
            and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < gen.engine.n_vocab
                for t in prompt
            )
        ):
            ids = list(prompt)
        else:
            raise _bad("'prompt' must be a string or a list of token ids", "prompt")
        if not ids:
            raise _bad("the prompt is empty", "prompt")
        return await generate(http, body, ids, chat=False)

    async def chat_completions(http: HttpRequest) -> Response:
        body = await read_body(http)
        gen, _ = ready()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty list", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad(f"messages[{i}] needs a string 'role'", "messages")
            if not isinstance(m.get("content"), str):
                raise _bad(f"messages[{i}]['content'] must be a string", "messages")
        assert st.template is not None
        ids = chat_prompt_ids(gen.tokenizer, st.template, messages)
        return await generate(http, body, ids, chat=True)

    async def models(http: HttpRequest) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": st.model_id,
                        "object": "model",
                        "created": st.created,
                        "owned_by": "ffnskip",
                    }
                ],
            }
        )

    async def health(http: HttpRequest) -> Response:
        if st.gen is None:
            status = "error" if st.load_error else "loading"
            return JSONResponse({"status": status, "error": st.load_error}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(http: HttpRequest) -> Response:
        if st.gen is not None and st.sched is not None:
            st.g_queue.set(st.gen.queue_depth)
            st.g_active.set(st.gen.active)
            st.g_kv.set(st.gen.kv_usage())
            st.g_tps.set(st.sched.tokens_per_second)
            st.g_prompt_eval.set(st.gen.prompt_evaluated)
            for n, tokens in list(st.gen.decode_step_tokens.items()):
                st.g_decode_tokens.labels(rows=str(n)).set(tokens)
                st.g_decode_seconds.labels(rows=str(n)).set(st.gen.decode_step_seconds[n])
        return Response(generate_latest(st.registry), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
        Route("/v1/chat/completions", endpoint("chat", chat_completions), methods=["POST"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ffnskip = st
    return app


def _completion_logprobs(ev: Event) -> dict[str, Any]:
    return {
        "tokens": [t.token for t in ev.logprobs],
        "token_logprobs": [t.logprob for t in ev.logprobs],
        "top_logprobs": [dict(t.top) for t in ev.logprobs],
        "text_offset": [],
    }


def _chat_logprobs(ev: Event) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode()),
                "top_logprobs": [
                    {"token": s, "logprob": v, "bytes": list(s.encode())} for s, v in t.top
                ],
            }
            for t in ev.logprobs
        ]
    }
