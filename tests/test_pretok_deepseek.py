"""deepseek-llm / deepseek-coder pre-tokenizers: ids identical to HF `tokenizers`.

DeepSeek's tokenizer.json files are a Sequence of Split(Isolated) pre-tokenizers followed by
ByteLevel(use_regex=False). The reference here is HF `tokenizers` with exactly that Sequence over
the Qwen2.5 vocab + merges, and the file under test is a vocab-only copy of the Qwen2.5 vocab whose
tokenizer.ggml.pre is set to the DeepSeek name. (No DeepSeek vocab ships with the tests; the
pre-tokenizer is what differs, and a 151k byte-level vocab with CJK merges exercises it.)
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

import gguf
import pytest
from ffnskip_native import _core
from tokenizer_corpus import build_corpus

ROOT = Path(__file__).resolve().parents[1]
QWEN_VOCAB = ROOT / "tests" / "data" / "qwen2.5-vocab.gguf"

# deepseek-ai/deepseek-llm-7b-base tokenizer.json (same list in llama.cpp's llama-vocab.cpp,
# LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM). The letter class is spelled with escapes: several of its
# members (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) are canonical singletons that NFC
# normalization would rewrite into other code points.
_LLM_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
    "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
    "\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115"
    "\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943"
)
_CJK = "\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff"
DEEPSEEK_LLM_SPLITS = [
    "[\r\n]",
    "\\s?[" + _LLM_LETTERS + "]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[" + _CJK + "]+",
    "\\p{N}+",
]
# deepseek-ai/deepseek-coder-*-base tokenizer.json (llama.cpp: LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_CODER).
DEEPSEEK_CODER_SPLITS = [
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[" + _CJK + "]+",
    "\\p{N}",
]
SPLITS = {"deepseek-llm": DEEPSEEK_LLM_SPLITS, "deepseek-coder": DEEPSEEK_CODER_SPLITS}

# Strings aimed at the DeepSeek classes, on top of the shared corpus: the explicit letter class
# (its edges, canonical singletons, excluded lowercase scripts), the re-split of letter pieces by
# the ASCII range of the punctuation class, \s+$ at piece ends, U+3000 (space and punctuation),
# the wide U+0800..U+9FA5 "CJK" range, fullwidth forms, and \p{N} beyond ASCII.
EXTRA = [
    " café au lait",
    "naïve résumé Ångström",
    "ώ ι ΐ Ί Ω K \u212a\u2126",
    "µ ƺƻƼ ʓʔʕ ʯʰ",
    "Բարեւ աշխարհ",  # Armenian: capitals are in the class, lowercase is not
    "Ⴀა Ა",  # Georgian
    "Ꭰꭰ ᏸ",  # Cherokee
    "𐐀𐑏𐐨 𞤀𞥃",  # Deseret, Adlam
    "ℌℍ ℂ ℕ ℹ",
    "Ａｂｃ！？　，。「」",
    "\u3000\u3000x\u3000",
    "一二三 四五\u3000六",
    "中文，测试。",
    "“quoted” ‘single’ „low‟",
    "∀x ∈ ℝ: x² ≥ 0 → ✓",
    "हिन्दी ไทย ひらがな 한국어",
    "a \t ",
    "x   ",
    "end\t\t",
    "  \u00a0 ",
    "\u2028\u2029 \u0085",
    "Ⅻ ½ ١٢٣ ४२ 12345",
    "x1y22z333",
    "foo(bar, baz) -> qux;\n\treturn 0;\r\n",
    "  leading  and  trailing  ",
    " " * 300 + "x",
    "ab" * 200,
]


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_with_pre(src: Path, dst: Path, pre: str) -> Path:
    """Vocab-only copy of `src` with tokenizer.ggml.pre replaced."""
    tool = _load_tool("make_vocab_gguf")
    meta = [m for m in tool.read_metadata(src.read_bytes()) if m[0] != "tokenizer.ggml.pre"]
    meta.append(("tokenizer.ggml.pre", 8, pre.encode(), None))
    tool.write_vocab_only(meta, dst)
    return dst


def _hf_reference(path: Path, splits: list[str]):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    r = gguf.GGUFReader(str(path))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return tok


@pytest.fixture(scope="module", params=["deepseek-llm", "deepseek-coder"])
def ds_case(request, tmp_path_factory):
    name = request.param
    path = _write_with_pre(QWEN_VOCAB, tmp_path_factory.mktemp(name) / "vocab.gguf", name)
    corpus = build_corpus() + EXTRA
    return name, _core.Tokenizer(str(path)), _hf_reference(path, SPLITS[name]), corpus


def test_known_name_without_warning(ds_case):
    name, tok, _, _ = ds_case
    assert tok.pre == name and tok.model == "gpt2"
    assert tok.warnings == []


def test_ids_match_hf(ds_case):
    _, tok, ref, corpus = ds_case
    assert len(corpus) >= 2000
    bad = [
        (i, s)
        for i, s in enumerate(corpus)
        if tok.encode(s, add_special=False) != ref.encode(s).ids
    ]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]!r}"


def _boundary_strings(n_random: int, seed: int = 99) -> list[str]:
    """Every edge of every explicit range (first-1, first, last, last+1) next to contexts that
    each class decision shows in (a non-ASCII letter, a space after a non-class character, CJK,
    digits, U+3000...), then random strings over the same characters: a wrong table entry or
    step moves a piece boundary."""
    rng = random.Random(seed)
    edges: set[int] = set()
    punct = "!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002"
    for cls in (_LLM_LETTERS, _CJK, punct):
        for m in re.finditer(r"(.)-(.)|(.)", cls, re.S):
            a, b = (m[1], m[2]) if m[1] else (m[3], m[3])
            edges.update({ord(a) - 1, ord(a), ord(b), ord(b) + 1})
    pool = [chr(c) for c in sorted(edges) if not 0xD800 <= c <= 0xDFFF]
    ctx = [" ", "é", "Ω", "©", "© ", "a", "1", "٣", "\u3000", "\n", "!", "ƻ", "一", "  "]
    out = [c + x for c in pool for x in ctx] + [x + c for c in pool for x in ctx]
    pool += ctx + list("\t\r\u00a0\u2003\u0085")
    out += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(n_random)]
    return out


def _trained_vocab(path: Path, strings: list[str], pre: str) -> Path:
    """A byte-level BPE trained on `strings` with no split at all, written as a vocab-only GGUF.

    Its merges span every boundary a pre-tokenizer might draw in these strings, so a piece
    boundary in the wrong place changes the ids (with the Qwen vocab, many rare-character
    boundaries are invisible: no merge crosses them)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=60000,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Each string three times: min_frequency 2 then admits the pairs of every single string.
    tok.train_from_iterator(strings * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


@pytest.mark.parametrize("name", ["deepseek-llm", "deepseek-coder"])
def test_ids_match_hf_on_range_edges(name, tmp_path):
    strings = _boundary_strings(1000)
    path = _trained_vocab(tmp_path / "edges.gguf", strings, name)
    tok, ref = _core.Tokenizer(str(path)), _hf_reference(path, SPLITS[name])
    assert tok.warnings == []
    bad = [s for s in strings if tok.encode(s, add_special=False) != ref.encode(s).ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]!r}"


def test_round_trip(ds_case):
    _, tok, _, corpus = ds_case
    bad = [s for s in corpus if tok.decode(tok.encode(s, add_special=False)) != s]
    assert not bad, bad[:3]


def test_pieces_differ_from_qwen2(ds_case):
    # Guards against the name silently mapping to another rule: Qwen2 glues punctuation to the
    # following letters (".b"), both DeepSeek rules isolate it.
    _, tok, ref, _ = ds_case
    qwen = _core.Tokenizer(str(QWEN_VOCAB))
    s = "a.b x.y"
    assert tok.encode(s, add_special=False) == ref.encode(s).ids
    assert tok.encode(s, add_special=False) != qwen.encode(s, add_special=False)
