"""Chat prompts: render a GGUF ``tokenizer.chat_template`` (Jinja2) safely.

Templates come from model files, i.e. from strangers, so they run in Jinja2's
``ImmutableSandboxedEnvironment`` with extra limits: touching an unsafe attribute (``__class__``,
``__init__.__globals__`` ...) is an error instead of a silent empty string, and the output size,
string/list growth, ``range`` sizes and total ``range`` iterations are bounded. Every failure is a
:class:`~ffnskip_native.errors.TemplateError`. The conventions (``trim_blocks``, ``lstrip_blocks``,
``raise_exception``, ``strftime_now``, ``tojson``) follow Hugging Face transformers, which these
templates are written for.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator, Mapping, Optional, Sequence

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidArgumentError, TemplateError

# Used when the model file carries no template. <|im_start|>/<|im_end|> are the ChatML markers.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DEFAULT_MAX_OUTPUT_CHARS = 1 << 20  # a rendered prompt far beyond any context window
DEFAULT_MAX_ITERATIONS = 100_000  # total items produced by range() in one render


class _RaisedByTemplate(Exception):
    """raise_exception() was called: the template's own message, passed through unchanged."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that fails loudly and bounds the work a template can do."""

    intercepted_binops = frozenset(["+", "*", "**"])

    def __init__(self, max_output_chars: int, max_iterations: int) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
            undefined=jinja2.Undefined,
        )
        self.max_output_chars = max_output_chars
        self.max_iterations = max_iterations
        self.iterations = 0

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # The stock sandbox returns an Undefined that renders as "": a hostile template would
        # go unnoticed. Refuse at the point of access instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limit = self.max_output_chars
        if operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
            if len(left) + len(right) > limit:
                raise SecurityError(f"'+' would build a value longer than {limit}")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    if len(seq) * n > limit:
                        raise SecurityError(f"'*' would build a value longer than {limit}")
        elif operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise SecurityError(f"exponent {right} is too large")
        return super().call_binop(context, operator, left, right)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Optional[int] = None,
    separators: Optional[Sequence[str]] = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's built-in tojson HTML-escapes <, >, & and ': wrong for prompts.
    seps = tuple(separators) if separators is not None else None
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=seps, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise _RaisedByTemplate(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled, sandboxed chat template.

    ``source`` is the Jinja2 text (e.g. GGUF ``tokenizer.chat_template``); ``bos_token`` and
    ``eos_token`` are the strings the template may reference. Raises TemplateError when the
    source does not compile.
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"chat template must be a string, got {type(source).__name__}")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._env = _Sandbox(max_output_chars, max_iterations)
        self._env.globals["raise_exception"] = _raise_exception
        self._env.globals["strftime_now"] = _strftime_now
        self._env.globals["range"] = self._bounded_range
        self._env.filters["tojson"] = _tojson
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template does not compile: {exc.message} (line {exc.lineno})"
            ) from None
        except (RecursionError, MemoryError, SyntaxError) as exc:
            # Hostile nesting makes jinja2's parser (or the code it generates) blow up.
            raise TemplateError(
                f"chat template does not compile: {type(exc).__name__} (nested too deeply?)"
            ) from None

    def _bounded_range(self, *args: int) -> range:
        r = range(*args)
        env = self._env
        env.iterations += len(r)
        if env.iterations > env.max_iterations:
            raise SecurityError(f"range() total exceeds {env.max_iterations} items")
        return r

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render ``messages`` (dicts with at least a str ``role``) to the prompt text."""
        check_messages(messages)
        context: dict[str, Any] = {
            "tools": None,
            "documents": None,
            **extra,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        self._env.iterations = 0
        limit = self._env.max_output_chars
        parts: list[str] = []
        size = 0
        try:
            chunks: Iterator[str] = self._template.generate(context)
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise SecurityError(f"output exceeds {limit} characters")
                parts.append(chunk)
        except _RaisedByTemplate as exc:
            raise TemplateError(f"chat template raised an error: {exc}") from None
        except SecurityError as exc:
            raise TemplateError(f"chat template blocked by the sandbox: {exc}") from None
        except RecursionError:
            raise TemplateError("chat template recursed too deeply") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template failed: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
        return "".join(parts)


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise InvalidArgumentError unless ``messages`` is a list of dicts with a str role."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidArgumentError("messages must be a list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidArgumentError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        if not isinstance(m.get("role"), str):
            raise InvalidArgumentError(f"messages[{i}] needs a str 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidArgumentError(f"messages[{i}]['content'] must be str, list or None")
