"""The C API (cpp/include/ffnskip/ffnskip_c.h): its C test program, its exported symbols, and what
it computes compared with the Python bindings.

The C tests (tests/capi/test_capi.c) run one case per process. The program is the one named by
FFNSKIP_CAPI_TEST_BIN (CI builds it with ASan + UBSan), or else it is compiled here with the
system C compiler against the header and library of this install (ffnskip_native.capi).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ffnskip_native
import numpy as np
import pytest
from ffnskip_native import Generator, _core, capi

ROOT = Path(__file__).resolve().parents[1]
TEST_SOURCE = ROOT / "tests" / "capi" / "test_capi.c"
HEADER_SOURCE = ROOT / "cpp" / "include" / "ffnskip" / "ffnskip_c.h"

CASES = [
    "version",
    "last_error_is_per_thread",
    "load_errors",
    "load_progress",
    "load_cancel",
    "load_cancel_from_thread",
    "model_info",
    "null_handles",
    "stale_and_foreign_handles",
    "tokenize",
    "detokenize",
    "context_create",
    "context_outlives_model",
    "eval_and_logits",
    "contexts_share_model_while_running",
    "sampler",
    "generate",
    "cancel_generate_from_thread",
    "cancel_eval_from_thread",
    "busy",
    "reentry_from_callback",
    "skip_config",
    "channel_sparse",
]
DUMPS = ["dump_profile", "dump_skip_stats", "dump_smollm2"]

# The skip profile stored in the tiny model. Layer 2's gate always fires (cos >= -1), so its
# span of 2 skips layers 3 and 4 of every token past the warm-up; layer 1's NaN never fires.
PROFILE = {
    "ffnskip.enabled": True,
    "ffnskip.warmup": 2,
    "ffnskip.cold_start": 1,
    "ffnskip.cold_end": 1,
    "ffnskip.span": 2,
    "ffnskip.threshold": [0.5, float("nan"), -1.0, 0.95, 0.9, 0.5],
}


@pytest.fixture(scope="module")
def test_bin(tmp_path_factory) -> Path:
    given = os.environ.get("FFNSKIP_CAPI_TEST_BIN")
    if given:
        return Path(given)
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build tests/capi/test_capi.c")
    out = tmp_path_factory.mktemp("capi") / "test_capi"
    cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", str(TEST_SOURCE), "-o", str(out)]
    cmd[1:1] = capi.cflags()
    cmd += capi.libs() + ["-lpthread", "-lm"]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    from conftest import _make_test_model

    make_model = _make_test_model()
    path = tmp_path_factory.mktemp("capi-model") / "tiny-profile.gguf"
    return make_model(
        path, arch="llama", wtype="F16", n_layer=6, seed=5, extra_metadata=dict(PROFILE)
    )


def run_case(test_bin: Path, case: str, smollm2: Path, tiny: Path) -> str:
    proc = subprocess.run(
        [str(test_bin), case, str(smollm2), str(tiny)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"},
    )
    assert proc.returncode == 0, f"{case} failed:\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def parse(output: str) -> dict[str, str]:
    """key=value pairs, several per line (a `text=` value runs to the end of its line)."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("text="):
            out["text"] = line[len("text=") :]
            continue
        for item in line.split():
            key, _, value = item.partition("=")
            out[key] = value
    return out


def ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",")] if value else []


