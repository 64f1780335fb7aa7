"""gemma3 on the CPU backend against the numpy reference (tests/reference.py).

Random-weight models from tools/make_test_model.py with a sliding window of 8 over 64 tokens, so
the local layers (l % 6 != 5) drop keys for most positions while the global layer 5 sees them
all. Tolerances are those of test_forward.py: rel. L2 <= 1e-2 and the same top-1 at every
position. Both conditional FFN kinds run on the GeGLU FFN with a forced policy.

The real Gemma 3 270M Q4_K_M (tools/fetch_models.py; tests marked `big`) is held to the same
tolerance against the reference over 64 tokens, and its tokenizer to `sentencepiece` built from
the file's own vocabulary (tests/spm_proto.py).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from chat_templates import STYLES
from ffnskip_native import BackendUnavailableError, Generator, ModelFormatError, SkipConfig, _core
from ffnskip_native.chat import CHATML_TEMPLATE, GEMMA_TEMPLATE, ChatTemplate, fallback_template
from spm_proto import sentencepiece_from_gguf
from test_batch import check_serving_rows
from test_channel_sparse import compare_to_reference, recorded_thresholds
from test_forward import rel_err, rewrite, sample_tokens
from test_skip import check_policy
from tokenizer_corpus import build_corpus, english_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402

REL_TOL = 1e-2
WINDOW = 8
N_TOKENS = 64


def gemma(path: Path, wtype: str = "F32", n_layer: int = 7, **kw) -> Path:
    """A random gemma3 with layers 0-4 and 6 local (window 8, RoPE base 10000) and layer 5 global
    (RoPE base 1e6, as Gemma 3's)."""
    return make_model(path, arch="gemma3", wtype=wtype, n_layer=n_layer, rope_base=1e6, **kw)


@pytest.mark.parametrize("wtype", ["F32", "Q8_0", "Q4_K"])
def test_gemma3_matches_reference(tmp_path, wtype):
    shape = dict(n_embd=256, n_ff=512, n_head=4, n_head_kv=1) if wtype == "Q4_K" else {}
    path = gemma(tmp_path / "g.gguf", wtype, seed=5, **shape)
    ref = reference.load(path)
    tokens = sample_tokens(N_TOKENS, ref.hp.n_vocab, seed=1)
    expected = ref.forward(tokens)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=N_TOKENS, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"{wtype}: max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_gemma3_hparams(tmp_path):
    path = gemma(tmp_path / "g.gguf", n_layer=1)
    hp = _core.Engine(str(path), backend="cpu", n_ctx=16).hparams
    assert (hp["arch"], hp["rope"], hp["ffn_act"]) == ("gemma3", "neox", "gelu_tanh")
    assert (hp["sliding_window"], hp["swa_period"]) == (WINDOW, 6)
    assert hp["embd_scale"] == pytest.approx(8.0)  # sqrt(n_embd = 64)
    assert hp["attn_scale"] == pytest.approx(0.25)  # 1 / sqrt(head_dim = 16)


def test_sliding_window_changes_only_later_positions(tmp_path):
    # The reference agreeing means nothing if neither applied the window: a window as long as the
    # context must give the same logits before position WINDOW and different ones after it.
    narrow = gemma(tmp_path / "narrow.gguf", seed=4)
    wide = gemma(tmp_path / "wide.gguf", seed=4, sliding_window=N_TOKENS)
    tokens = sample_tokens(N_TOKENS, 288, seed=2)
    a = _core.Engine(str(narrow), backend="cpu", n_ctx=N_TOKENS).logits(tokens, all_positions=True)
    b = _core.Engine(str(wide), backend="cpu", n_ctx=N_TOKENS).logits(tokens, all_positions=True)
    assert rel_err(a[:WINDOW], b[:WINDOW]).max() <= 1e-6
    assert rel_err(a[WINDOW:], b[WINDOW:]).min() > 10 * REL_TOL


@pytest.mark.parametrize("n_threads", [1, 3])
def test_gemma3_decode_reproduces_batched_prompt(tmp_path, n_threads):
    path = gemma(tmp_path / "g.gguf", "Q8_0", tied=True, seed=2)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=N_TOKENS, n_threads=n_threads)
    tokens = sample_tokens(48, eng.n_vocab, seed=3)
    batched = eng.logits(tokens, all_positions=True)
    eng.reset()
    stepwise = np.stack([eng.eval([t]) for t in tokens])
    assert rel_err(stepwise, batched).max() <= 2e-3
    assert np.array_equal(stepwise.argmax(1), batched.argmax(1))


