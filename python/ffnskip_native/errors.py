"""Exception and warning types of ffnskip_native (the C++ engine maps its errors onto these)."""

from __future__ import annotations


class Error(Exception):
    """Base class of every error ffnskip_native raises on purpose."""


class ModelFormatError(Error, ValueError):
    """A GGUF file is malformed or uses something this engine does not support."""


class ModelFileError(Error, OSError):
    """A model file could not be opened or read (missing, a directory, unreadable)."""


class InvalidArgumentError(Error, ValueError):
    """A bad argument: a token id out of range, an invalid SkipConfig, a bad sampling value."""


class ContextOverflowError(Error):
    """The tokens do not fit in the context window (n_ctx)."""


class BackendUnavailableError(Error):
    """The requested backend is not compiled in, or no device is present."""


class ResourceError(Error, MemoryError):
    """The machine cannot give what a request needs: memory for the KV cache (the message names
    the bytes), address space, or the threads of the thread pool."""


class CancelledError(Error):
    """Work was stopped by cancel() or by a callback."""


class BusyError(Error, RuntimeError):
    """Another thread is using the Generator (or engine) right now: one operation at a time."""


class TemplateError(Error, ValueError):
    """A chat template is invalid or tried to do something the sandbox forbids."""


class ContextLengthWarning(UserWarning):
    """n_ctx is beyond the context length the model was trained on."""
