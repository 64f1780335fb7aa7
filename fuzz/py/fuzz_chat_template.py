#!/usr/bin/env python3
"""Hostile chat templates (GGUF tokenizer.chat_template comes from strangers) through
ffnskip_native.chat.ChatTemplate: each input must be refused with TemplateError (or the
InvalidArgumentError of a bad call) or render to a str, in bounded time and memory, without
touching Python internals or the file system.

Escape checks: a canary secret lives only in this module's globals (reachable through
``__globals__`` chains) and must never appear in the output; an audit hook fails the run on any
file open, process start, socket, ctypes load or directory listing while a template renders.

    PYTHONPATH=python python fuzz/py/fuzz_chat_template.py CORPUS_DIR -runs=20000 -timeout=5
    PYTHONPATH=python python fuzz/py/fuzz_chat_template.py --plain CORPUS_DIR --runs 20000

An empty CORPUS_DIR is filled with the built-in seeds (real templates and known escape payloads).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import instrumented, run  # noqa: E402

with instrumented("ffnskip_native", "jinja2"):
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
_MAX_SECONDS = 5.0
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

SEEDS = [
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
]


def one_input(data: bytes) -> None:
    global _rendering
    source = data.decode("utf-8", "replace")
    t0 = time.monotonic()
    try:
        tpl = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    except TemplateError:
        return
    _rendering = True
    try:
        out = tpl.render(MESSAGES, add_generation_prompt=True, tools=[{"name": "t"}])
    except (TemplateError, InvalidArgumentError):
        return
    finally:
        _rendering = False
        elapsed = time.monotonic() - t0
        assert elapsed < _MAX_SECONDS, f"render took {elapsed:.1f} s"
    assert isinstance(out, str)
    assert CANARY not in out, "sandbox escape: the canary global was rendered"


def _write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for s in SEEDS:
        raw = s.encode()
        (corpus / hashlib.sha1(raw).hexdigest()).write_bytes(raw)


def _warm_up() -> None:
    # Lazy imports inside jinja2 on first use would otherwise show up as 'open' events.
    for s in SEEDS:
        try:
            ChatTemplate(s).render(MESSAGES)
        except (TemplateError, InvalidArgumentError):
            pass


if __name__ == "__main__":
    args = sys.argv[1:]
    corpus = next((Path(a) for a in args if not a.startswith("-")), None)
    if corpus is not None:
        _write_seeds(corpus)
    _warm_up()
    run(one_input, args)
