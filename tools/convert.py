#!/usr/bin/env python3
"""Convert a Hugging Face Llama/Mistral/Qwen2 checkpoint to GGUF (see ffnskip_native.convert).

    python tools/convert.py HF_DIR --outfile model.gguf --outtype q8_0

Works from a source checkout without the compiled engine: the converter is pure Python, so when
the package cannot be imported normally (not installed, or its _core extension not built) its
directory is registered as a bare package and only the pure-Python modules are loaded.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

_REPO_PYTHON = Path(__file__).resolve().parent.parent / "python"


def _load_main():  # noqa: ANN202 (returns the CLI entry point)
    try:
        import ffnskip_native  # noqa: F401
    except Exception:  # not installed, _core missing or stale: any failure of the package init
        for name in [
            m for m in sys.modules if m == "ffnskip_native" or m.startswith("ffnskip_native.")
        ]:
            del sys.modules[name]
        pkg = types.ModuleType("ffnskip_native")
        pkg.__path__ = [str(_REPO_PYTHON / "ffnskip_native")]  # type: ignore[attr-defined]
        sys.modules["ffnskip_native"] = pkg
    return importlib.import_module("ffnskip_native.convert").main


if __name__ == "__main__":
    if (_REPO_PYTHON / "ffnskip_native").is_dir() and str(_REPO_PYTHON) not in sys.path:
        sys.path.insert(0, str(_REPO_PYTHON))
    sys.exit(_load_main()())
