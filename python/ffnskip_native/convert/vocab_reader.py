"""The checkpoint's tokenizer files read into one Vocab: tokenizer.model or tokenizer.json, then
tokenizer_config.json, generation_config.json and config.json for special ids, the add_bos /
add_eos flags and the chat template."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

from .bpe_json import KNOWN_PRE, load_bpe
from .errors import ConvertError
from .fields import Fields, is_int
from .spm_model import load_sentencepiece
from .vocab import CONTROL, UNUSED, USER_DEFINED, Vocab


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
        v = load_sentencepiece(spm)
    elif tjson.is_file():
        v = load_bpe(tjson, n_vocab, pre_override)
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
