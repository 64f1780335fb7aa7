"""ffnskip-native: a native GGUF decoder with adaptive FFN skipping."""

from __future__ import annotations

import os as _os

# Development hook: FFNSKIP_CORE_DIR names a CMake build dir whose freshly built _core module
# should be used instead of an installed one (see CONTRIBUTING.md, "fast inner loop").
if _os.environ.get("FFNSKIP_CORE_DIR"):
    __path__.insert(0, _os.environ["FFNSKIP_CORE_DIR"])  # noqa: F821 (package __path__)

from .errors import (  # noqa: E402
    BackendUnavailableError,
    BusyError,
    CancelledError,
    ContextLengthWarning,
    ContextOverflowError,
    Error,
    InvalidArgumentError,
    ModelFileError,
    ModelFormatError,
    ResourceError,
    TemplateError,
)

try:
    from . import _core
except ImportError as _exc:
    # A source checkout without a build: the pure-Python tools (convert) still import; the
    # engine's names raise an error that says what is missing.
    _core_error = _exc

    def __getattr__(name: str):
        if name in ("Generator", "SkipConfig", "Tokenizer", "_core"):
            raise ImportError(
                f"ffnskip_native.{name} needs the compiled extension ffnskip_native._core, "
                f"which could not be imported ({_core_error}); install the package with pip"
            )
        raise AttributeError(f"module 'ffnskip_native' has no attribute {name!r}")
else:
    from .generator import Generator
    from .skip import SkipConfig

    Tokenizer = _core.Tokenizer

__all__ = [
    "BackendUnavailableError",
    "BusyError",
    "CancelledError",
    "ContextLengthWarning",
    "ContextOverflowError",
    "Error",
    "Generator",
    "InvalidArgumentError",
    "ModelFileError",
    "ModelFormatError",
    "ResourceError",
    "SkipConfig",
    "TemplateError",
    "Tokenizer",
    "_core",
]
__version__ = "0.1.0"