def test_gemma3_serving_rows_past_the_window(tmp_path):
    # Batched serving steps: sequences at different positions, each past the window for most of
    # its tokens, give bitwise the logits of decoding alone, and those match the reference.
    path = gemma(tmp_path / "g.gguf", "Q8_0", seed=7)
    check_serving_rows(path, reference.load(path).forward, REL_TOL)


def test_gemma3_forced_block_skip_matches_reference(tmp_path):
    # threshold -1 fires on every evaluated hot layer: with span 1 the hot layers alternate.
    path = gemma(tmp_path / "g.gguf", "F16", n_layer=6, seed=3)
    skip = SkipConfig(threshold=-1.0, span=1, warmup=0, cold_start=1, cold_end=1)
    stats, _ = check_policy(path, skip)
    assert stats["skipped"] == [0, 0, 32, 0, 32, 0]


def test_gemma3_channel_sparse_matches_reference(tmp_path):
    path = gemma(tmp_path / "g.gguf", "Q8_0", n_embd=96, n_ff=160, seed=6)
    tokens = sample_tokens(24, 288, seed=3)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    # Thresholds of 0 keep every entry but run every matrix by input channel: exact decisions,
    # logits within the forward tolerance, and the GELU gate's values match the reference's.
    keep_all = SkipConfig(threshold=math.nan, warmup=2, t_in=0.0, t_gate=0.0, t_mid=0.0)
    logits = eng.logits(tokens, all_positions=True, skip=keep_all.to_core(), prompt_len=6)
    assert eng.skip_stats()["channel_runs"] == [16] * 7
    want, _, _ = reference.load(path).forward_with_skip(tokens, 6, keep_all)
    assert rel_err(logits, want).max() <= REL_TOL
    # Real filters at 40/30/30% of the engine's own |h|, |gelu(gate)|, |m| histograms.
    t_in, t_gate, t_mid = recorded_thresholds(eng, tokens, 6)
    cfg = SkipConfig(threshold=math.nan, warmup=2, t_in=t_in, t_gate=t_gate, t_mid=t_mid)
    stats = compare_to_reference(path, cfg, tokens, 6)
    assert 0.1 < stats["ffn_bytes_saved"] < 0.9
    assert all(d > 0 for d in stats["dropped_gate"])


@pytest.mark.parametrize(
    "name",
    ["blk.0.post_attention_norm.weight", "blk.1.post_ffw_norm.weight", "blk.0.attn_q_norm.weight"],
)
def test_gemma3_requires_its_norms(tmp_path, name):
    src = gemma(tmp_path / "g.gguf", n_layer=2)
    bad = rewrite(src, tmp_path / "bad.gguf", drop=name)
    with pytest.raises(ModelFormatError, match=name.replace(".", r"\.")):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_gemma3_requires_a_sliding_window(tmp_path):
    src = gemma(tmp_path / "g.gguf", n_layer=1)
    bad = rewrite(src, tmp_path / "bad.gguf", drop_key="gemma3.attention.sliding_window")
    with pytest.raises(ModelFormatError, match=r"gemma3\.attention\.sliding_window"):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"gemma3.final_logit_softcapping": 30.0}, r"final_logit_softcapping"),
        ({"gemma3.attn_logit_softcapping": 50.0}, r"attn_logit_softcapping"),
        ({"gemma3.attention.sliding_window_pattern": 4}, r"sliding_window_pattern"),
        ({"gemma3.attention.sliding_window": 0}, r"sliding_window = 0 is out of range"),
        ({"gemma3.attention.value_length": 8}, r"value_length"),
    ],
)
def test_unsupported_gemma3_metadata_is_an_error(tmp_path, meta, message):
    path = gemma(tmp_path / "g.gguf", n_layer=1, extra_metadata=meta)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(path), backend="cpu", n_ctx=16)


