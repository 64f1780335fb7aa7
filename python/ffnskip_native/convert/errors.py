"""The converter's error type."""

from __future__ import annotations

from ..errors import Error


class ConvertError(Error):
    """A Hugging Face checkpoint cannot be converted (missing file, unsupported model, bad data)."""
