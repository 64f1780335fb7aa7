"""The skip flags: one spelling in every command, --skip as JSON or a file, the old spellings
with a notice, and `ffnskip eval` / `ffnskip bench` using the model's stored profile."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ffnskip_native import InvalidArgumentError, SkipConfig
from ffnskip_native.cli import build_parser
from ffnskip_native.profile_gguf import write_profile_gguf
from ffnskip_native.skip_flags import SkipFlagError, read_skip_json, skip_from_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402

# The arguments each command needs besides the skip flags.
COMMANDS = {
    "run": ["run", "m.gguf", "-p", "x"],
    "chat": ["chat", "m.gguf"],
    "eval": ["eval", "m.gguf", "--text", "t.txt"],
    "bench": ["bench", "m.gguf"],
}
FLAGS = [
    "--skip", '{"threshold": [0.9, null, 0.8], "warmup": 7}',
    "--skip-span", "2", "--skip-cold-start", "1", "--skip-cold-end", "0",
]  # fmt: skip


def parse(command: str, *flags: str):
    return build_parser([command]).parse_args([*COMMANDS[command], *flags])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_the_same_skip_flags(command):
    cfg = skip_from_flags(parse(command, *FLAGS), None)
    assert cfg.warmup == 7 and cfg.span == 2 and cfg.cold_start == 1 and cfg.cold_end == 0
    th = cfg.threshold_list()
    assert th[0] == 0.9 and math.isnan(th[1]) and th[2] == 0.8
    stored = SkipConfig(threshold=0.95, warmup=5)
    assert skip_from_flags(parse(command), stored) is None  # no flag: the file's profile
    assert skip_from_flags(parse(command, "--no-skip"), stored) is False
    over = skip_from_flags(parse(command, "--skip-threshold", "0.5", "--skip-warmup", "3"), stored)
    assert over == SkipConfig(threshold=0.5, warmup=3)  # fields over the stored profile
    with pytest.raises(SkipFlagError, match="--no-skip"):
        skip_from_flags(parse(command, "--no-skip", "--skip-warmup", "3"), stored)


def test_skip_takes_a_json_object_or_a_file(tmp_path, capsys):
    cfg = SkipConfig(threshold=[0.9, math.nan], span=1, warmup=2)
    path = tmp_path / "p.json"
    path.write_text(cfg.to_json(), encoding="utf-8")
    assert read_skip_json(str(path)) == read_skip_json(cfg.to_json())
    assert read_skip_json(str(path)).threshold_list()[0] == 0.9
    assert capsys.readouterr().err == ""
    with pytest.raises(InvalidArgumentError, match="neither a JSON object nor an existing file"):
        read_skip_json(str(tmp_path / "missing.json"))
    with pytest.raises(InvalidArgumentError, match="unknown field"):
        read_skip_json('{"no_such_field": 1}')


def test_old_spellings_still_work_with_a_notice(tmp_path, capsys):
    new = parse(
        "eval",
        "--skip-threshold", "0.9", "--skip-span", "1", "--skip-warmup", "0",
        "--skip-cold-start", "1", "--skip-cold-end", "2",
    )  # fmt: skip
    assert capsys.readouterr().err == ""
    old = parse(
        "eval",
        "--threshold", "0.9", "--span", "1", "--warmup", "0", "--cold-start", "1",
        "--cold-end", "2",
    )  # fmt: skip
    assert vars(old) == vars(new)
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 5
    for line, old_flag in zip(notices, ["threshold", "span", "warmup", "cold-start", "cold-end"]):
        assert line.startswith(f"ffnskip: warning: --{old_flag} is deprecated")
        assert line.endswith(f"use --skip-{old_flag}")
    path = tmp_path / "p.json"
    path.write_text('{"span": 2}', encoding="utf-8")
    assert read_skip_json(f"@{path}") == SkipConfig(span=2)
    assert f"--skip @{path} is deprecated" in capsys.readouterr().err
    # calibrate's --warmup is the searched profile's warm-up: --skip-warmup
    args = build_parser(["calibrate"]).parse_args(["calibrate", "m.gguf", "--warmup", "9"])
    assert args.skip_warmup == 9 and "--warmup is deprecated" in capsys.readouterr().err


# ---- eval and bench on a model that stores a profile ---------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    model = make_model(d / "m.gguf", wtype="F16", n_layer=6, seed=5)
    profile = SkipConfig(threshold=-1.0, span=1, warmup=0, cold_start=1, cold_end=1)
    out = write_profile_gguf(model, d / "p.gguf", profile)
    text = d / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    return out, text


def ffnskip_json(*args: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "ffnskip_native.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_eval_uses_the_stored_profile_and_no_skip_is_dense(stored):
    model, text = stored
    window = ["--text", str(text), "--ctx", "128", "--prompt-len", "16"]
    res = ffnskip_json("eval", str(model), *window)
    tf = res["teacher_forced"]
    # threshold -1, span 1 on hot layers 1..4: layers 2 and 4 skip for every generated token.
    assert res["skip"]["threshold"] == -1.0 and tf["skip_ratio"] == pytest.approx(2 / 6)
    assert tf["ppl_skip"] != tf["ppl_dense"]
    dense = ffnskip_json("eval", str(model), *window, "--no-skip")["teacher_forced"]
    assert dense["ppl_dense"] == tf["ppl_dense"]
    assert dense["ppl_skip"] == dense["ppl_dense"] and dense["skip_ratio"] == 0.0
    assert dense["kl_mean"] == 0.0 and dense["top1_agreement"] == 1.0
    # --skip JSON replaces the stored profile: span 0 skips layers 2, 3 and 4 after layer 1.
    span0 = '{"threshold": -1.0, "span": 0, "warmup": 0, "cold_start": 1, "cold_end": 1}'
    other = ffnskip_json("eval", str(model), *window, "--skip", span0)
    assert other["teacher_forced"]["skip_ratio"] == pytest.approx(3 / 6)
    assert other["teacher_forced"]["ppl_dense"] == tf["ppl_dense"]


def test_bench_measures_the_stored_profile_against_dense(stored):
    model, _ = stored
    fast = ["--n-prompt", "16", "--n-gen", "8", "--repeat", "1", "--no-bandwidth"]
    r = ffnskip_json("bench", str(model), *fast)
    assert r["profile"]["config"]["threshold"] == -1.0
    assert r["profile"]["skip_ratio"] == pytest.approx(2 / 6)
    assert r["decode_tok_s"] > 0 and r["dense_decode_tok_s"] > 0
    assert r["profile"]["speedup"] == pytest.approx(r["decode_tok_s"] / r["dense_decode_tok_s"])
    r = ffnskip_json("bench", str(model), *fast, "--no-skip")
    assert "profile" not in r and r["decode_tok_s"] == r["dense_decode_tok_s"]
