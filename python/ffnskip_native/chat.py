"""Chat prompts: render a GGUF ``tokenizer.chat_template`` (Jinja2) safely.

Templates come from model files, i.e. from strangers, so they run in a sandbox (chat_sandbox):
touching an unsafe attribute (``__class__``, ``__init__.__globals__`` ...) is an error instead of a
silent empty string, and the work and memory of a render are bounded (see :class:`ChatTemplate`).
Every failure is a :class:`~ffnskip_native.errors.TemplateError`. The conventions
(``trim_blocks``, ``lstrip_blocks``, ``raise_exception``, ``strftime_now``, ``tojson``) follow
Hugging Face transformers, which these templates are written for.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import jinja2
from jinja2.exceptions import SecurityError

from .chat_bounds import Limits
from .chat_sandbox import BoundedSandbox, RaisedByTemplate
from .errors import InvalidArgumentError, TemplateError

# Used when the model file carries no template. <|im_start|>/<|im_end|> are the ChatML markers.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Used instead of ChatML when a file without a template has Gemma's turn markers (Gemma 3 GGUF
# files of base models carry no template, and ChatML's markers are plain text to them). The
# format of Gemma's own template: turns "<start_of_turn>{user|model}\n...<end_of_turn>\n", a
# system message folded into the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role'])"
    " + '\n' + (prefix if loop.first else '') + (message['content'] | trim)"
    " + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
GEMMA_TURN_MARKERS = ("<start_of_turn>", "<end_of_turn>")


def fallback_template(tokenizer: Any) -> str:
    """The template for a file that carries none: Gemma's turn format when each of its turn
    markers is one (special) token of the vocabulary, else ChatML."""

    def one_token(text: str) -> bool:
        return len(tokenizer.encode(text, add_special=False, parse_special=True)) == 1

    return GEMMA_TEMPLATE if all(one_token(m) for m in GEMMA_TURN_MARKERS) else CHATML_TEMPLATE


# The defaults, and why. Measured with the real Qwen2.5 and SmolLM2 templates and the realistic
# Llama 3.1-, Gemma 3-, Mistral-, Phi-3- and Qwen3-style ones in tests/data/chat_templates,
# rendering a 1000-message conversation with 12 tools (~600k characters of prompt):
# - output: 1 Mi characters is about 250k tokens, beyond the context window of every model this
#   runtime loads. No single string or list a template builds may be longer either.
DEFAULT_MAX_OUTPUT_CHARS = 1 << 20
# - steps: those templates take 3-13 per message (8-13k for the conversation). Even 22k one-word
#   messages, which fill the output limit, take at most 265k (the Qwen3 style). 1M is 4x that and
#   70x a long real conversation, and at 1-10 us a step stops a runaway loop within seconds.
DEFAULT_MAX_ITERATIONS = 1_000_000
# - built bytes: they build 2-10 bytes of strings per output character (intermediate
#   concatenations, split(), tojson), so at most ~20 MiB at the output limit even for text of
#   4-byte characters; 64 MiB is 3x that and bounds a render's peak memory.
DEFAULT_MAX_BUILT_BYTES = 64 << 20
# - wall clock: the renders above take 20-180 ms (at most 3.5 s for the 22k-message case on a
#   loaded 2-core machine). A backstop for what steps undercount, e.g. comparing long strings.
DEFAULT_MAX_SECONDS = 10.0
# - template source: real ones run from a few hundred characters to ~15k (tool-use templates).
#   Compiling costs up to ~30 us a character for hostile shapes (18k {{ }} outputs: parse,
#   code generation and Python's compile()), so 64 Ki keeps construction near 2 s.
MAX_SOURCE_CHARS = 1 << 16
_MESSAGE_CHARS = 500  # of template-made text quoted in an error message


class ChatTemplate:
    """A compiled, sandboxed chat template.

    ``source`` is the Jinja2 text (e.g. GGUF ``tokenizer.chat_template``); ``bos_token`` and
    ``eos_token`` are the strings the template may reference. Raises TemplateError when the
    source does not compile.

    One render is bounded by ``max_output_chars`` (the prompt, and any single string or list
    the template builds), ``max_iterations`` (steps of about a microsecond: a loop iteration,
    call, filter, test or operator, plus the characters or items it scans), ``max_built_bytes``
    (all strings, lists and other objects it builds; its peak memory is at most this plus one
    value) and ``max_seconds`` (wall clock). A value's size is checked before the operation
    that would build it runs; exceeding any bound raises TemplateError naming it.
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        max_built_bytes: int = DEFAULT_MAX_BUILT_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"chat template must be a string, got {type(source).__name__}")
        if len(source) > MAX_SOURCE_CHARS:
            raise TemplateError(
                f"chat template has {len(source)} characters; the limit is {MAX_SOURCE_CHARS}"
            )
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        limits = Limits(max_output_chars, max_iterations, max_built_bytes, max_seconds)
        self._env = BoundedSandbox(limits)
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template does not compile: {_clip(exc.message)} (line {exc.lineno})"
            ) from None
        except (RecursionError, MemoryError, SyntaxError) as exc:
            # Hostile nesting makes jinja2's parser (or the code it generates) blow up.
            raise TemplateError(
                f"chat template does not compile: {type(exc).__name__} (nested too deeply?)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a stranger's template: any failure is its own
            raise TemplateError(
                f"chat template does not compile: {type(exc).__name__}: {_clip(exc)}"
            ) from None

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
        limit = self._env.limits.max_output_chars
        parts: list[str] = []
        size = 0
        try:
            with self._env.render_budget():
                chunks: Iterator[str] = self._template.generate(context)
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise SecurityError(
                            f"the output exceeds {limit} characters (max_output_chars)"
                        )
                    parts.append(chunk)
        except RaisedByTemplate as exc:
            raise TemplateError(f"chat template raised an error: {_clip(exc)}") from None
        except SecurityError as exc:
            raise TemplateError(f"chat template blocked by the sandbox: {_clip(exc)}") from None
        except RecursionError:
            raise TemplateError("chat template recursed too deeply") from None
        except MemoryError:
            # Not expected under the bounds; if it happens it is still the template's failure.
            raise TemplateError("chat template ran out of memory") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template failed: {_clip(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. 1/0, 'x' + 1, truncate(1)'s assert
            raise TemplateError(
                f"chat template failed: {type(exc).__name__}: {_clip(exc)}"
            ) from None
        return "".join(parts)


def _clip(value: object) -> str:
    text = str(value)
    if len(text) > _MESSAGE_CHARS:
        return text[:_MESSAGE_CHARS] + f"... ({len(text)} characters)"
    return text


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


def model_chat_template(source: str | None, tokenizer: Any) -> ChatTemplate:
    """The chat template of a model: its file's ``tokenizer.chat_template`` source (or
    fallback_template when it has none), with the vocabulary's BOS and EOS strings."""
    bos = tokenizer.decode([tokenizer.bos_id], special=True) if tokenizer.bos_id >= 0 else ""
    eos = tokenizer.decode([tokenizer.eos_id], special=True) if tokenizer.eos_id >= 0 else ""
    return ChatTemplate(source or fallback_template(tokenizer), bos_token=bos, eos_token=eos)
