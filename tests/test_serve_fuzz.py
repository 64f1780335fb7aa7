"""A fuzz loop over `ffnskip serve`'s request parsing: 500 malformed requests (bad JSON, wrong field
types and values, huge numbers, wrong content types, odd structure) each get a 4xx OpenAI-style
error, never a 5xx or a crash, and the server still answers a good request afterwards."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("sse_starlette")

from ffnskip_native.server import ServerConfig, create_app  # noqa: E402

N_CASES = 500
HUGE_INT = 10**40
HUGE_DIGITS = "9" * 5000  # past Python's int-string conversion limit

# Per field, values it must refuse: wrong JSON types, out-of-range and huge numbers.
BAD_VALUES: dict[str, list[Any]] = {
    "max_tokens": [-1, HUGE_INT, 1 << 31, "16", 16.5, True, [16]],
    "temperature": [-0.1, 2.5, 1e308 * 10, "0.5", True, [0.5], {"v": 1}],
    "top_p": [0, -1, 1.5, "1", False, [1]],
    "n": [2, 0, -5, HUGE_INT, "1", 1.0],
    "stream": ["true", 1, 0, [True], {"x": True}],
    "stop": [1, [1, 2], ["a", "b", "c", "d", "e"], {"s": "x"}, [None], True],
    "seed": [1 << 64, -(1 << 63) - 1, "7", 7.5, [7], True],
    "model": ["no-such-model", 5, ["m"], {"id": "m"}],
}
COMPLETION_BAD = {
    **BAD_VALUES,
    "prompt": [
        None,
        5,
        [],
        [-1],
        [HUGE_INT],
        [1.5],
        [True],
        {"text": "x"},
        [["x"]],
        "",
        "x" * 8000,
    ],
    "logprobs": [-1, 21, HUGE_INT, "2", 2.5, [2], True],
}
CHAT_BAD = {
    **BAD_VALUES,
    "messages": [
        None,
        [],
        "hi",
        [{"role": "user"}],
        [{"content": "hi"}],
        [{"role": 5, "content": "hi"}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": None}],
        ["hi"],
        [[{"role": "user", "content": "hi"}]],
        [{"role": "user", "content": "word " * 2000}],
    ],
    "max_completion_tokens": [-1, HUGE_INT, "9", 9.5, False],
    "logprobs": [1, "true", [True], {"on": True}],
    "top_logprobs": [-1, 21, "3", 3.5, [3]],
}
GOOD = {
    "/v1/completions": {"prompt": "Hello", "max_tokens": 2, "temperature": 0},
    "/v1/chat/completions": {
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
        "temperature": 0,
    },
}


def _random_junk(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 1:
        return rng.choice([-1, 1]) * rng.randrange(1 << rng.randrange(1, 200))
    if kind == 2:
        return rng.uniform(-1e300, 1e300)
    if kind == 3:
        return [_random_junk(rng) for _ in range(rng.randrange(3))]
    if kind == 4:
        return {str(rng.random()): _random_junk(rng) for _ in range(rng.randrange(3))}
    return None


def _bad_field(rng: random.Random, path: str) -> tuple[dict[str, str], bytes]:
    """A valid body with one field made invalid, plus random unknown fields."""
    body: dict[str, Any] = dict(GOOD[path])
    table = COMPLETION_BAD if path == "/v1/completions" else CHAT_BAD
    name = rng.choice(sorted(table))
    body[name] = rng.choice(table[name])
    for _ in range(rng.randrange(3)):
        body["x_" + "".join(rng.choice("abcdefgh_") for _ in range(6))] = _random_junk(rng)
    return {"content-type": "application/json"}, json.dumps(body).encode()


def _bad_json(rng: random.Random, path: str) -> tuple[dict[str, str], bytes]:
    good = json.dumps(GOOD[path]).encode()
    kind = rng.randrange(7)
    if kind == 0:
        raw = good[: rng.randrange(1, len(good) - 1)]
    elif kind == 1:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    elif kind == 2:
        raw = json.dumps(rng.choice([[GOOD[path]], 5, "text", None, True, 1.5])).encode()
    elif kind == 3:
        raw = b"[" * 100_000 + b"]" * 100_000
    elif kind == 4:
        raw = b'{"prompt": "x", "max_tokens": ' + HUGE_DIGITS.encode() + b"}"
    elif kind == 5:
        raw = good.replace(b"{", b"{\xff\xfe", 1)
    else:
        raw = b""
    return {"content-type": "application/json"}, raw


def _bad_content_type(rng: random.Random, path: str) -> tuple[dict[str, str], bytes]:
    ctype = rng.choice(
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "image/png"]
    )
    return {"content-type": ctype}, json.dumps(GOOD[path]).encode()


def _too_big(rng: random.Random, path: str) -> tuple[dict[str, str], bytes]:
    return {"content-type": "application/json"}, b'{"prompt": "' + b"a" * (9 << 20) + b'"}'


MUTATORS: list[tuple[float, Callable[[random.Random, str], tuple[dict[str, str], bytes]]]] = [
    (0.6, _bad_field),
    (0.25, _bad_json),
    (0.14, _bad_content_type),
    (0.01, _too_big),
]


def test_fuzzed_requests_get_4xx_and_the_server_still_answers(smollm2_path: Path) -> None:
    app = create_app(
        ServerConfig(str(smollm2_path), n_parallel=2, n_ctx=256), load_in_background=False
    )
    rng = random.Random(2024)
    weights = [w for w, _ in MUTATORS]

    async def main() -> Any:
        async with app.router.lifespan_context(app):
            t = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=t, base_url="http://test", timeout=60) as c:
                failures = []
                for i in range(N_CASES):
                    path = rng.choice(sorted(GOOD))
                    mutate = rng.choices([m for _, m in MUTATORS], weights)[0]
                    headers, raw = mutate(rng, path)
                    r = await c.post(path, content=raw, headers=headers)
                    ok = 400 <= r.status_code < 500 and "message" in r.json().get("error", {})
                    if not ok:
                        failures.append((i, mutate.__name__, raw[:200], r.status_code, r.text))
                good = await c.post("/v1/completions", json=GOOD["/v1/completions"])
                return failures, good, app.state.ffnskip.gen.active

    failures, good, active = asyncio.run(main())
    assert failures == []
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 2
    assert active == 0
