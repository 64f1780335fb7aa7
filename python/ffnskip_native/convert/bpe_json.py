"""tokenizer.json (byte-level BPE, gpt2 style): vocab, merges ("a b" strings or [a, b] pairs),
added tokens, and the pre-tokenizer, which is recognised from its structure / Split regex and
written as tokenizer.ggml.pre (the engine picks its splitting rule by that name)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ConvertError
from .fields import Fields
from .vocab import CONTROL, NORMAL, UNUSED, USER_DEFINED, Vocab

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Pre-tokenizer names this converter can write (the --vocab-pre override is checked against it).
KNOWN_PRE = ("default", "gpt2", "llama-bpe", "qwen2", "smollm", "deepseek-llm", "deepseek-coder")


# Nesting of Sequence pre-tokenizers / post-processors followed (real files nest one level).
_MAX_SEQUENCE_DEPTH = 16


def _flatten(node: Any, depth: int = 0) -> List[Dict[str, Any]]:
    """The leaf nodes of a (possibly Sequence-nested) pre-tokenizer / post-processor / decoder;
    anything that is not an object is not a node and is left out."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        if depth >= _MAX_SEQUENCE_DEPTH:
            raise ConvertError(f"tokenizer.json: Sequence nested over {_MAX_SEQUENCE_DEPTH} deep")
        subs = node.get("pretokenizers", node.get("processors", []))
        if not isinstance(subs, list):
            raise ConvertError("tokenizer.json: a Sequence's members must be an array")
        out: List[Dict[str, Any]] = []
        for sub in subs:
            out.extend(_flatten(sub, depth + 1))
        return out
    return [node]


def detect_pre(pre_tokenizer: Any) -> str:
    """The GGUF pre-tokenizer name for a tokenizer.json pre_tokenizer (ConvertError if unknown)."""
    parts = _flatten(pre_tokenizer)
    splits = []
    for p in parts:
        if p.get("type") == "Split":
            pat = p.get("pattern")
            regex = pat.get("Regex", pat.get("String", "")) if isinstance(pat, dict) else ""
            splits.append(regex if isinstance(regex, str) else "")
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    digits = [p for p in parts if p.get("type") == "Digits"]
    if not splits and byte_level and byte_level[0].get("use_regex", True):
        if digits and digits[0].get("individual_digits", False):
            return "smollm"  # digits split one by one, then the GPT-2 regex (StarCoder family)
        if not digits:
            return "gpt2"
    if len(splits) == 1 and not digits:
        regex = splits[0]
        if regex == LLAMA3_REGEX:
            return "llama-bpe"
        if regex == QWEN2_REGEX:
            return "qwen2"
        if regex == GPT2_REGEX:
            return "gpt2"
    newline_first = bool(splits) and splits[0] in ("[\r\n]", r"[\r\n]")
    if len(splits) >= 4 and newline_first and any("\u4e00-\u9fa5" in s for s in splits):
        # DeepSeek: newline, letters (explicit ranges for -llm, \p{L} for -coder), punctuation,
        # CJK runs, digits - each as its own Split.
        if any("A-Za-z" in s for s in splits) and r"\p{N}+" in splits:
            return "deepseek-llm"
        if any(s.startswith(r"\s?\p{L}+") for s in splits):
            return "deepseek-coder"
    desc = json.dumps(pre_tokenizer, ensure_ascii=False)
    raise ConvertError(
        f"unrecognised pre-tokenizer in tokenizer.json: {desc[:300]} "
        f"(pass --vocab-pre with one of {', '.join(KNOWN_PRE)} if you know which it is)"
    )


def _is_byte_level(tj: Fields) -> bool:
    nodes = _flatten(tj.raw("pre_tokenizer")) + _flatten(tj.raw("decoder"))
    return any(n.get("type") == "ByteLevel" for n in nodes)


def _merge(m: Any, where: str) -> str:
    """One merge rule as GGUF stores it: "a b" (tokenizer.json has that or the pair [a, b])."""
    if isinstance(m, str):
        return m
    if isinstance(m, list) and len(m) == 2 and all(isinstance(t, str) for t in m):
        return f"{m[0]} {m[1]}"
    raise ConvertError(f"{where}: malformed merge entry {str(m)[:80]}")


def load_bpe(path: Path, n_vocab: int, pre_override: Optional[str]) -> Vocab:
    tj = Fields.load(path)
    model = tj.get_obj("model")
    kind = model.get_str("type", None)
    if kind != "BPE":
        raise ConvertError(f"{path}: tokenizer model {kind!r} is not supported (BPE)")
    if not _is_byte_level(tj):
        raise ConvertError(
            f"{path}: a non-byte-level BPE tokenizer.json (SentencePiece style) needs the "
            "tokenizer.model file next to it"
        )
    # Ids index the embedding's rows: one past them is an error, not a reason to allocate.
    vocab = model.get_obj("vocab")
    id_to_tok: Dict[int, str] = {
        vocab.get_int(t, lo=0, hi=n_vocab - 1): t for t, _ in vocab.items()
    }
    merges = [_merge(m, f"{path.name}: model: merges") for m in model.get_list("merges")]
    id_to_type: Dict[int, int] = {}
    for entry in tj.get_list("added_tokens"):
        at = Fields(entry, f"{path.name}: added_tokens entry")
        i = at.get_int("id", lo=0, hi=n_vocab - 1)
        id_to_tok[i] = at.get_str("content")
        id_to_type[i] = CONTROL if at.get_bool("special", False) else USER_DEFINED
    n = max(id_to_tok) + 1 if id_to_tok else 0
    tokens = [id_to_tok.get(i, f"[PAD{i}]") for i in range(n)]
    types = [id_to_type.get(i, NORMAL if i in id_to_tok else UNUSED) for i in range(n)]
    pre = pre_override if pre_override else detect_pre(tj.raw("pre_tokenizer"))
    special: Dict[str, int] = {}
    unk = model.get_str("unk_token", None)
    if unk is not None and unk in vocab.obj:
        special["unk"] = vocab.obj[unk]
    v = Vocab(model="gpt2", pre=pre, tokens=tokens, types=types, merges=merges, special=special)
    _template_flags(tj.raw("post_processor"), v, path.name)
    return v


def _template_flags(post: Any, v: Vocab, where: str) -> None:
    """add_bos / add_eos as a TemplateProcessing post-processor implies them (llama3 style)."""
    for node in _flatten(post):
        if node.get("type") != "TemplateProcessing":
            continue
        # The "single" template: each piece is a special token (its text) or the sequence (None).
        pieces: List[Optional[str]] = []
        for raw in Fields(node, f"{where}: post_processor").get_list("single"):
            piece = Fields(raw, f"{where}: post_processor: single entry")
            if piece.has("SpecialToken"):
                pieces.append(piece.get_obj("SpecialToken").get_str("id"))
            elif piece.has("Sequence"):
                pieces.append(None)
            else:
                raise ConvertError(f"{where}: post_processor: unknown template piece {raw!r:.80}")
        if None in pieces and any(p is not None for p in pieces):
            v.template_bos = pieces[0]
            v.template_eos = pieces[-1]
