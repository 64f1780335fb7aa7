"""Tokenizer: ids identical to independent references on a >= 2000-string corpus.

References: HF `tokenizers` built from the same GGUF vocab + merges with each model's documented
pre-tokenizer (byte-level BPE), and `sentencepiece` itself for models trained here (SPM).
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest
from ffnskip_native import _core
from ffnskip_native.errors import InvalidArgumentError, ModelFormatError
from tokenizer_corpus import build_corpus, english_text

DATA = Path(__file__).parent / "data"
QWEN_VOCAB = DATA / "qwen2.5-vocab.gguf"

# tokenizer.json pre-tokenizers of the models (Qwen2.5 and Llama 3 share the split regex, except
# digits: Llama 3 takes \p{N}{1,3}).
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _read_vocab(path: Path) -> tuple[list[str], list[int], list[str]]:
    r = gguf.GGUFReader(str(path))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    return tokens, types, merges


def _hf_bpe(path: Path, pre: str):
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    tokens, types, merges = _read_vocab(path)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    if pre == "smollm":
        # SmolLM2 tokenizer.json: Digits(individual_digits) then ByteLevel with the GPT-2 regex.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    special = [tokens[i] for i, t in enumerate(types) if t in (3, 4)]
    with_special = Tokenizer.from_str(tok.to_str())
    with_special.add_special_tokens([AddedToken(t, special=True) for t in special])
    return tok, with_special, special


@pytest.fixture(scope="module", params=["smollm", "qwen2"])
def bpe_case(request, smollm2_path):
    path = smollm2_path if request.param == "smollm" else QWEN_VOCAB
    plain, with_special, special = _hf_bpe(path, request.param)
    return request.param, _core.Tokenizer(str(path)), plain, with_special, build_corpus(special)


def test_bpe_matches_hf_tokenizers(bpe_case):
    name, tok, ref, _, corpus = bpe_case
    assert len(corpus) >= 2000
    assert tok.pre == name and tok.model == "gpt2" and tok.warnings == []
    bad = [
        (i, s)
        for i, s in enumerate(corpus)
        if tok.encode(s, add_special=False) != ref.encode(s).ids
    ]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]!r}"


def test_bpe_parse_special_matches_hf(bpe_case):
    _, tok, _, ref, corpus = bpe_case
    bad = [
        (i, s)
        for i, s in enumerate(corpus)
        if tok.encode(s, add_special=False, parse_special=True) != ref.encode(s).ids
    ]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]!r}"


def test_bpe_round_trip(bpe_case):
    _, tok, _, _, corpus = bpe_case
    # SmolLM2's vocab lacks a few control bytes (e.g. 0x1d), which every tokenizer drops.
    missing = {b for b in range(256) if not tok.encode(chr(b), add_special=False)}
    assert len(missing) < 8
    usable = [s for s in corpus if not missing & set(s.encode())]
    assert len(usable) > 0.9 * len(corpus)
    bad = [s for s in usable if tok.decode(tok.encode(s, add_special=False)) != s]
    assert not bad, bad[:3]


def test_bpe_token_bytes_concatenate_to_utf8(bpe_case):
    _, tok, ref, _, _ = bpe_case
    ids = ref.encode("日本語 😀 naïve").ids
    raw = b"".join(tok.token_to_bytes(i) for i in ids)
    assert raw.decode("utf-8") == "日本語 😀 naïve"
    # A lone byte of a multi-byte character is a partial sequence, and decode replaces it.
    partial = [
        i for i in ids if len(tok.token_to_bytes(i)) == 1 and tok.token_to_bytes(i)[0] >= 0x80
    ]
    if partial:
        assert "\ufffd" in tok.decode(partial[:1])


def test_special_tokens_only_with_parse_special(smollm2_path):
    tok = _core.Tokenizer(str(smollm2_path))
    text = "<|im_start|>user\nhi<|im_end|>"
    plain = tok.encode(text, add_special=False)
    parsed = tok.encode(text, add_special=False, parse_special=True)
    im_start, im_end = parsed[0], parsed[-1]
    assert (
        tok.token_to_bytes(im_start) == b"<|im_start|>"
        and tok.token_to_bytes(im_end) == b"<|im_end|>"
    )
    assert im_start not in plain and im_end not in plain
    assert im_end in tok.eog_ids and tok.eos_id in tok.eog_ids
    assert tok.decode(parsed) == "user\nhi"
    assert tok.decode(parsed, special=True) == text


def test_qwen_eog_and_bos(smollm2_path):
    tok = _core.Tokenizer(str(QWEN_VOCAB))
    texts = {tok.token_to_bytes(i) for i in tok.eog_ids}
    assert {b"<|im_end|>", b"<|endoftext|>"} <= texts
    assert tok.add_bos is False and tok.encode("hi", add_special=True) == tok.encode(
        "hi", add_special=False
    )


def test_invalid_ids_and_utf8(smollm2_path):
    tok = _core.Tokenizer(str(smollm2_path))
    with pytest.raises(InvalidArgumentError, match="123456789"):
        tok.decode([1, 123456789])
    with pytest.raises(InvalidArgumentError, match="-1"):
        tok.token_to_bytes(-1)
    with pytest.raises(ValueError):
        tok.decode([tok.n_vocab])
    # Surrogates cannot reach the C++ side; lone bytes are covered by decode's replacement.
    ids = [i for i in range(tok.n_vocab) if tok.token_to_bytes(i) == b"\xc3"]
    assert ids and tok.decode(ids + ids) == "\ufffd\ufffd"


# ---- SentencePiece -----------------------------------------------------------------------------


def _write_spm_gguf(sp, path: Path, algorithm: str) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    n = sp.get_piece_size()
    types = []
    for i in range(n):
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_space_prefix(True)
    w.add_string("tokenizer.ffnskip.spm_algorithm", algorithm)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def spm_case(request, tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp(f"spm-{request.param}")
    lines = english_text(300_000).split("\n") + [
        s.replace("\n", " ") for s in build_corpus(n_random=400)
    ]
    prefix = str(d / "m")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([ln for ln in lines if ln.strip()]),
        model_prefix=prefix,
        model_type=request.param,
        vocab_size=1200,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=0.9995,
        # The GGUF side does no normalization beyond " " -> "▁" and the dummy prefix.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    path = d / "vocab.gguf"
    _write_spm_gguf(sp, path, request.param)
    return sp, _core.Tokenizer(str(path)), build_corpus(["<s>", "</s>"])


def test_spm_matches_sentencepiece(spm_case):
    sp, tok, corpus = spm_case
    assert tok.model == "llama" and tok.add_bos
    bad = [(i, s) for i, s in enumerate(corpus) if tok.encode(s, add_special=False) != sp.encode(s)]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]!r}"


def test_spm_round_trip_and_bos(spm_case):
    sp, tok, corpus = spm_case
    bad = [s for s in corpus if tok.decode(tok.encode(s, add_special=True)) != s]
    assert not bad, bad[:3]
    assert tok.encode("hello", add_special=True)[0] == sp.bos_id()
    assert tok.decode(tok.encode(" x", add_special=False)) == " x"
    parsed = tok.encode("a</s>b", add_special=False, parse_special=True)
    assert sp.eos_id() in parsed and tok.decode(parsed, special=True) == "a</s>b"


# ---- malformed files ---------------------------------------------------------------------------


def _tiny_bpe(path: Path, **overrides) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    tokens = overrides.get("tokens", ["a", "b", "ab", "<s>"])
    w.add_tokenizer_model(overrides.get("model", "gpt2"))
    w.add_token_list(tokens)
    w.add_token_types(overrides.get("types", [1, 1, 1, 3]))
    w.add_token_merges(overrides.get("merges", ["a b"]))
    if "scores" in overrides:
        w.add_token_scores(overrides["scores"])
    w.add_bos_token_id(overrides.get("bos", 3))
    if "pre" in overrides:
        w.add_tokenizer_pre(overrides["pre"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


def test_tiny_bpe_and_unknown_pre(tmp_path):
    tok = _core.Tokenizer(str(_tiny_bpe(tmp_path / "t.gguf", pre="no-such-pre")))
    assert tok.encode("abab", add_special=False) == [2, 2]
    assert tok.warnings and "no-such-pre" in tok.warnings[0]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"bos": 4}, "bos_token_id"),
        ({"merges": ["a c"]}, "merges"),
        ({"merges": ["ab"]}, "merges"),
        ({"types": [1, 1, 1]}, "token_type"),
        ({"scores": [0.0, 0.0]}, "scores"),
        ({"model": "wordpiece"}, "wordpiece"),
    ],
)
def test_malformed_vocab_raises(tmp_path, overrides, match):
    with pytest.raises(ModelFormatError, match=match):
        _core.Tokenizer(str(_tiny_bpe(tmp_path / "bad.gguf", **overrides)))


def _raw_gguf(kv: list[tuple[str, int, bytes]]) -> bytes:
    """GGUF v3 with (key, type, encoded value) entries; GGUFWriter refuses empty arrays."""

    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x.encode())) + x.encode()

    body = b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in kv)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + body


def test_empty_vocab_raises(tmp_path):
    model = struct.pack("<Q", 4) + b"gpt2"
    empty = struct.pack("<IQ", 8, 0)
    p = tmp_path / "empty.gguf"
    p.write_bytes(
        _raw_gguf([("tokenizer.ggml.model", 8, model), ("tokenizer.ggml.tokens", 9, empty)])
    )
    with pytest.raises(ModelFormatError, match="empty"):
        _core.Tokenizer(str(p))
