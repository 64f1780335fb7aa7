"""Bad command-line input gets one line on stderr and exit status 2 (usage, argparse's
convention) or 1 (a file or value the library refused), never a traceback (issue 16, item 15).

Only the command line is used here, so the file runs unchanged against any version of the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402

NOT_UTF8 = b"caf\xe9 \xff\xfe\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "bad.txt").write_bytes(NOT_UTF8)
    (d / "ok.txt").write_text("hello world, " * 400, encoding="utf-8")
    (d / "out").mkdir()
    return {
        "MODEL": str(make_model(d / "m.gguf", wtype="Q8_0", n_layer=6, seed=2)),
        "BAD": str(d / "bad.txt"),
        "OK": str(d / "ok.txt"),
        "MISSING": str(d / "missing.txt"),
        "DIR": str(d / "out"),
    }


def ffnskip(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffnskip_native.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        env=dict(os.environ),
    )


FAST_BENCH = ["--n-prompt", "8", "--n-gen", "4", "--repeat", "1", "--no-bandwidth"]
FAST_CALIBRATE = (
    "--calib-text OK --heldout-text OK --calib-tokens 256 --heldout-tokens 256 --ctx 128 "
    "--prompt-len 16 --sensitivity-tokens 0 --spans 1 --cold-ends 0 --candidates 1 --threads 1 "
    "--cold-start 1 --cold-end 1 --no-plot --quiet"
).split()

CASES = {
    # name: (arguments, stdin, exit status, words the message must contain)
    "eval missing text": (["eval", "MODEL", "--text", "MISSING"], b"", 1, ["MISSING", "not found"]),
    "eval non-UTF-8 text": (["eval", "MODEL", "--text", "BAD"], b"", 1, ["BAD", "not UTF-8"]),
    "eval text is a directory": (["eval", "MODEL", "--text", "DIR"], b"", 1, ["DIR"]),
    "eval missing prompts": (["eval", "MODEL", "--prompts", "MISSING"], b"", 1, ["MISSING"]),
    "eval negative window count": (
        ["eval", "MODEL", "--text", "OK", "--ctx", "64", "--prompt-len", "8", "--max-windows=-1"],
        b"",
        2,
        ["--max-windows"],
    ),
    "bench ratio not a number": (["bench", "MODEL", "--skip-ratios", "abc"], b"", 2, ["abc"]),
    "bench ratio nan": (["bench", "MODEL", "--skip-ratios", "nan"], b"", 2, ["--skip-ratios"]),
    "bench ratio unreachable": (
        ["bench", "MODEL", "--skip-ratios", "0.9", *FAST_BENCH],
        b"",
        1,
        ["0.9", "not reachable"],
    ),
    "run non-UTF-8 stdin": (["run", "MODEL", "-p", "-", "-n", "2"], NOT_UTF8, 1, ["not UTF-8"]),
    "chat non-UTF-8 stdin": (["chat", "MODEL", "-n", "2"], NOT_UTF8, 1, ["not UTF-8"]),
    "run non-UTF-8 skip file": (
        ["run", "MODEL", "-p", "x", "-n", "2", "--skip", "BAD"],
        b"",
        1,
        ["BAD", "not UTF-8"],
    ),
    "calibrate no match runs": (
        ["calibrate", "MODEL", *FAST_CALIBRATE, "--max-match-runs", "0"],
        b"",
        2,
        ["--max-match-runs"],
    ),
    "calibrate profile is a directory": (
        ["calibrate", "MODEL", *FAST_CALIBRATE, "--profile", "DIR"],
        b"",
        1,
        ["DIR", "directory"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_without_traceback(files, case):
    argv, stdin, status, words = CASES[case]
    r = ffnskip([files.get(a, a) for a in argv], stdin)
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert r.returncode == status, err
    assert err.count("ffnskip") >= 1 and "error:" in err
    for word in words:
        assert files.get(word, word) in err, err
