"""Tokenizer side of the HF -> GGUF converter.

Two sources are understood:
- tokenizer.model (SentencePiece, llama/mistral): the ModelProto is parsed here directly (a few
  protobuf fields), giving pieces, scores, piece types and the trainer's special ids.
- tokenizer.json (byte-level BPE, gpt2 style): vocab, merges ("a b" strings or [a, b] pairs),
  added tokens, and the pre-tokenizer, which is recognised from its structure / Split regex and
  written as tokenizer.ggml.pre (the engine picks its splitting rule by that name).
tokenizer_config.json, generation_config.json and config.json supply special ids, the add_bos /
add_eos flags and the chat template.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .convert_io import ConvertError

# GGUF / SentencePiece token types (the two enums agree).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot read JSON ({e})") from e


def _read_json_opt(path: Path) -> Dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


# ---- SentencePiece ModelProto ------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ConvertError("tokenizer.model: truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ConvertError("tokenizer.model: protobuf varint too long")


def _proto_fields(buf: bytes) -> Iterator[Tuple[int, Any]]:
    """(field number, value) pairs of one protobuf message: int for varint/fixed, bytes for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ConvertError(f"tokenizer.model: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ConvertError("tokenizer.model: truncated protobuf message")
        yield num, val


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _load_sentencepiece(path: Path) -> Vocab:
    """Pieces, scores, types and special ids from a SentencePiece ModelProto."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror or e}") from e
    tokens: List[str] = []
    scores: List[float] = []
    types: List[int] = []
    ids = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}  # TrainerSpec defaults
    add_dummy_prefix = True
    for num, val in _proto_fields(buf):
        if num == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            piece, score, ptype = "", 0.0, NORMAL
            for pn, pv in _proto_fields(val):
                if pn == 1:
                    piece = pv.decode("utf-8")
                elif pn == 2:
                    (score,) = struct.unpack("<f", pv)
                elif pn == 3:
                    ptype = pv
            tokens.append(piece)
            scores.append(score)
            types.append(ptype)
        elif num == 2:  # TrainerSpec: unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43
            for tn, tv in _proto_fields(val):
                key = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}.get(tn)
                if key is not None:
                    ids[key] = _int32(tv)
        elif num == 3:  # NormalizerSpec: add_dummy_prefix = 3
            for nn, nv in _proto_fields(val):
                if nn == 3:
                    add_dummy_prefix = bool(nv)
    if not tokens:
        raise ConvertError(f"{path}: no pieces (not a SentencePiece model?)")
    special = {k: v for k, v in ids.items() if 0 <= v < len(tokens)}
    return Vocab(
        model="llama",
        pre="default",
        tokens=tokens,
        types=types,
        scores=scores,
        special=special,
        add_space_prefix=add_dummy_prefix,
    )


# ---- tokenizer.json (byte-level BPE) -----------------------------------------------------------


def _flatten(node: Any) -> List[Dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        out: List[Dict[str, Any]] = []
        for sub in node.get("pretokenizers", node.get("processors", [])):
            out.extend(_flatten(sub))
        return out
    return [node]


def detect_pre(pre_tokenizer: Any) -> str:
    """The GGUF pre-tokenizer name for a tokenizer.json pre_tokenizer (ConvertError if unknown)."""
    parts = _flatten(pre_tokenizer)
    splits = []
    for p in parts:
        if p.get("type") == "Split":
            pat = p.get("pattern", {})
            splits.append(str(pat.get("Regex", pat.get("String", ""))))
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


def _is_byte_level(tj: Dict[str, Any]) -> bool:
    nodes = _flatten(tj.get("pre_tokenizer")) + _flatten(tj.get("decoder"))
    return any(n.get("type") == "ByteLevel" for n in nodes)


def _load_bpe(path: Path, pre_override: Optional[str]) -> Vocab:
    tj = _read_json(path)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise ConvertError(f"{path}: tokenizer model {model.get('type')!r} is not supported (BPE)")
    if not _is_byte_level(tj):
        raise ConvertError(
            f"{path}: a non-byte-level BPE tokenizer.json (SentencePiece style) needs the "
            "tokenizer.model file next to it"
        )
    vocab: Dict[str, int] = model.get("vocab") or {}
    merges_in = model.get("merges") or []
    merges: List[str] = []
    for m in merges_in:
        if isinstance(m, str):
            merges.append(m)
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            merges.append(f"{m[0]} {m[1]}")
        else:
            raise ConvertError(f"{path}: malformed merge entry {m!r}")
    id_to_tok: Dict[int, str] = {int(i): t for t, i in vocab.items()}
    id_to_type: Dict[int, int] = {}
    for at in tj.get("added_tokens") or []:
        i = int(at["id"])
        id_to_tok[i] = at["content"]
        id_to_type[i] = CONTROL if at.get("special") else USER_DEFINED
    n = max(id_to_tok) + 1 if id_to_tok else 0
    tokens = [id_to_tok.get(i, f"[PAD{i}]") for i in range(n)]
    types = [id_to_type.get(i, NORMAL if i in id_to_tok else UNUSED) for i in range(n)]
    pre = pre_override if pre_override else detect_pre(tj.get("pre_tokenizer"))
    special: Dict[str, int] = {}
    unk = model.get("unk_token")
    if unk is not None and unk in vocab:
        special["unk"] = vocab[unk]
    v = Vocab(model="gpt2", pre=pre, tokens=tokens, types=types, merges=merges, special=special)
    _template_flags(tj.get("post_processor"), v)
    return v


def _template_flags(post: Any, v: Vocab) -> None:
    """add_bos / add_eos as a TemplateProcessing post-processor implies them (llama3 style)."""
    for node in _flatten(post):
        if node.get("type") != "TemplateProcessing":
            continue
        single = node.get("single") or []
        specials = [s["SpecialToken"]["id"] for s in single if "SpecialToken" in s]
        seq_at = [i for i, s in enumerate(single) if "Sequence" in s]
        if specials and seq_at:
            v.template_bos = specials[0] if "SpecialToken" in single[0] else None
            v.template_eos = specials[-1] if "SpecialToken" in single[-1] else None


# ---- common ------------------------------------------------------------------------------------


def _token_text(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _first_id(value: Any) -> Optional[int]:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return int(value) if isinstance(value, int) else None


def load_vocab(hf_dir: Path, n_vocab: int, pre_override: Optional[str] = None) -> Vocab:
    """Read the checkpoint's tokenizer and pad/validate it against the model's n_vocab rows."""
    if pre_override is not None and pre_override not in KNOWN_PRE:
        raise ConvertError(f"--vocab-pre {pre_override!r} is not one of {', '.join(KNOWN_PRE)}")
    spm, tjson = hf_dir / "tokenizer.model", hf_dir / "tokenizer.json"
    if spm.is_file():
        v = _load_sentencepiece(spm)
    elif tjson.is_file():
        v = _load_bpe(tjson, pre_override)
    else:
        raise ConvertError(f"{hf_dir}: no tokenizer (neither tokenizer.model nor tokenizer.json)")

    tc = _read_json_opt(hf_dir / "tokenizer_config.json")
    gc = _read_json_opt(hf_dir / "generation_config.json")
    cfg = _read_json_opt(hf_dir / "config.json")

    # Added tokens the SentencePiece model does not know (ids past its pieces).
    if v.model == "llama":
        for key, at in sorted(
            (tc.get("added_tokens_decoder") or {}).items(), key=lambda x: int(x[0])
        ):
            i = int(key)
            if i >= len(v.tokens):
                while len(v.tokens) < i:
                    v.tokens.append(f"[PAD{len(v.tokens)}]")
                    v.types.append(UNUSED)
                    assert v.scores is not None
                    v.scores.append(-1000.0)
                v.tokens.append(at["content"])
                v.types.append(CONTROL if at.get("special") else USER_DEFINED)
                assert v.scores is not None
                v.scores.append(-1000.0)

    if len(v.tokens) > n_vocab:
        raise ConvertError(
            f"the tokenizer has {len(v.tokens)} tokens but the model's embedding has only "
            f"{n_vocab} rows"
        )
    while len(v.tokens) < n_vocab:  # unused embedding rows get placeholder tokens
        v.tokens.append(f"[PAD{len(v.tokens)}]")
        v.types.append(UNUSED)
        if v.scores is not None:
            v.scores.append(-1000.0)

    lookup = {t: i for i, t in enumerate(v.tokens)}
    for key in ("bos", "eos", "unk", "pad"):
        text = _token_text(tc.get(f"{key}_token"))
        if text is not None and text in lookup:
            v.special[key] = lookup[text]
    # generation_config / config.json name the ids HF generation stops on; use them where the
    # tokenizer config is silent.
    for key in ("bos", "eos", "pad"):
        if key in v.special:
            continue
        for src in (gc, cfg):
            i = _first_id(src.get(f"{key}_token_id"))
            if i is not None and 0 <= i < len(v.tokens):
                v.special[key] = i
                break

    if "add_bos_token" in tc:
        v.add_bos = bool(tc["add_bos_token"])
    elif v.model == "llama":
        v.add_bos = True
    else:
        tb = v.template_bos
        v.add_bos = tb is not None and lookup.get(tb) == v.special.get("bos", -1)
    if "add_eos_token" in tc:
        v.add_eos = bool(tc["add_eos_token"])
    elif v.model == "gpt2":
        te = v.template_eos
        v.add_eos = te is not None and lookup.get(te) == v.special.get("eos", -1)
    else:
        v.add_eos = False

    template = tc.get("chat_template")
    jinja = hf_dir / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    v.chat_template = template
    return v


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
