"""Argument checks of the public API. Each raises InvalidArgumentError naming the argument, the
accepted range and the value, at the call: before a lazy generator starts, and before a value
reaches the C++ layer, where an int that does not fit or a float that overflows float32 would
otherwise surface as a raw TypeError or at the first token."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Optional, Union

from .errors import InvalidArgumentError

INT32_MAX = 2**31 - 1
FLT_MAX = 3.4028234663852886e38  # the largest finite float32
FLT_MIN = 1.1754943508222875e-38  # the smallest normal float32 (its reciprocal is finite)


def int_arg(name: str, value: Any, lo: int, hi: int = INT32_MAX) -> int:
    """`value` as an int in [lo, hi]; bools are refused, numpy integers accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def optional_int_arg(name: str, value: Any, lo: int, hi: int = INT32_MAX) -> Optional[int]:
    return None if value is None else int_arg(name, value, lo, hi)


def seed_arg(value: Any) -> int:
    """A sampler seed: any int in [0, 2**64) (the sampler's seed is 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**64:
        raise InvalidArgumentError(f"seed must be an int in [0, 2**64), got {value!r}")
    return int(value)


def float32_arg(
    name: str, value: Any, lo: Union[int, float], hi: Union[int, float], zero: str = ""
) -> float:
    """`value` as a float in [lo, hi], both float32-representable; `zero` (a description such as
    "greedy") also admits 0. The C++ layer takes float32: a value outside float32's normal range
    would become inf or 0 there, or make 1/value overflow."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if zero and x == 0.0:
        return 0.0
    if not lo <= x <= hi:  # NaN fails too
        allowed = f"0 ({zero}) or in" if zero else "in"
        raise InvalidArgumentError(
            f"{name} must be {allowed} [{lo!r}, {hi!r}] (float32), got {value!r}"
        )
    return x


def str_arg(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__}")
    return value


def path_arg(name: str, value: Any) -> str:
    """A file path (str, bytes or os.PathLike) as str. A NUL byte is refused: C would open the
    path up to it, a different file."""
    try:
        path = os.fsdecode(os.fspath(value))
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be a path (str or os.PathLike), got {type(value).__name__}"
        ) from None
    if "\0" in path:
        raise InvalidArgumentError(f"{name} contains a NUL character: {path!r}")
    return path
