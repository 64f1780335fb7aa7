"""Realistic chat templates and conversations for the sandbox's limits.

The templates (tests/data/chat_templates/) are written for these tests in the style of the ones
shipped in GGUF files of Llama 3.1, Gemma 3, Mistral, Phi-3 and Qwen3: the same constructs (tool
lists through tojson(indent=4), namespace bookkeeping, reversed scans for the last user turn,
alternation checks with raise_exception, content parts, reasoning split off at </think>). The
real Qwen2.5 and SmolLM2 templates are read from GGUF files by the tests themselves.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

_DIR = Path(__file__).parent / "data" / "chat_templates"
# name -> template source, from tests/data/chat_templates/<name>-style.jinja
STYLES = {p.name.split("-")[0]: p.read_text() for p in sorted(_DIR.glob("*-style.jinja"))}

_WORDS = (
    "the model reads each token once and the cache keeps keys and values for every layer so a "
    "long answer costs memory in proportion to its length résumé naïve 東京 данные ✓ "
    "function call returns json with fields name arguments and an id that the next turn quotes"
).split()


def tools(n: int = 12) -> list[dict[str, Any]]:
    """``n`` function tools with JSON-schema parameters, as OpenAI-style APIs send them."""
    out = []
    for i in range(n):
        props = {
            f"arg_{j}": {
                "type": ["string", "integer", "number", "boolean"][j % 4],
                "description": f"Parameter {j} of tool {i}: " + " ".join(_WORDS[j : j + 12]),
            }
            for j in range(6)
        }
        props["mode"] = {"type": "string", "enum": ["fast", "exact", "auto"]}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}",
                    "description": "Looks things up. " + " ".join(_WORDS[i % 7 : i % 7 + 25]),
                    "parameters": {"type": "object", "properties": props, "required": ["arg_0"]},
                },
            }
        )
    return out


def conversation(
    turns: int, words_per_message: int = 120, with_tools: bool = True, seed: int = 0
) -> list[dict[str, Any]]:
    """A system message and ``turns`` user/assistant exchanges with multi-paragraph contents;
    with ``with_tools`` every fourth exchange is a tool call, the tool's answer and a reply
    (so roles stay user/assistant-alternating for templates that check it when it is off)."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(n)]
        for i in range(40, n, 40):
            words[i] += "\n\n"
        return " ".join(words)

    msgs: list[dict[str, Any]] = [{"role": "system", "content": text(30)}]
    for t in range(turns):
        msgs.append({"role": "user", "content": text(words_per_message)})
        if with_tools and t % 4 == 3:
            call_id = f"c{t:08d}"[-9:]
            args = {"arg_0": text(5), "mode": "auto"}
            msgs.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": f"tool_{t % 12}", "arguments": args},
                        }
                    ],
                }
            )
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": text(60)})
        think = f"<think>\n{text(40)}\n</think>\n\n" if t % 3 == 0 else ""
        msgs.append({"role": "assistant", "content": think + text(words_per_message)})
    return msgs
