"""ffnskip eval / ffnskip_native.quality: metrics checked against numpy computations on the
engine's own logits, and policy edge cases with known answers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ffnskip_native import SkipConfig, _core
from ffnskip_native.quality import TeacherForcedEval, generation_agreement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("q") / "m.gguf", wtype="F16", n_layer=6, seed=5)


@pytest.fixture(scope="module")
def engine(model):
    return _core.Engine(str(model), backend="cpu", n_ctx=256, n_threads=2)


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def tokens(n, n_vocab, seed=0):
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, n)]


def test_unreachable_threshold_equals_dense(engine):
    ev = TeacherForcedEval(engine, tokens(200, engine.n_vocab), ctx=64, prompt_len=8)
    r = ev.score(SkipConfig(threshold=float("nan"), warmup=0))
    assert r.n_scored == 3 * (64 - 8 - 1)
    assert r.ppl_skip == pytest.approx(r.ppl_dense, rel=1e-12)
    assert r.top1_agreement == 1.0
    assert abs(r.kl_mean) < 1e-9
    assert r.skip_ratio == 0.0


def test_metrics_match_numpy_on_engine_logits(engine):
    toks = tokens(128, engine.n_vocab, seed=1)
    skip = SkipConfig(threshold=-1.0, span=1, warmup=4, cold_start=1, cold_end=1)
    ev = TeacherForcedEval(engine, toks, ctx=128, prompt_len=16)
    r = ev.score(skip)
    dense = log_softmax(engine.logits(toks, all_positions=True))[16:-1]
    sk = log_softmax(engine.logits(toks, all_positions=True, skip=skip.to_core(), prompt_len=16))
    sk = sk[16:-1]
    tgt = np.array(toks[17:])
    rows = np.arange(len(tgt))
    assert r.ppl_dense == pytest.approx(math.exp(-dense[rows, tgt].mean()), rel=1e-6)
    assert r.ppl_skip == pytest.approx(math.exp(-sk[rows, tgt].mean()), rel=1e-6)
    assert r.kl_mean == pytest.approx((np.exp(dense) * (dense - sk)).sum(1).mean(), rel=1e-4)
    assert r.top1_agreement == pytest.approx((dense.argmax(1) == sk.argmax(1)).mean())
    assert r.kl_mean > 0
    # threshold -1 and span 1 on hot layers 1..4: layers 2 and 4 skip for every gated token.
    past_warmup = 128 - 16 - 4
    assert r.skip_ratio == pytest.approx(2 * past_warmup / ((128 - 16) * 6))


def test_generation_agreement_identical_without_skipping(engine):
    res = generation_agreement(engine, ["ab", "hello"], SkipConfig(enabled=False), 12)
    assert res["token_match_rate"] == 1.0 and res["identical_continuations"] == 2
    forced = SkipConfig(threshold=-1.0, span=0, warmup=0, cold_start=1, cold_end=1)
    res = generation_agreement(engine, ["ab", "hello"], forced, 12)
    assert res["skip_ratio"] == pytest.approx(3 / 6)


def test_short_text_is_a_clear_error(engine):
    from ffnskip_native import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="at least one window"):
        TeacherForcedEval(engine, tokens(50, engine.n_vocab), ctx=64, prompt_len=8)


def test_cli_eval_json(model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    env_py = [sys.executable, "-m", "ffnskip_native.cli", "eval", str(model)]
    out = subprocess.run(
        env_py
        + [
            "--text",
            str(text),
            "--ctx",
            "128",
            "--prompt-len",
            "16",
            "--threshold",
            "-1",
            "--span",
            "1",
            "--warmup",
            "0",
            "--cold-start",
            "1",
            "--cold-end",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout)
    tf = res["teacher_forced"]
    assert tf["skip_ratio"] == pytest.approx(2 / 6)
    assert tf["ppl_skip"] != tf["ppl_dense"]
    assert res["skip"]["threshold"] == -1.0
