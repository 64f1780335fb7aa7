#!/usr/bin/env python3
"""Hostile chat templates (GGUF tokenizer.chat_template comes from strangers) through
ffnskip_native.chat.ChatTemplate under its render limits: each input must be refused with
TemplateError (or the InvalidArgumentError of a bad call) or render to a str,

- within the time bound (max_seconds for the render, a few seconds for compiling a source of
  at most MAX_SOURCE_CHARS; libFuzzer's -timeout backs both up),
- without allocating beyond the bound: the peak resident size over the render (the kernel's
  high-water mark, reset before each input) grows by less than max_built_bytes plus one value
  and the interpreter's slack, and an address-space limit turns anything larger into a
  MemoryError, which must never happen (the sandbox refuses before allocating; the exact
  tracemalloc check is tests/test_chat_bounds.py),
- without touching Python internals or the file system.

The first input byte picks the mode: even, the rest drives a structure-aware generator
(template_grammar.py: loops, filters, string methods, big numbers ...); odd, the rest is the
template text itself (byte mutations of the seeds: real templates and known escapes).

Escape checks: a canary secret lives only in this module's globals (reachable through
``__globals__`` chains) and must never appear in the output; an audit hook fails the run on any
file open, process start, socket, ctypes load or directory listing while a template renders.

    PYTHONPATH=python python fuzz/py/fuzz_chat_template.py CORPUS_DIR -max_total_time=60
    PYTHONPATH=python python fuzz/py/fuzz_chat_template.py --plain CORPUS_DIR --seconds 60

An empty CORPUS_DIR is filled with the built-in seeds.
"""

from __future__ import annotations

import hashlib
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import instrumented, run  # noqa: E402
from template_grammar import Choices, TemplateGrammar  # noqa: E402

with instrumented("ffnskip_native"):
    from ffnskip_native.chat import CHATML_TEMPLATE, ChatTemplate
    from ffnskip_native.errors import InvalidArgumentError, TemplateError

CANARY = "ffnskip-canary-7f3a91c2"  # only reachable by escaping the sandbox
_FORBIDDEN_EVENTS = (
    "open",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "subprocess.Popen",
    "socket.connect",
    "socket.bind",
    "ctypes.dlopen",
    "os.listdir",
    "os.scandir",
    "os.remove",
    "os.rename",
    "shutil.rmtree",
)
# Far below the defaults so that inputs that run into a limit are quick (a few hundred a second
# instead of a few); every check scales with them, and the generated arguments still reach 10**9.
LIMITS = dict(max_output_chars=20_000, max_iterations=20_000, max_built_bytes=4 << 20)
MAX_SECONDS = 1.0
# A render may exceed max_built_bytes by one value (up to max_output_chars items, each a new
# object of at most ~100 bytes: a one-character str and its list slot); resident memory also
# holds the compiled template, interpreter frames and allocator slack.
MAX_PEAK_BYTES = LIMITS["max_built_bytes"] + 100 * LIMITS["max_output_chars"] + (32 << 20)
# The deadline is checked between operations, none of which may take long. Compiling is bounded
# by the source size (MAX_SOURCE_CHARS: about 2 s at worst on a loaded 2-core machine).
MAX_RENDER_SECONDS = MAX_SECONDS + 3.0
MAX_COMPILE_SECONDS = 10.0
ADDRESS_SPACE_HEADROOM = 1 << 30  # a multi-GB allocation fails instead of exhausting the host
_rendering = False


def _audit(event: str, _args: tuple) -> None:
    if _rendering and event.startswith(_FORBIDDEN_EVENTS):
        raise AssertionError(f"sandbox escape: audit event {event!r} during a render")


sys.addaudithook(_audit)
# Jinja imports its traceback rewriter on the first template error; import it now so that the
# only files a render could open are ones a template asked for.
import jinja2.debug  # noqa: E402, F401

MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi <|im_end|> {{ 7*7 }}"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]
TOOLS = [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]