def with_metadata(src: Path, dst: Path, changes: dict) -> Path:
    """A copy of src with some metadata values replaced (types kept)."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "gemma3")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = changes.get(key, f.contents())
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, f.types[0])
    for t in r.tensors:
        data = np.array(t.data)
        w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_gemma3_27b_scale_needs_a_head_size(tmp_path):
    # The 62-layer rule divides n_embd by n_head: a file where that is 0 would scale q.k by inf.
    src = gemma(tmp_path / "g.gguf", n_layer=1, extra_metadata={"gemma3.attention.key_length": 16})
    bad = with_metadata(
        src, tmp_path / "bad.gguf", {"gemma3.block_count": 62, "gemma3.embedding_length": 2}
    )
    with pytest.raises(ModelFormatError, match="smaller than head_count"):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_cuda_refuses_gemma3(tmp_path):
    if not _core.cuda_available():
        pytest.skip("no CUDA device")
    path = gemma(tmp_path / "g.gguf", n_layer=1)
    with pytest.raises(BackendUnavailableError, match="gemma3"):
        _core.Engine(str(path), backend="cuda", n_ctx=16)


# ---- the Gemma turn format (files without a template) --------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there "}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]


def test_gemma_fallback_template_renders_gemma_turns():
    text = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>").render(CONVERSATIONS[1])
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # The same text as the Gemma 3-style template of the chat tests, for string contents.
    style = ChatTemplate(STYLES["gemma3"], bos_token="<bos>")
    for messages in CONVERSATIONS:
        for prompt in (True, False):
            fallback = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>")
            assert fallback.render(messages, prompt) == style.render(messages, prompt)


class _MarkerVocab:
    """A tokenizer whose vocabulary has `markers` as single special tokens."""

    def __init__(self, markers: tuple) -> None:
        self.markers = markers

    def encode(self, text: str, add_special: bool, parse_special: bool) -> list:
        return [7] if parse_special and text in self.markers else [1, 2, 3]


def test_fallback_template_is_gemma_only_with_its_turn_markers(tmp_path):
    assert fallback_template(_MarkerVocab(("<start_of_turn>", "<end_of_turn>"))) == GEMMA_TEMPLATE
    assert fallback_template(_MarkerVocab(("<start_of_turn>",))) == CHATML_TEMPLATE
    plain = _core.Tokenizer(str(gemma(tmp_path / "g.gguf", n_layer=1)))  # byte-level BPE
    assert fallback_template(plain) == CHATML_TEMPLATE


# ---- the real Gemma 3 270M ----------------------------------------------------------------------

PROSE = (
    "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers "
    "that changed physics: the photoelectric effect, Brownian motion, special relativity, and the "
    "equivalence of mass and energy. Each of them would have been enough for a career; together "
    "they opened the century's two great theories."
)


@pytest.mark.big
def test_real_gemma3_hparams(gemma270_path):
    hp = _core.Engine(str(gemma270_path), backend="cpu", n_ctx=16).hparams
    assert (hp["n_layer"], hp["n_embd"], hp["n_head"], hp["n_head_kv"]) == (18, 640, 4, 1)
    assert (hp["head_dim"], hp["sliding_window"], hp["swa_period"]) == (256, 512, 6)
    assert (hp["n_vocab"], hp["tied_output"], hp["rope_base"]) == (262144, True, 1e6)


@pytest.mark.big
def test_real_gemma3_matches_reference(gemma270_path):
    eng = _core.Engine(str(gemma270_path), backend="cpu", n_ctx=N_TOKENS, n_threads=2)
    tokens = eng.tokenize(PROSE, True, False)[:N_TOKENS]
    assert len(tokens) == N_TOKENS
    got = eng.logits(tokens, all_positions=True)
    expected = reference.load(gemma270_path).forward(tokens)
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.big
def test_real_gemma3_tokenizer_matches_sentencepiece(gemma270_path):
    sp = sentencepiece_from_gguf(gemma270_path)
    tok = _core.Tokenizer(str(gemma270_path))
    assert tok.n_vocab == sp.get_piece_size() == 262144
    corpus = build_corpus() + english_text(20_000).split("\n") + [PROSE]
    bad = [s for s in corpus if tok.encode(s, add_special=False) != sp.encode(s)]
    assert not bad, f"{len(bad)} of {len(corpus)} differ, first: {bad[:3]!r}"
    assert tok.encode("hi", add_special=True) == [2, *sp.encode("hi")]
    assert sp.id_to_piece(2) == "<bos>"


@pytest.mark.big
def test_real_gemma3_answers_and_formats_chat(gemma270_path):
    with Generator(str(gemma270_path), backend="cpu", n_ctx=256, n_threads=2) as g:
        # The file is the pretrained model (no chat template): a completion prompt shows it works.
        answer = "".join(
            g.generate(
                "Question: What is the capital of France?\nAnswer:",
                temperature=0.0,
                max_new_tokens=4,
            )
        )
        assert answer.strip().startswith("Paris")
        text = g.apply_chat_template([{"role": "user", "content": "Hi"}])
        ids = g.tokenize(text, add_bos=False, special=True)
    # <bos> <start_of_turn> user \n Hi <end_of_turn> \n <start_of_turn> model \n
    assert ids[:3] == [2, 105, 2364] and ids[-5:] == [106, 107, 105, 4368, 107]
