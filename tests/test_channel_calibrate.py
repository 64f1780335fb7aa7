"""Kind 2 calibration and tools: ``ffnskip calibrate --kind channel|both --target-bytes``, the
profile it stores, and ``ffnskip eval`` / ``ffnskip bench`` on it (byte figures against the
engine's own skip_stats)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from ffnskip_native import Generator, SkipConfig, _core
from ffnskip_native._util import dumps_json
from ffnskip_native.calibrate.channel_search import (
    ByteModel,
    dropped_energy,
    greedy_path,
    parse_variant,
)
from ffnskip_native.calibrate.texts import builtin_texts
from ffnskip_native.cli import main
from ffnskip_native.profile_gguf import read_profile_gguf, same_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402

TARGET = 0.3
TOL = 0.01
SMALL = [
    "--calib-tokens", "384", "--heldout-tokens", "384", "--ctx", "128", "--prompt-len", "16",
    "--search-tokens", "96", "--threads", "1", "--byte-tol", str(TOL), "--quiet",
]  # fmt: skip
BLOCK_SMALL = [
    "--skip-warmup", "4", "--sensitivity-tokens", "48", "--spans", "1,2", "--cold-ends", "0,1",
    "--candidates", "1", "--no-plot",
]  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("chcal") / "m.gguf", wtype="Q4_0", n_layer=6, seed=5)


@pytest.fixture(scope="module")
def heldout_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chtext") / "heldout.txt"
    path.write_text("\n".join(p.read_text() for p in builtin_texts("heldout")))
    return path


@pytest.fixture(scope="module")
def calibrated(model, tmp_path_factory):
    """``ffnskip calibrate --kind channel``: (model copy, report JSON, profile JSON)."""
    out = tmp_path_factory.mktemp("chout")
    args = ["calibrate", str(model), "--kind", "channel", "--target-bytes", str(TARGET)]
    args += ["--write-gguf", str(out / "c.gguf"), "--report-json", str(out / "r.json")]
    args += ["--profile", str(out / "p.json"), "--no-block-baseline", *SMALL]
    assert main(args) == 0
    return out / "c.gguf", json.loads((out / "r.json").read_text()), out / "p.json"


def run_json(capsys, args: list[str]) -> dict:
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_calibrated_profile_reaches_the_byte_target_and_is_stored(calibrated):
    gguf, report, profile_json = calibrated
    rows = {(r["split"], r["method"]): r for r in report["rows"]}
    chosen = rows[("calib", f"channel-{report['allocation']}")]
    # The engine's count on the text the target was matched on.
    assert abs(chosen["ffn_bytes_saved"] - TARGET) <= 2 * TOL
    held = rows[("heldout", "channel-calibrated")]
    assert abs(held["ffn_bytes_saved"] - TARGET) <= 0.05
    # Baseline (a) was matched to the profile's held-out bytes.
    uniform = rows[("heldout", "channel-uniform")]
    assert abs(uniform["ffn_bytes_saved"] - held["ffn_bytes_saved"]) <= 2 * TOL
    assert report["heldout_comparison"]["calibrated"]["ppl_skip"] == held["ppl_skip"]
    stored = read_profile_gguf(gguf)
    assert stored is not None
    assert same_profile(stored, SkipConfig.from_json(profile_json.read_text()))
    assert stored.channel_list("t_in") or stored.channel_list("t_gate")
    assert len(report["levels"]) == 6 and max(report["levels"]) > 0
    # The Generator decodes with the stored profile by default, and reads fewer FFN bytes.
    with Generator(str(gguf), backend="cpu", n_threads=1, n_ctx=128) as gen:
        assert same_profile(gen.skip, stored)
        list(gen.generate("the cat", max_new_tokens=8))
        assert gen.stats["skip"]["ffn_bytes_saved"] > 0.1


def test_eval_uses_the_stored_profile_and_counts_bytes_like_skip_stats(
    calibrated, heldout_text, capsys
):
    gguf = calibrated[0]
    args = ["eval", str(gguf), "--text", str(heldout_text), "--ctx", "128", "--prompt-len", "16"]
    args += ["--max-windows", "3", "--threads", "1", "--json"]
    out = run_json(capsys, args)
    tf = out["teacher_forced"]
    assert {"ppl_dense", "ppl_skip", "ffn_bytes_saved", "layer_ffn_bytes_saved"} <= set(tf)
    assert out["skip"]["t_in"] is not None or out["skip"]["t_gate"] is not None
    assert abs(tf["ffn_bytes_saved"] - TARGET) <= 0.05
    assert tf["ppl_skip"] != tf["ppl_dense"]
    # The same windows through the engine directly: its skip_stats give the same byte figures.
    eng = _core.Engine(str(gguf), backend="cpu", n_ctx=256, n_threads=1)
    try:
        toks = eng.tokenize(heldout_text.read_text(), False, False)
        read = np.zeros(6)
        tokens = 0
        for w in range(3):
            eng.logits(toks[w * 128 : (w + 1) * 128], skip=eng.skip_profile, prompt_len=16)
            st = eng.skip_stats()
            read += st["ffn_bytes_read"]
            tokens += st["tokens"]
            dense = np.asarray(st["ffn_bytes_dense"], dtype=np.float64)
    finally:
        eng.close()
    assert tf["ffn_bytes_saved"] == pytest.approx(
        1 - read.sum() / (tokens * dense.sum()), abs=1e-12
    )
    assert tf["layer_ffn_bytes_saved"] == pytest.approx(
        list(1 - read / (tokens * dense)), abs=1e-12
    )


def test_eval_no_skip_is_dense(calibrated, heldout_text, capsys):
    args = ["eval", str(calibrated[0]), "--text", str(heldout_text), "--ctx", "128"]
    args += ["--prompt-len", "16", "--max-windows", "2", "--threads", "1", "--json", "--no-skip"]
    tf = run_json(capsys, args)["teacher_forced"]
    assert tf["ppl_skip"] == tf["ppl_dense"]
    assert tf["ffn_bytes_saved"] == 0.0 and tf["kl_mean"] == 0.0


def test_eval_skip_json_takes_channel_fields(model, heldout_text, capsys):
    cfg = {"threshold": None, "warmup": 0, "t_in": [0.0] * 5 + [0.5], "t_mid": 0.05}
    args = ["eval", str(model), "--text", str(heldout_text), "--ctx", "128", "--prompt-len", "16"]
    args += ["--max-windows", "2", "--threads", "1", "--json", "--skip", json.dumps(cfg)]
    out = run_json(capsys, args)
    tf = out["teacher_forced"]
    assert out["skip"]["t_in"][-1] == 0.5
    drop_in = tf["layer_dropped"]["in"]
    # t_in 0 keeps every entry; only the last layer drops FFN inputs, and t_mid drops in all.
    assert drop_in[:5] == [0.0] * 5 and drop_in[5] > 0.1
    assert all(d > 0 for d in tf["layer_dropped"]["mid"])
    assert tf["ffn_bytes_saved"] == pytest.approx(np.mean(tf["layer_ffn_bytes_saved"]), abs=1e-9)
    assert tf["layer_ffn_bytes_saved"][5] > max(tf["layer_ffn_bytes_saved"][:5])


def test_bench_reports_profile_bytes_and_the_ideal(calibrated, capsys):
    args = ["bench", str(calibrated[0]), "--n-prompt", "16", "--n-gen", "8", "--repeat", "1"]
    r = run_json(capsys, [*args, "--threads", "1", "--no-bandwidth", "--json"])
    assert r["decode_tok_s"] > 0 and r["dense_decode_tok_s"] > 0
    p = r["profile"]
    dense, read = p["ffn_bytes_dense_per_token"], p["ffn_bytes_read_per_token"]
    assert dense == r["ffn_bytes"]
    assert p["ffn_bytes_saved"] == pytest.approx(1 - read / dense, abs=1e-12)
    assert abs(p["ffn_bytes_saved"] - TARGET) <= 0.1
    assert len(p["layer_ffn_bytes_saved"]) == 6
    bpt = r["bytes_per_token"]
    assert p["ideal_speedup"] == pytest.approx(bpt / (bpt - (dense - read)))
    assert p["fraction_of_ideal"] == pytest.approx(p["speedup"] / p["ideal_speedup"])
    assert p["speedup"] == pytest.approx(r["decode_tok_s"] / r["dense_decode_tok_s"])


def test_kind_both_stores_a_block_profile_and_channel_thresholds(model, tmp_path):
    out = tmp_path / "b.gguf"
    args = ["calibrate", str(model), "--kind", "both", "--target-bytes", "0.35"]
    args += ["--block-share", "0.3", "--write-gguf", str(out), "--report-json", str(tmp_path / "r")]
    args += ["--profile", str(tmp_path / "p.json"), "--no-block-baseline", *SMALL, *BLOCK_SMALL]
    assert main(args) == 0
    report = json.loads((tmp_path / "r").read_text())
    stored = read_profile_gguf(out)
    assert stored is not None and stored.warmup == 4
    assert any(not math.isnan(t) for t in stored.threshold_list())
    assert stored.channel_list("t_in") or stored.channel_list("t_gate")
    chosen = next(r for r in report["rows"] if r["split"] == "calib")
    assert chosen["skip_ratio"] > 0  # the block profile skips blocks under the channel one
    assert report["block_calibration"]["goal"]["target_skip"] == pytest.approx(0.3 * 0.35)
    calib = [r for r in report["rows"] if r["split"] == "calib"]
    assert any(abs(r["ffn_bytes_saved"] - 0.35) <= 2 * TOL for r in calib)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--kind", "channel"], "needs --target-bytes"),
        (["--kind", "channel", "--target-bytes", "1.5"], "--target-bytes must be in"),
        (["--kind", "channel", "--target-bytes", "0.3", "--plot", "x.png"], "--plot"),
    ],
)
def test_bad_channel_calibrations_are_errors_and_write_nothing(
    model, tmp_path, capsys, extra, message
):
    out = tmp_path / "c.gguf"
    args = ["calibrate", str(model), *extra, "--write-gguf", str(out), *SMALL]
    assert main([*args, "--no-block-baseline", "--profile", str(tmp_path / "p.json")]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "p.json").exists()


def test_unknown_variant_is_a_usage_error(model, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(model), "--kind", "channel", "--channel-variants", "in_out"])
    assert exc.value.code == 2
    assert "unknown channel variant 'in_out'" in capsys.readouterr().err
    assert parse_variant("in_mid@2").filters[1] == ("t_mid", "hist_m", 2.0)


def test_null_threshold_round_trips():
    # A kind-2-only profile has threshold NaN, which the profile JSON calibrate writes (and
    # eval --json prints) holds as null.
    cfg = SkipConfig(threshold=math.nan, warmup=0, t_in=[0.1, math.nan], t_mid=0.2)
    text = dumps_json(cfg.to_dict())
    assert '"threshold": null' in text
    back = SkipConfig.from_json(text)
    assert math.isnan(back.threshold_list()[0])
    assert back.channel_list("t_mid") == [0.2] and math.isnan(back.channel_list("t_in")[1])


def test_dropped_energy_matches_the_samples():
    rng = np.random.default_rng(0)
    values = np.abs(rng.standard_t(4, size=(3, 20000))) * np.array([[0.01], [1.0], [30.0]])
    edges = _core.channel_hist_edges().astype(np.float64)
    hist = np.stack(
        [np.bincount(np.searchsorted(edges, v, "right") - 1, minlength=edges.size) for v in values]
    )
    for s in (0.1, 0.4, 0.7):
        want = []
        for v in values:
            t = np.quantile(v, s)
            want.append((v[v < t] ** 2).sum() / (v**2).sum())
        # Bins are 1/32 octave wide: centres stand in for values within ~2%.
        np.testing.assert_allclose(dropped_energy(hist, s), want, rtol=0.05, atol=1e-4)
    assert dropped_energy(hist, 0.0).tolist() == [0.0] * 3


def test_greedy_spends_sparsity_where_it_is_cheap():
    n_layer, step = 4, 0.05
    grid = np.arange(0.0, 0.9 + 1e-9, step)
    energy = np.stack([np.full(n_layer, s**3) for s in grid])  # equal shapes
    bytes_model = ByteModel([], np.full(n_layer, 0.25))
    bytes_model.add(0.5, [0.5] * n_layer)  # saved = level in every layer
    probe_kl = np.array([1.0, 0.1, 0.1, 10.0])
    path = greedy_path(probe_kl, 0.5, energy, bytes_model, 0.4, step)
    assert np.all(np.diff(path.saved) > 0) and path.saved[-1] >= 0.4
    last = path.levels[-1]
    # Equal layers take turns (one step apart at most); dearer ones get less.
    assert abs(last[1] - last[2]) <= step + 1e-9 and min(last[1], last[2]) > last[0] > last[3]
    # Predicted bytes: the weighted sum of per-layer levels under this byte model.
    np.testing.assert_allclose(path.saved, path.levels.mean(axis=1))
    i = path.index_for(0.2)
    assert path.saved[i] >= 0.2 and (i == 0 or path.saved[i - 1] < 0.2)
