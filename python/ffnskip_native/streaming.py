"""Incremental text assembly for streaming generation (pure Python, no engine needed).

Tokens arrive as raw bytes that may cut a UTF-8 character in half, and a stop string may be
spread over several tokens. :class:`Utf8Assembler` turns bytes into whole characters and
:class:`StopMatcher` withholds any text that could still turn out to be the start of a stop
string, so a stream never shows a split character nor any part of a stop string.
"""

from __future__ import annotations

import codecs
from typing import Iterable, Sequence

from .errors import InvalidArgumentError


class Utf8Assembler:
    """Bytes in, complete characters out.

    Bytes of an incomplete UTF-8 sequence are kept until the sequence completes; invalid bytes
    become U+FFFD (as soon as they are known to be invalid, or at :meth:`flush`).
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """Add bytes; return the characters they complete (possibly "")."""
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        """End of stream: return what is pending, a dangling partial sequence as U+FFFD."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending(self) -> bool:
        """True while bytes of an unfinished character are held."""
        return bool(self._decoder.getstate()[0])


def normalize_stop(stop: str | Iterable[str] | None) -> list[str]:
    """Accept None, one string or an iterable of strings; reject empty or non-str entries."""
    if stop is None:
        return []
    if isinstance(stop, str):
        items = [stop]
    else:
        try:
            items = list(stop)
        except TypeError:
            raise InvalidArgumentError(
                f"stop must be a str or an iterable of str, got {type(stop).__name__}"
            ) from None
    for s in items:
        if not isinstance(s, str):
            raise InvalidArgumentError(f"stop strings must be str, got {type(s).__name__}")
        if not s:
            raise InvalidArgumentError("stop strings must not be empty")
    return items


class StopMatcher:
    """Finds the first occurrence of any stop string in a stream of text pieces.

    :meth:`feed` returns ``(text_to_emit, stopped)``. Text that ends with a proper prefix of a
    stop string is held back until the next piece decides it; once a stop string is complete,
    the text before it is emitted and everything from the stop string on is dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = list(stops)
        self._held = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def held(self) -> str:
        """Text withheld because it may be the start of a stop string."""
        return self._held

    def feed(self, text: str) -> tuple[str, bool]:
        if self._stopped:
            return "", True
        if not self._stops:
            return text, False
        buf = self._held + text
        # Every emitted character is outside any stop-string prefix, so a match can only start
        # inside `buf`; the earliest start wins (ties: the longer stop string, a no-op here).
        first = -1
        for s in self._stops:
            i = buf.find(s)
            if i != -1 and (first == -1 or i < first):
                first = i
        if first != -1:
            self._held = ""
            self._stopped = True
            return buf[:first], True
        hold = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self._held = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """End of stream without a stop: the withheld text is ordinary text after all."""
        out, self._held = self._held, ""
        return "" if self._stopped else out