RAW_SEEDS = [
    CHATML_TEMPLATE,
    "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}",
    "{{ messages | tojson }}{{ strftime_now('%Y') }}{% set ns = namespace(x=1) %}{{ ns.x }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].listdir('/') }}",
    "{{ self._TemplateReference__context }}",
    "{{ raise_exception.__globals__ }}",
    "{{ namespace.__init__.__globals__.sys.modules }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{{ 2 ** 100000 }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% set x = [] %}{% for i in range(50000) %}{% set _ = x.append(i) %}{% endfor %}",
    "{{ messages.append(1) }}{{ messages.pop() }}",
    "{% for m in messages %}{% for n in messages %}{{ m.content * 99999 }}{% endfor %}{% endfor %}",
    "{{ range.__self__ }}{{ dict.mro() }}",
    "{% include 'x' %}",
    "{% import 'os' as os %}",
    "{% extends '/etc/passwd' %}",
    "{{ ('a' ~ 'b') | format }}{{ '%s' % 'x' }}{{ '{0.__class__}'.format(1) }}",
    "{{ messages[0].content.__class__.__base__.__subclasses__() }}",
    # Issue 16, items 4 and 5.
    "{% set s = 'x' * 10000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{{ 'a'.ljust(3*10**9) }}{{ 'a' | center(3*10**9) }}{{ 'a\nb' | indent(10**9) }}",
    "{{ '%03000000000d' % 1 }}{{ '{:>3000000000}'.format(1) }}{{ [1] | tojson(indent=10**9) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
]


def render_one(source: str) -> None:
    """The properties every template must have, whatever it is."""
    global _rendering
    t0 = time.monotonic()
    try:
        tpl = ChatTemplate(
            source, bos_token="<s>", eos_token="</s>", **LIMITS, max_seconds=MAX_SECONDS
        )
    except TemplateError:
        return
    finally:
        elapsed = time.monotonic() - t0
        assert elapsed < MAX_COMPILE_SECONDS, f"compiling took {elapsed:.1f} s: {source!r}"
    t0 = time.monotonic()
    base = _reset_peak_rss()
    _rendering = True
    try:
        out = tpl.render(MESSAGES, add_generation_prompt=True, tools=TOOLS)
    except TemplateError as exc:
        assert "ran out of memory" not in str(exc), f"allocation beyond the bounds: {source!r}"
        return
    except InvalidArgumentError:
        return
    finally:
        _rendering = False
        elapsed = time.monotonic() - t0
        grown = _status_bytes("VmHWM") - base
        assert elapsed < MAX_RENDER_SECONDS, f"render took {elapsed:.1f} s: {source!r}"
        assert grown < MAX_PEAK_BYTES, f"render grew the process by {grown} bytes: {source!r}"
    assert isinstance(out, str)
    assert len(out) <= LIMITS["max_output_chars"]
    assert CANARY not in out, "sandbox escape: the canary global was rendered"


def one_input(data: bytes) -> None:
    if not data or data[0] % 2 == 0:
        render_one(TemplateGrammar(Choices(data[1:])).template())
    else:
        render_one(data[1:].decode("utf-8", "replace"))


def _write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    rng = random.Random(0)
    seeds = [b"\x01" + s.encode() for s in RAW_SEEDS]
    seeds += [b"\x00" + bytes(rng.randrange(256) for _ in range(64)) for _ in range(32)]
    for raw in seeds:
        (corpus / hashlib.sha1(raw).hexdigest()).write_bytes(raw)


def _warm_up() -> None:
    # Lazy imports inside jinja2 on first use would otherwise show up as 'open' events.
    for s in RAW_SEEDS:
        try:
            ChatTemplate(s).render(MESSAGES)
        except (TemplateError, InvalidArgumentError):
            pass


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> int:
    """Resets the kernel's peak resident size (VmHWM) to the current one, which it returns."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def _limit_address_space() -> None:
    limit = _status_bytes("VmSize") + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


if __name__ == "__main__":
    args = sys.argv[1:]
    corpus = next((Path(a) for a in args if not a.startswith("-")), None)
    if corpus is not None:
        _write_seeds(corpus)
    _warm_up()
    _limit_address_space()
    run(one_input, args)
