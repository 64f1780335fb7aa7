#!/usr/bin/env python3
"""Hostile GGUF bytes through the Python API: _core.gguf_parse_bytes, _core.Tokenizer and
_core.Engine (on a temp file). Any ffnskip_native.Error subclass is a clean rejection; any other
exception (or a crash of the interpreter) is a bug.

    PYTHONPATH=python FFNSKIP_CORE_DIR=build/dev-fuzzpy python fuzz/py/fuzz_python_api.py \\
        build/fuzz-corpus/gguf_load -runs=2000               # atheris (libFuzzer flags)
    ... python fuzz/py/fuzz_python_api.py --plain build/fuzz-corpus/gguf_load --runs 2000

Without atheris (or with --plain) a seeded random-mutation loop runs over the same corpus.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import instrumented, run  # noqa: E402

with instrumented("ffnskip_native"):
    from ffnskip_native import _core
    from ffnskip_native.errors import Error

_TMP = Path(tempfile.mkdtemp(prefix="ffnskip-pyfuzz-"))
_PATH = _TMP / "input.gguf"
# An input whose tensor table claims more than this is not worth a forward pass here (the C++
# tiny_model target covers the forward pass at full speed).
_MAX_FILE = 1 << 20


def one_input(data: bytes) -> None:
    try:
        info = _core.gguf_parse_bytes(data)
    except Error:
        return
    assert isinstance(info["metadata"], dict) and isinstance(info["tensors"], list)
    if len(data) > _MAX_FILE:
        return
    _PATH.write_bytes(data)
    try:
        tok = _core.Tokenizer(str(_PATH))
    except Error:
        tok = None
    if tok is not None:
        ids = tok.encode("Hello <s> wörld", add_special=True, parse_special=True)
        assert all(0 <= i < tok.n_vocab for i in ids)
        tok.decode(ids)
        try:
            tok.decode([tok.n_vocab, -1])
        except Error:
            pass
    try:
        eng = _core.Engine(str(_PATH), "cpu", 16, 1)
    except Error:
        return
    eng.close()


if __name__ == "__main__":
    try:
        run(one_input, sys.argv[1:])
    finally:
        for p in _TMP.iterdir():
            os.unlink(p)
        _TMP.rmdir()
