"""ffnskip-native: a native GGUF decoder with adaptive FFN skipping."""

from __future__ import annotations

import os as _os

# Development hook: FFNSKIP_CORE_DIR names a CMake build dir whose freshly built _core module
# should be used instead of an installed one (see CONTRIBUTING.md, "fast inner loop").
if _os.environ.get("FFNSKIP_CORE_DIR"):
    __path__.insert(0, _os.environ["FFNSKIP_CORE_DIR"])  # noqa: F821 (package __path__)

from . import _core  # noqa: E402
from .errors import (  # noqa: E402
    BackendUnavailableError,
    CancelledError,
    ContextOverflowError,
    Error,
    InvalidArgumentError,
    ModelFileError,
    ModelFormatError,
    TemplateError,
)
from .generator import Generator  # noqa: E402
from .skip import SkipConfig  # noqa: E402

Tokenizer = _core.Tokenizer

__all__ = [
    "BackendUnavailableError",
    "CancelledError",
    "ContextOverflowError",
    "Error",
    "Generator",
    "InvalidArgumentError",
    "ModelFileError",
    "ModelFormatError",
    "SkipConfig",
    "TemplateError",
    "Tokenizer",
    "_core",
]
__version__ = "0.1.0"
