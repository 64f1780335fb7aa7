"""Chat templates are bounded in time and memory (issue 16, items 4 and 5).

Hostile templates run in a forked child with an address-space limit of its current size plus
512 MiB, so that the 1-3 GB allocations they used to make fail there instead of in the test run,
and with a timeout, so that the loops that used to hang fail the test instead of hanging it.
Realistic templates with long conversations must still render, byte for byte like Jinja's plain
sandbox with the Hugging Face helpers.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any

import chat_templates as ct
import jinja2
import pytest
from ffnskip_native import TemplateError, _core
from ffnskip_native.chat import (
    DEFAULT_MAX_BUILT_BYTES,
    DEFAULT_MAX_ITERATIONS,
    MAX_SOURCE_CHARS,
    ChatTemplate,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_test_model import make_model  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + /proc")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
HEADROOM = 512 << 20  # a 1 GB allocation fails in the child; a bounded render needs < 200 MB
TIMEOUT_S = 60.0  # a bounded render stops within max_seconds (10 s) at the latest
B = "{% set b = 'x' * 1000000 %}"  # a 1 M-character string (within max_output_chars)


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def render_isolated(source: str, **kwargs: Any) -> tuple[str, str]:
    """Render ``source`` in a forked child under the address-space limit: (outcome, detail),
    outcome one of "rendered", "TemplateError", another exception's name, or "timeout"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            limit = _vm_size() + HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                text = ChatTemplate(source, **kwargs).render(MESSAGES)
                result = ["rendered", f"{len(text)} characters"]
            except TemplateError as exc:
                result = ["TemplateError", str(exc)]
            except BaseException as exc:  # noqa: BLE001 - what the old code let escape
                result = [type(exc).__name__, str(exc)[:500]]
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return "timeout", f"no result after {TIMEOUT_S:g} s"
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if not data:
        return "crashed", "the child died without a result"
    outcome, detail = json.loads(data)
    return outcome, detail


def assert_refused(source: str, match: str, **kwargs: Any) -> None:
    outcome, detail = render_isolated(source, **kwargs)
    assert outcome == "TemplateError", f"{outcome}: {detail}"
    assert "ran out of memory" not in detail
    assert re.search(match, detail), detail


# ---- item 4: work without a bound ----------------------------------------------------------------

HANGS = {
    # The issue's case: nested loops over a long string (10^10 iterations).
    "nested_loops_over_a_string": "{% set s = 'x' * 100000 %}"
    "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "exponential_macro_recursion": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}"
    "{% endif %}{% endmacro %}{{ f(40) }}",
    "exponential_recursive_loop": "{% for x in [1, 2] recursive %}{% if loop.depth < 40 %}"
    "{{ loop([1, 2]) }}{% endif %}{% endfor %}",
    # Loops over a string (not range(), which the old sandbox did count) doing work per item.
    "substring_search_in_a_loop": B + "{% for c in b %}{% if 'y' in b %}{% endif %}{% endfor %}",
    "sorting_in_a_loop": "{% set l = ('x' * 200000) | list %}{% for c in l %}"
    "{% set s = l | sort %}{% endfor %}",
}


@pytest.mark.parametrize("source", HANGS.values(), ids=HANGS.keys())
def test_unbounded_work_is_stopped(source):
    # Whichever budget runs out first (sorting also builds keys and lists).
    assert_refused(source, r"max_iterations|max_seconds|max_built_bytes")


def test_wall_clock_deadline_is_enforced():
    with pytest.raises(TemplateError, match="max_seconds"):
        ChatTemplate("{% for m in messages %}{{ m.role }}{% endfor %}", max_seconds=0).render(
            MESSAGES
        )


# ---- item 5: allocations without a bound ---------------------------------------------------------

