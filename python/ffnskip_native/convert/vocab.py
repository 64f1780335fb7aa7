"""What GGUF stores about the tokenizer (a Vocab) and writing it as tokenizer.* keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# GGUF / SentencePiece token types (the two enums agree).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    """Everything the GGUF tokenizer.* keys need."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    tokens: List[str]
    types: List[int]
    scores: Optional[List[float]] = None
    merges: Optional[List[str]] = None
    special: Dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> id
    add_bos: Optional[bool] = None
    add_eos: Optional[bool] = None
    add_space_prefix: Optional[bool] = None
    chat_template: Any = None  # str, or a list of {"name", "template"}
    # Special tokens a TemplateProcessing post-processor puts first / last (tokenizer.json only).
    template_bos: Optional[str] = None
    template_eos: Optional[str] = None


def write_vocab(writer: Any, v: Vocab) -> None:
    """Add the tokenizer.* keys to a gguf.GGUFWriter."""
    writer.add_tokenizer_model(v.model)
    writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.types)
    if v.scores is not None:
        writer.add_token_scores(v.scores)
    if v.merges is not None:
        writer.add_token_merges(v.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for key, add in adders.items():
        if key in v.special:
            add(v.special[key])
    if v.add_bos is not None:
        writer.add_add_bos_token(v.add_bos)
    if v.add_eos is not None:
        writer.add_add_eos_token(v.add_eos)
    if v.add_space_prefix is not None:
        writer.add_add_space_prefix(v.add_space_prefix)
    if v.chat_template:
        writer.add_chat_template(v.chat_template)
