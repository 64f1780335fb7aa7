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
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .convert_fields import ConvertError, Fields, is_int

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


# Nesting of Sequence pre-tokenizers / post-processors followed (real files nest one level).
_MAX_SEQUENCE_DEPTH = 16


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


def _message(val: Any, what: str) -> bytes:
    """A length-delimited protobuf value (a nested message or a string)."""
    if not isinstance(val, bytes):
        raise ConvertError(f"tokenizer.model: {what} has the wrong protobuf wire type")
    return val


def _varint_value(val: Any, what: str) -> int:
    if not isinstance(val, int):
        raise ConvertError(f"tokenizer.model: {what} has the wrong protobuf wire type")
    return val


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
            for pn, pv in _proto_fields(_message(val, "a piece")):
                if pn == 1:
                    try:
                        piece = _message(pv, "a piece's text").decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)} is not UTF-8"
                        ) from e
                elif pn == 2:
                    if not isinstance(pv, bytes) or len(pv) != 4:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)}'s score is not a float"
                        )
                    (score,) = struct.unpack("<f", pv)
                elif pn == 3:
                    ptype = _varint_value(pv, "a piece's type")
                    if not NORMAL <= ptype <= BYTE:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)} has unknown type {ptype}"
                        )
            tokens.append(piece)
            scores.append(score)
            types.append(ptype)
        elif num == 2:  # TrainerSpec: unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43
            for tn, tv in _proto_fields(_message(val, "the trainer spec")):
                key = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}.get(tn)
                if key is not None:
                    ids[key] = _int32(_varint_value(tv, f"{key}_id"))
        elif num == 3:  # NormalizerSpec: add_dummy_prefix = 3
            for nn, nv in _proto_fields(_message(val, "the normalizer spec")):
                if nn == 3:
                    add_dummy_prefix = bool(_varint_value(nv, "add_dummy_prefix"))
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


def _load_bpe(path: Path, n_vocab: int, pre_override: Optional[str]) -> Vocab:
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


# ---- common ------------------------------------------------------------------------------------