ALLOCATIONS = {
    # The issue's cases.
    "str_ljust": ("{{ 'a'.ljust(3 * 10**9) }}", r"str\.ljust\(\).*max_output_chars"),
    "center_filter": ("{{ 'a' | center(3 * 10**9) }}", r"'center' filter.*max_output_chars"),
    "indent_filter": ("{{ 'a\nb' | indent(10**9) }}", r"'indent' filter.*max_output_chars"),
    "percent_format": ("{{ '%03000000000d' % 1 }}", r"'%'.*width or precision"),
    "str_format": ("{{ '{:>3000000000}'.format(1) }}", r"format\(\).*width or precision"),
    "str_format_through_attr": (
        "{{ ('{:>3000000000}' | attr('format'))(1) }}",
        r"format\(\).*width or precision",
    ),
    "stored_str_format_reference": (
        "{% set f = '{:>999999999}'.format %}{{ f(1) }}",
        r"format\(\).*max_output_chars",
    ),
    "replace_filter": (
        "{{ ('a' * 1000000) | replace('a', 'a' * 3000) }}",
        r"'replace' filter.*max_output_chars",
    ),
    "tojson_indent": ("{{ [[1]] | tojson(indent=10**9) }}", r"tojson\(indent=1000000000\)"),
    "tilde_doubling_in_a_namespace_loop": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        r"'~'.*max_output_chars",
    ),
    # Other string and list builders of the sandbox.
    "join_filter": (B + "{{ ([b] * 3000) | join }}", r"'join' filter.*max_output_chars"),
    "str_join": (B + "{{ ''.join([b] * 3000) }}", r"str\.join\(\).*max_output_chars"),
    "format_filter": ("{{ '%0999999999d' | format(1) }}", r"'format' filter.*max_output_chars"),
    "printing_a_list_of_shared_strings": (B + "{{ [b] * 1000 }}", r"max_output_chars"),
    "tilde_of_a_list": (B + "{{ ([b] * 1000) ~ '' }}", r"'~'.*max_output_chars"),
    "format_repr_conversion": (B + "{{ '{!r}'.format([b] * 1000) }}", r"format\(\)"),
    "batch_fill": ("{{ [1] | batch(10**9, 0) | list }}", r"'batch' filter.*max_output_chars"),
    "slice_count": ("{{ [1] | slice(10**9) | list }}", r"'slice' filter.*max_output_chars"),
    "integer_squaring": (
        "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
        "{% endfor %}",
        r"'\*'.*bits",
    ),
    "integer_power": ("{{ (10**1000) ** 1000 }}", r"'\*\*'.*bits"),
    "int_to_bytes": ("{{ (1).to_bytes(10**9, 'big') }}", r"int\.to_bytes\(\) is not allowed"),
    "lipsum": ("{{ lipsum(1000000) }}", r"lipsum"),
    "strftime_expansion": ("{{ strftime_now('%c' * 400000) }}", r"strftime_now.*max_output"),
    "raise_exception_with_a_huge_message": (
        B + "{{ raise_exception([b] * 1000) }}",
        r"raise_exception.*max_output_chars",
    ),
    "undefined_key_repr_in_the_error": (
        B + "{{ {}[(b,) * 1000] + 1 }}",
        r"has no such element",
    ),
    "kept_distinct_copies": (
        B + "{% set ns = namespace(l=[]) %}{% for i in range(300) %}"
        "{% set ns.l = ns.l + [b ~ i] %}{% endfor %}{{ ns.l | length }}",
        r"max_built_bytes",
    ),
    "list_of_characters": (
        "{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
        "{% set ns.l = ns.l + [('€' * 1000000) | list] %}{% endfor %}",
        r"max_built_bytes",
    ),
    "literal_rebuilt_in_a_loop": (
        "{% set ns = namespace(l=[]) %}{% for c in 'x' * 200000 %}"
        "{% set ns.l = [ns.l" + ", 0" * 200 + "] %}{% endfor %}",
        r"max_built_bytes",
    ),
    "namespaces_kept_in_a_loop": (
        "{% set d = {" + ", ".join(f"'k{i}': {i}" for i in range(200)) + "} %}"
        "{% set ns = namespace(l=[]) %}{% for c in 'x' * 300000 %}"
        "{% set ns.l = [ns.l, namespace(d)] %}{% endfor %}",
        r"max_built_bytes",
    ),
    # Python exceptions that used to escape as themselves.
    "zero_division": ("{{ 1 / 0 }}", r"ZeroDivisionError"),
    "truncate_assertion": ("{{ 'abc' | truncate(1) }}", r"AssertionError"),
}


@pytest.mark.parametrize(("source", "match"), ALLOCATIONS.values(), ids=ALLOCATIONS.keys())
def test_unbounded_allocation_is_refused_before_it_happens(source, match):
    # The byte and size budgets are under test: a wall-clock budget of half the test's timeout
    # (not the default 10 s) keeps a loaded machine from stopping a slow render on max_seconds.
    assert_refused(source, match, max_seconds=TIMEOUT_S / 2)


def test_each_render_has_its_own_budget_also_across_threads():
    """Two renders overlapping in two threads (a barrier holds both mid-render) each need ~1200
    of the 1500 steps: they pass only if budgets are per render, and a third render after them
    proves the budget is not used up by earlier ones."""
    barrier = threading.Barrier(2, timeout=30)
    source = (
        "{% for i in range(600) %}{% endfor %}{{ wait() }}{% for i in range(600) %}{% endfor %}"
    )
    template = ChatTemplate(source, max_iterations=1500)
    outcomes: list[str] = []

    def render() -> None:
        try:
            template.render(MESSAGES, wait=lambda: (barrier.wait(), "done")[1])
            outcomes.append("ok")
        except TemplateError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=render) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["ok", "ok"]
    with pytest.raises(TemplateError, match="max_iterations"):
        ChatTemplate(source.replace("600", "900"), max_iterations=1500).render(
            MESSAGES, wait=lambda: ""
        )
    assert template.render(MESSAGES, wait=lambda: "") == ""


def test_oversized_source_is_refused():
    with pytest.raises(TemplateError, match="characters; the limit"):
        ChatTemplate("x" * (MAX_SOURCE_CHARS + 1))