def test_case_list_matches_program(test_bin):
    listed = subprocess.run(
        [str(test_bin), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed == CASES + DUMPS


@pytest.mark.parametrize("case", CASES)
def test_c_api_case(test_bin, case, smollm2_path, tiny_path):
    run_case(test_bin, case, smollm2_path, tiny_path)


def test_c_api_matches_python_on_smollm2(test_bin, smollm2_path, tiny_path):
    got = parse(run_case(test_bin, "dump_smollm2", smollm2_path, tiny_path))
    engine = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=128, n_threads=2)
    hp = engine.hparams
    assert int(got["n_vocab"]) == hp["n_vocab"] and int(got["n_layer"]) == hp["n_layer"]
    assert int(got["n_embd"]) == hp["n_embd"] and int(got["n_ctx_train"]) == hp["n_ctx_train"]
    assert int(got["bos"]) == engine.bos_id and int(got["eos"]) == engine.eos_id
    ids = engine.tokenize("Once upon a time, in a small village,", add_special=True)
    assert ints(got["tokens"]) == list(ids)
    # Same engine code and thread count: the logits agree to float rounding of the printout.
    logits = engine.eval(list(ids))
    c_logits = np.array([float(x) for x in got["logits"].split(",")])
    np.testing.assert_allclose(c_logits, logits[::997], rtol=1e-6, atol=1e-6)
    assert int(got["argmax"]) == int(np.argmax(logits))
    engine.close()
    # The C generation loop and the Python Generator's, greedy, give the same text.
    with Generator(smollm2_path, backend="cpu", n_ctx=128, n_threads=2) as g:
        text = "".join(g.generate("Once upon a time, in a small village,", 16, temperature=0))
    assert got["text"] == text


def test_c_api_stored_profile(test_bin, smollm2_path, tiny_path):
    lines = run_case(test_bin, "dump_profile", smollm2_path, tiny_path).splitlines()
    assert [line.split()[0] for line in lines] == ["stored", "active"]
    for line in lines:
        got = parse(line)
        assert int(got["enabled"]) == 1 and int(got["warmup"]) == PROFILE["ffnskip.warmup"]
        assert int(got["cold_start"]) == PROFILE["ffnskip.cold_start"]
        assert int(got["cold_end"]) == PROFILE["ffnskip.cold_end"]
        assert int(got["span"]) == PROFILE["ffnskip.span"]
        thresholds = [float(x) for x in got["threshold"].split(",")]
        assert len(thresholds) == len(PROFILE["ffnskip.threshold"])
        for have, want in zip(thresholds, PROFILE["ffnskip.threshold"]):
            assert (math.isnan(have) and math.isnan(want)) or have == pytest.approx(want)


def test_c_api_skip_stats_match_python(test_bin, smollm2_path, tiny_path):
    got = parse(run_case(test_bin, "dump_skip_stats", smollm2_path, tiny_path))
    # The same greedy generation through the Python bindings: the file's profile is active in a
    # new engine, as in a new C context.
    engine = _core.Engine(str(tiny_path), backend="cpu", n_ctx=256, n_threads=2)
    prompt = engine.tokenize("hello world", add_special=True)
    assert ints(got["prompt"]) == list(prompt)
    sampler = _core.Sampler(0)
    logits = engine.eval(list(prompt))
    generated: list[int] = []
    while len(generated) < 24:
        token = sampler.sample(logits, temperature=0.0)
        if engine.is_eog(token):
            break
        generated.append(token)
        if len(generated) < 24:
            logits = engine.eval_generated(token, len(generated) - 1)
    stats = engine.skip_stats()
    engine.close()
    assert ints(got["generated"]) == generated
    assert int(got["tokens"]) == stats["tokens"]
    assert ints(got["evaluated_layers"]) == list(stats["evaluated"])
    assert ints(got["skipped_layers"]) == list(stats["skipped"])
    assert float(got["ratio"]) == pytest.approx(stats["skip_ratio"], abs=1e-9)
    # The profile really skips: layer 2 always fires, so layers 3 and 4 are skipped.
    skipped = ints(got["skipped_layers"])
    assert skipped[3] > 0 and skipped[4] > 0 and skipped[0] == skipped[5] == 0


def header_functions(text: str) -> list[str]:
    return sorted(re.findall(r"FFNSKIP_API\s[^;]*?\b(ffnskip_\w+)\s*\(", text))


def test_exported_symbols_are_exactly_the_header_functions():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    documented = header_functions(capi.header_path().read_text())
    assert len(documented) > 30 and "ffnskip_model_load" in documented
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(capi.library_path())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported, nodes = [], []
    for line in out.splitlines():
        fields = line.split()
        name, kind = fields[-1], fields[-2]
        if kind == "A":  # the version node itself
            nodes.append(name)
        else:
            exported.append(name)
    abi = re.search(r"#define FFNSKIP_ABI_VERSION (\d+)", capi.header_path().read_text())
    assert abi is not None
    assert nodes == [f"FFNSKIP_{abi.group(1)}"]
    assert sorted(exported) == [f"{fn}@@FFNSKIP_{abi.group(1)}" for fn in documented]


@pytest.mark.parametrize(
    ("compiler", "flags"),
    [("cc", ["-x", "c", "-std=c99"]), ("c++", ["-x", "c++", "-std=c++11"])],
)
def test_header_compiles_alone_as_c99_and_cxx11(compiler, flags, tmp_path):
    exe = shutil.which(compiler)
    if exe is None:
        pytest.skip(f"no {compiler}")
    source = tmp_path / "uses_header.c"
    source.write_text(
        "#include <ffnskip/ffnskip_c.h>\n"
        "int main(void) { return ffnskip_abi_version() == FFNSKIP_ABI_VERSION ? 0 : 1; }\n"
    )
    cmd = [exe, *flags, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only"]
    subprocess.run([*cmd, *capi.cflags(), str(source)], check=True)


def test_installed_header_is_the_source_header_and_versions_agree():
    installed = capi.header_path().read_text()
    assert installed == HEADER_SOURCE.read_text()
    version = re.search(r'#define FFNSKIP_VERSION_STRING "([^"]+)"', installed)
    assert version is not None and version.group(1) == ffnskip_native.__version__


def test_capi_command_prints_flags():
    out = subprocess.run(
        [sys.executable, "-m", "ffnskip_native.capi", "--cflags", "--libs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    include, library = capi.c_api_paths()
    assert out == [
        f"-I{include}",
        f"-L{library.parent}",
        "-lffnskip",
        f"-Wl,-rpath,{library.parent}",
    ]
    assert (include / "ffnskip" / "ffnskip_c.h").is_file() and library.name == "libffnskip.so"
