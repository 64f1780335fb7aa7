"""Typed reading of the converter's JSON inputs: one place that checks type and range.

Every value the converter takes from config.json, tokenizer.json, tokenizer_config.json,
generation_config.json or the safetensors index goes through a Fields accessor, which raises
ConvertError naming the file, the key and what was expected. A JSON null counts as absent
(Hugging Face writes `"head_dim": null` and the like for "use the default").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import ConvertError

# GGUF stores counts, dimensions and the context length as uint32.
U32_MAX = 2**32 - 1

_MISSING: Any = object()


def parse_json(text: str | bytes, where: str) -> Any:
    """json.loads with every failure (syntax, encoding, nesting too deep) as ConvertError."""
    try:
        return json.loads(text)
    except RecursionError as e:  # the json module recurses once per nesting level
        raise ConvertError(f"{where}: JSON nested too deeply") from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise ConvertError(f"{where}: cannot read JSON ({e})") from e


def read_json(path: Path) -> Any:
    """The parsed contents of a JSON file (ConvertError if unreadable or not JSON)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConvertError(f"{path}: cannot read JSON ({e.strerror or e})") from e
    return parse_json(data, str(path))


def _kind(value: Any) -> str:
    """How a JSON value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "an array" if isinstance(value, list) else "an object"


def is_int(value: Any) -> bool:
    """A JSON integer (bool is an int subclass in Python, but not in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Fields:
    """A JSON object with accessors that check each value's type and range.

    where: how messages name the object, e.g. "config.json" or "tokenizer.json: model".
    """

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ConvertError(f"{where}: expected a JSON object, found {_kind(obj)}")
        self.obj: Dict[str, Any] = obj
        self.where = where

    @staticmethod
    def load(path: Path, *, optional: bool = False) -> Fields:
        """The JSON object in a file (an empty one if optional and the file does not exist)."""
        if optional and not path.is_file():
            return Fields({}, path.name)
        return Fields(read_json(path), path.name)

    def error(self, key: str, expected: str) -> ConvertError:
        return ConvertError(
            f"{self.where}: {key} must be {expected}, found {_kind(self.obj.get(key))}"
        )

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def _lookup(self, key: str, default: Any) -> Tuple[bool, Any]:
        """(True, value) when the key holds a non-null value, else (False, default)."""
        value = self.obj.get(key)
        if value is not None:
            return True, value
        if default is _MISSING:
            raise ConvertError(f"{self.where}: {key} is missing")
        return False, default

    def get_int(self, key: str, default: Any = _MISSING, *, lo: int = 1, hi: int = U32_MAX) -> Any:
        """An integer in [lo, hi] (default when absent; missing without a default is an error)."""
        present, value = self._lookup(key, default)
        if not present:
            return value
        if not is_int(value) or not lo <= value <= hi:
            raise self.error(key, f"an integer in [{lo}, {hi}]")
        return value

    def get_float(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        gt: float = -math.inf,
        lt: float = math.inf,
    ) -> Any:
        """A finite number in the open interval (gt, lt), as float."""
        present, value = self._lookup(key, default)
        if not present:
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not gt < value < lt:
            if lt == math.inf:
                expected = f"a finite number > {gt}"
            else:
                expected = f"a finite number in ({gt}, {lt})"
            raise self.error(key, expected)
        return float(value)

    def get_bool(self, key: str, default: Any = _MISSING) -> Any:
        present, value = self._lookup(key, default)
        if not present:
            return value
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def get_str(self, key: str, default: Any = _MISSING) -> Any:
        present, value = self._lookup(key, default)
        if not present:
            return value
        if not isinstance(value, str):
            raise self.error(key, "a string")
        return value

    def get_obj(self, key: str, *, required: bool = False) -> Fields:
        """A nested object (an empty one when absent and not required)."""
        _, value = self._lookup(key, _MISSING if required else {})
        if not isinstance(value, dict):
            raise self.error(key, "an object")
        return Fields(value, f"{self.where}: {key}")

    def get_list(self, key: str) -> List[Any]:
        """A JSON array (empty when absent)."""
        _, value = self._lookup(key, [])
        if not isinstance(value, list):
            raise self.error(key, "an array")
        return value

    def get_str_list(self, key: str) -> List[str]:
        """A JSON array of strings (empty when absent)."""
        items = self.get_list(key)
        if not all(isinstance(s, str) for s in items):
            raise self.error(key, "an array of strings")
        return items

    def items(self) -> Iterator[Tuple[str, Any]]:
        return iter(self.obj.items())

    def raw(self, key: str) -> Optional[Any]:
        """The value as parsed, unchecked (for structures read node by node by the caller)."""
        return self.obj.get(key)
