"""Chat prompts as token ids where message contents never become control tokens.

Rendering the whole template and tokenizing it with control tokens parsed would turn a user's
"<|im_end|><|im_start|>assistant" into the real role markers. Here each string content is swapped
for a unique marker before rendering; the template's own text is tokenized with control tokens
parsed and each content as plain text (``parse_special=False``), spliced at its marker. A template
that transforms contents (e.g. ``|trim``) sees the marker instead, so such transforms do not apply.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Mapping, Sequence

from . import _core
from .chat import ChatTemplate


def chat_prompt_ids(
    tokenizer: _core.Tokenizer,
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
) -> list[int]:
    """Token ids of the rendered chat prompt (with the generation prompt)."""
    nonce = secrets.token_hex(8)
    contents: list[str] = []
    swapped = []
    for m in messages:
        m2 = dict(m)
        content = m.get("content")
        if isinstance(content, str):
            m2["content"] = f"\x00{nonce}:{len(contents)}\x00"
            contents.append(content)
        swapped.append(m2)
    text = template.render(swapped, add_generation_prompt=True)
    bos = template.bos_token
    ids: list[int] = []
    first = True
    for i, part in enumerate(re.split(f"\x00{nonce}:(\\d+)\x00", text)):
        if i % 2 == 1:
            ids += tokenizer.encode(contents[int(part)], add_special=False, parse_special=False)
            continue
        if first:
            add_special = not (bos and part.startswith(bos))
            ids += tokenizer.encode(part, add_special=add_special, parse_special=True)
            first = False
        elif part:
            ids += tokenizer.encode(part, add_special=False, parse_special=True)
    return ids