HOSTILE_MEMORY = [
    "{% set b = 'x' * 90000 %}{% set ns = namespace(l=[]) %}{% for i in range(300) %}"
    "{% set ns.l = ns.l + [b ~ i] %}{% endfor %}",
    "{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
    "{% set ns.l = ns.l + [('€' * 90000) | list] %}{% endfor %}",
    "{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
    "{% set ns.l = ns.l + [('ab ' * 30000).split()] %}{% endfor %}",
    "{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
    "{% set ns.l = ns.l + [range(90000) | list] %}{% endfor %}",
    "{% macro m(i) %}{{ 'y' * 90000 }}{{ i }}{% endmacro %}{% set ns = namespace(l=[]) %}"
    "{% for i in range(300) %}{% set ns.l = ns.l + [m(i)] %}{% endfor %}",
]


@pytest.mark.parametrize("source", HOSTILE_MEMORY)
def test_peak_memory_stays_within_the_built_bytes_budget(source):
    """tracemalloc's peak over a render that keeps building: the budget (4 MB) plus one value
    (at most max_output_chars = 100k items of a new small object each) and the interpreter's
    own frames and small objects."""
    template = ChatTemplate(source, max_output_chars=100_000, max_built_bytes=4 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError, match="max_built_bytes"):
            template.render(MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (4 << 20) + 100_000 * 64 + (2 << 20)


# ---- realistic templates still render ------------------------------------------------------------


def _reference(source: str) -> jinja2.Template:
    """Jinja's plain sandbox with the Hugging Face helpers: what these templates are written for."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    env.globals.update(
        raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f)
    )
    env.filters["tojson"] = tojson
    return env.from_string(source)


def _sources(smollm2_path: Path) -> dict[str, str]:
    def file_template(path: Path) -> str:
        return _core.gguf_read(str(path))["metadata"]["tokenizer.chat_template"]

    data = Path(__file__).parent / "data"
    return {
        **ct.STYLES,
        "qwen2.5": file_template(data / "qwen2.5-vocab.gguf"),
        "smollm2": file_template(smollm2_path),
    }


@pytest.mark.parametrize("name", [*ct.STYLES, "qwen2.5", "smollm2"])
def test_real_templates_render_long_conversations_unchanged(name, smollm2_path):
    """A 400-exchange conversation (~1000 messages, ~600k characters) with 12 tools renders like
    the plain sandbox, even with a tenth of the default steps and built bytes: the defaults
    leave that much headroom."""
    source = _sources(smollm2_path)[name]
    alternating = name in ("gemma3", "phi3")  # these refuse or drop tool turns
    messages = ct.conversation(400, with_tools=not alternating)
    tools = None if alternating else ct.tools()
    expected = _reference(source).render(
        messages=messages,
        tools=tools,
        documents=None,
        add_generation_prompt=True,
        bos_token="<s>",
        eos_token="</s>",
    )
    template = ChatTemplate(
        source,
        bos_token="<s>",
        eos_token="</s>",
        max_iterations=DEFAULT_MAX_ITERATIONS // 10,
        max_built_bytes=DEFAULT_MAX_BUILT_BYTES // 10,
    )
    assert len(expected) > 500_000
    assert template.render(messages, tools=tools) == expected


def test_templates_keep_jinja_semantics_under_the_meters():
    """Loops (recursive, filtered, with loop.length), slices, ~, comparisons, str.format,
    %-format and the filters the sandbox wraps give Jinja's results."""
    source = (
        "{% for x in [[1, [2]], 3] recursive %}<{{ loop.depth }}:{{ loop.length }}"
        "{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}>{% endfor %}|"
        "{% for c in 'abcdef'[1:5:2] if c != 'z' %}{{ c ~ loop.index }}{% endfor %}|"
        "{{ '{:>5}|{!r}|{k}'.format('ab', [1], k=2) }}|{{ '%-4s|%03d' % ('a', 7) }}|"
        "{{ '%(x)s' % {'x': 1} }}|{{ 'a,b' | replace(',', '--') }}|{{ 'ab' | center(6) }}|"
        "{{ [3, 1, 2] | sort | join('-') }}|{{ 'x\ny' | indent(2, true) }}|"
        "{{ {'b': 1, 'a': 2} | tojson(indent=1, sort_keys=true) }}|"
        "{{ [1, 2] | batch(3, 0) | list }}|{{ ('abc' * 2).split('b') }}|{{ 2 ** 10 }}|"
        "{{ 'ab' in 'xaby' }}|{{ [1] * 3 }}"
    )
    expected = _reference(source).render(messages=MESSAGES)
    assert ChatTemplate(source).render(MESSAGES) == expected


# ---- the CLI -------------------------------------------------------------------------------------


def test_cli_reports_a_hostile_template_as_an_error(tmp_path):
    hostile = HANGS["nested_loops_over_a_string"]
    model = make_model(
        tmp_path / "hostile.gguf", extra_metadata={"tokenizer.chat_template": hostile}
    )
    r = subprocess.run(
        [sys.executable, "-m", "ffnskip_native.cli", "run", str(model), "--chat", "-p", "hi"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ),
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "error: chat template blocked by the sandbox" in r.stderr
    assert "max_iterations" in r.stderr