def _token_text(f: Fields, key: str) -> Optional[str]:
    """A special token named by tokenizer_config.json: a string or {"content": string}."""
    value = f.raw(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return Fields(value, f"{f.where}: {key}").get_str("content")
    raise f.error(key, "a token string or an object with its content")


def _first_id(f: Fields, key: str) -> Optional[int]:
    """A token id, or the first of a list of them (generation_config's eos_token_id)."""
    value = f.raw(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not is_int(value):
        raise f.error(key, "a token id or an array of token ids")
    return value


def _chat_template(tc: Fields, hf_dir: Path) -> Any:
    """tokenizer_config.json's chat_template (a string, or a list of named templates), else the
    text of chat_template.jinja, else None."""
    template = tc.raw("chat_template")
    if template is None:
        jinja = hf_dir / "chat_template.jinja"
        if not jinja.is_file():
            return None
        try:
            return jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConvertError(f"{jinja}: cannot read the chat template ({e})") from e
    if isinstance(template, str):
        return template
    if isinstance(template, list):
        for entry in template:
            named = Fields(entry, f"{tc.where}: chat_template entry")
            named.get_str("name")
            named.get_str("template")
        return template
    raise tc.error("chat_template", "a string or an array of {name, template} objects")


# An id key: decimal digits, at most 10 (ids are below n_vocab < 2**32; a longer run would also
# hit Python's limit on converting long digit strings).
_DECIMAL = re.compile(r"[0-9]{1,10}")


def _added_tokens_decoder(tc: Fields, n_vocab: int) -> List[Tuple[int, str, bool]]:
    """(id, content, special) of tokenizer_config.json's added_tokens_decoder, by id."""
    out = []
    for key, value in tc.get_obj("added_tokens_decoder").items():
        if not _DECIMAL.fullmatch(key) or int(key) >= n_vocab:
            raise ConvertError(
                f"{tc.where}: added_tokens_decoder key {key[:40]!r} is not a token id in "
                f"[0, {n_vocab - 1}]"
            )
        at = Fields(value, f"{tc.where}: added_tokens_decoder: {key}")
        out.append((int(key), at.get_str("content"), at.get_bool("special", False)))
    return sorted(out)


def load_vocab(hf_dir: Path, n_vocab: int, pre_override: Optional[str] = None) -> Vocab:
    """Read the checkpoint's tokenizer and pad/validate it against the model's n_vocab rows.

    n_vocab must be the embedding's row count as found in the checkpoint (not a config value
    alone): token ids are checked against it before any list is sized from them.
    """
    if pre_override is not None and pre_override not in KNOWN_PRE:
        raise ConvertError(f"--vocab-pre {pre_override!r} is not one of {', '.join(KNOWN_PRE)}")
    spm, tjson = hf_dir / "tokenizer.model", hf_dir / "tokenizer.json"
    if spm.is_file():
        v = _load_sentencepiece(spm)
    elif tjson.is_file():
        v = _load_bpe(tjson, n_vocab, pre_override)
    else:
        raise ConvertError(f"{hf_dir}: no tokenizer (neither tokenizer.model nor tokenizer.json)")

    tc = Fields.load(hf_dir / "tokenizer_config.json", optional=True)
    gc = Fields.load(hf_dir / "generation_config.json", optional=True)
    cfg = Fields.load(hf_dir / "config.json", optional=True)

    # Added tokens the SentencePiece model does not know (ids past its pieces).
    if v.model == "llama":
        assert v.scores is not None
        for i, content, special in _added_tokens_decoder(tc, n_vocab):
            if i >= len(v.tokens):
                while len(v.tokens) < i:
                    v.tokens.append(f"[PAD{len(v.tokens)}]")
                    v.types.append(UNUSED)
                    v.scores.append(-1000.0)
                v.tokens.append(content)
                v.types.append(CONTROL if special else USER_DEFINED)
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
        text = _token_text(tc, f"{key}_token")
        if text is not None and text in lookup:
            v.special[key] = lookup[text]
    # generation_config / config.json name the ids HF generation stops on; use them where the
    # tokenizer config is silent.
    for key in ("bos", "eos", "pad"):
        if key in v.special:
            continue
        for src in (gc, cfg):
            i = _first_id(src, f"{key}_token_id")
            if i is not None and 0 <= i < len(v.tokens):
                v.special[key] = i
                break

    # An explicit null counts as false, as it does for the Hugging Face tokenizer classes.
    if "add_bos_token" in tc.obj:
        v.add_bos = tc.get_bool("add_bos_token", False)
    elif v.model == "llama":
        v.add_bos = True
    else:
        tb = v.template_bos
        v.add_bos = tb is not None and lookup.get(tb) == v.special.get("bos", -1)
    if "add_eos_token" in tc.obj:
        v.add_eos = tc.get_bool("add_eos_token", False)
    elif v.model == "gpt2":
        te = v.template_eos
        v.add_eos = te is not None and lookup.get(te) == v.special.get("eos", -1)
    else:
        v.add_eos = False

    v.chat_template = _chat_template(tc, hf_dir)
    _check_unicode(v)
    return v


def _check_unicode(v: Vocab) -> None:
    """Every string GGUF stores must encode as UTF-8; a JSON escape like \\ud800 parses to a
    lone surrogate, which does not."""
    templates = v.chat_template if isinstance(v.chat_template, list) else [v.chat_template or ""]
    texts = [t if isinstance(t, str) else f"{t['name']}{t['template']}" for t in templates]
    for what, strings in (("token", v.tokens), ("merge", v.merges or []), ("chat template", texts)):
        try:
            "".join(strings).encode("utf-8")
        except UnicodeEncodeError:
            bad = next(i for i, t in enumerate(strings) if not t.isascii() and _unencodable(t))
            raise ConvertError(
                f"{what} {bad} ({strings[bad][:40]!r}) is not valid Unicode (a lone surrogate)"
            ) from None


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
