"""What a chat-template operation may cost: the per-render budget, and upper bounds on the size of
what a string- or list-building operation would produce, computed from its arguments before it runs.

Every bound here is conservative (never smaller than the real result) and costs at most one pass
over data that already exists, so a template cannot make the check itself expensive. Sizes are in
characters for strings and in items for lists.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MethodType
from typing import Any, Callable, Dict, Optional

from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined
from jinja2.utils import Namespace
from markupsafe import Markup

# Integers a template builds stay below this many bits (2466 decimal digits): far beyond any
# index or count a prompt needs, and below CPython's 4300-digit limit for int -> str, so printing
# one never fails. Without it, `x * x` in a loop or `(10**1024)**1024` runs for minutes.
MAX_INT_BITS = 8192
# tojson(indent=N): the indent is repeated once per nesting level on every line. Real templates
# use 2 or 4; 1024 keeps the widest line of a nested dump far below any output limit.
MAX_JSON_INDENT = 1024
# One step is about a microsecond of interpreter work: one loop iteration, call, filter, test or
# operator, plus one per this many characters the operation scans or copies.
SCAN_UNIT = 1024


class LimitError(SecurityError):
    """A template hit one of the render limits (the message names it)."""


@dataclass(frozen=True)
class Limits:
    """The bounds of one render; see ChatTemplate for the defaults and why."""

    max_output_chars: int
    max_iterations: int
    max_built_bytes: int
    max_seconds: float


class Budget:
    """What one render has left. Operations charge steps before they run and the bytes of what
    they built after; both raise LimitError when exhausted, as does the wall-clock deadline."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps_left = limits.max_iterations
        self.bytes_left = limits.max_built_bytes
        self.deadline = time.monotonic() + limits.max_seconds

    def step(self, n: int = 1) -> None:
        self.steps_left -= n
        if self.steps_left < 0:
            raise LimitError(
                f"the template did more than {self.limits.max_iterations} steps (loop iterations, "
                "calls, filters and operators; max_iterations)"
            )
        if time.monotonic() > self.deadline:
            raise LimitError(
                f"the template ran longer than {self.limits.max_seconds:g} s (max_seconds)"
            )

    def check_size(self, size: int, what: object) -> None:
        """Refuse to build a value of ``size`` characters or items (an upper bound)."""
        limit = self.limits.max_output_chars
        if size > limit:
            raise LimitError(
                f"{what} would build a value of up to {size} characters or items; "
                f"the limit is {limit} (max_output_chars)"
            )
        if size > self.bytes_left:
            self._over_bytes(what)

    def check_bytes(self, nbytes: int, what: object) -> None:
        """Refuse an operation that would build ``nbytes`` (an upper bound) beyond the budget."""
        if nbytes > self.bytes_left:
            self._over_bytes(what)

    def charge(self, nbytes: int, what: object) -> None:
        self.bytes_left -= nbytes
        if self.bytes_left < 0:
            self._over_bytes(what)

    def charge_value(self, value: Any, what: object, new_items: bool = False) -> None:
        """Charge the memory of a value an operation just built; with ``new_items`` the items of
        a list too (split(), items() and batch() make new ones; '+' and slices share them).
        Also refuses over-wide integers."""
        if isinstance(value, (str, bytes)):
            self.charge(sys.getsizeof(value), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            nbytes = sys.getsizeof(value)
            if new_items and not isinstance(value, dict):
                nbytes += sum(map(sys.getsizeof, value))
            self.charge(nbytes, what)
        elif isinstance(value, int):
            check_int_bits(value.bit_length(), what)
        elif isinstance(value, Namespace):
            attrs = value._Namespace__attrs  # type: ignore[attr-defined]
            self.charge(sys.getsizeof(value) + sys.getsizeof(attrs), what)
        elif value is not None and not isinstance(value, (float, Undefined)):
            self.charge(sys.getsizeof(value), what)

    def _over_bytes(self, what: object) -> None:
        raise LimitError(
            f"{what}: the template built more than {self.limits.max_built_bytes} bytes of strings "
            "and lists in total (max_built_bytes)"
        )


def check_int_bits(bits: int, what: object) -> None:
    if bits > MAX_INT_BITS:
        raise LimitError(
            f"{what} would build an integer of {bits} bits; the limit is {MAX_INT_BITS}"
        )


def scan_cost(value: Any) -> int:
    """Steps for an operation that reads ``value`` once in C (a copy, ``in``, ``==``):
    about a microsecond per 1024 characters or 16 items."""
    if isinstance(value, (str, bytes)):
        return len(value) // SCAN_UNIT
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return len(value) // 16
    return 0


def item_cost(value: Any) -> int:
    """Steps for a filter that runs Python code on each item (sort keys, str() of each ...):
    one per item (sorting measured 1-3 us an item)."""
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return len(value)
    return scan_cost(value)


def materialize(value: Any, budget: Budget, what: object) -> Any:
    """A one-shot iterator (generator, map ...) as a list, so that sizes can be checked before
    the consuming operation runs; anything else unchanged."""
    if not isinstance(value, Iterator):
        return value
    items = []
    limit = budget.limits.max_output_chars
    for item in value:
        items.append(item)
        budget.step()
        if len(items) > limit:
            budget.check_size(len(items), what)
    budget.charge_value(items, what, new_items=True)
    return items


# ---- text sizes ----------------------------------------------------------------------------------


def int_digits(n: int) -> int:
    """Upper bound on len(str(n)), len(oct(n)) and len(hex(n)) with sign and prefix."""
    return n.bit_length() // 3 + 4


_FLOAT_CHARS = 24  # len(repr(-1.7976931348623157e308))
_FIXED_FLOAT_CHARS = 330  # '%f' / '%d' of the largest float: 309 digits, sign, point, 6 decimals


def _str_repr_size(s: str) -> int:
    # repr() escapes backslashes and quotes; non-printable characters become \xNN (4 chars) or,
    # outside ASCII, up to \UNNNNNNNN (10 chars). Counting them exactly would cost a pass per
    # character class; isprintable() is one pass and almost always true for prompt text.
    if s.isprintable():
        return len(s) + s.count("\\") + s.count("'") + 2
    return (4 if s.isascii() else 10) * len(s) + 2


class _Walk:
    """Upper bound on len(repr(obj)), walking containers once. Stops as soon as the bound passes
    ``limit`` (so shared or self-referencing structures cannot make it slow)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.active: set[int] = set()

    def add(self, n: int) -> bool:
        self.total += n
        return self.total <= self.limit

    def repr(self, obj: Any) -> bool:
        if isinstance(obj, str):
            return self.add(_str_repr_size(obj) + (8 if isinstance(obj, Markup) else 0))
        if obj is None or isinstance(obj, bool):
            return self.add(5)
        if isinstance(obj, int):
            return self.add(int_digits(obj))
        if isinstance(obj, float):
            return self.add(_FLOAT_CHARS)
        if isinstance(obj, Undefined):
            return self.add(16)
        if isinstance(obj, MethodType):
            # "<bound method Type.name of <repr of self>>"
            return self.add(len(obj.__qualname__) + 24) and self.repr(obj.__self__)
        if isinstance(obj, Namespace):
            return self.add(12) and self.repr(obj._Namespace__attrs)  # type: ignore[attr-defined]
        if isinstance(obj, Mapping):
            return self.container(obj, list(obj.items()))
        if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ in _VIEWS:
            return self.container(obj, obj)
        # Functions, generators, ranges, macros, cyclers ...: fixed-size reprs. Anything else
        # comes from the caller's own context, not from the template.
        return self.add(len(repr(obj)))

    def container(self, obj: Any, items: Any) -> bool:
        key = id(obj)
        if key in self.active:  # repr() prints a cycle as [...]
            return self.add(5)
        self.active.add(key)
        try:
            if not self.add(20):  # brackets and the longest type prefix ("frozenset(" ...)
                return False
            for item in items:
                if not (self.add(4) and self.repr(item)):
                    return False
            return True
        finally:
            self.active.discard(key)


_VIEWS = frozenset({"dict_keys", "dict_values", "dict_items"})


def repr_size(obj: Any, limit: int) -> int:
    """Upper bound on len(repr(obj)); some value > limit once it passes limit."""
    walk = _Walk(limit)
    walk.repr(obj)
    return walk.total


def str_size(obj: Any, limit: int) -> int:
    """Upper bound on len(str(obj)) (for containers str() is the repr of the items)."""
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, Undefined):
        return 0
    return repr_size(obj, limit)


def escaped_size(obj: Any, limit: int) -> int:
    """Upper bound on len(markupsafe.escape(obj)): & ' " become 5 characters, < > become 4."""
    if hasattr(obj, "__html__"):
        return str_size(obj, limit)
    if isinstance(obj, str):
        amp_quotes = obj.count("&") + obj.count("'") + obj.count('"')
        return len(obj) + 4 * amp_quotes + 3 * (obj.count("<") + obj.count(">"))
    return 5 * str_size(obj, limit)


def case_mapped_size(s: str) -> int:
    """Upper bound on len(s.upper()) and friends: one non-ASCII character can map to three."""
    return len(s) if s.isascii() else 3 * len(s)


# A new str object costs a header (49 bytes for ASCII, up to 76 otherwise) plus its characters
# (1, 2 or 4 bytes each); a list slot 8 more.
_STR_OBJECT_BYTES = 76 + 8


def list_items_bytes(value: Any) -> int:
    """Upper bound on the memory of list(value) including the items it creates: characters of
    a non-ASCII string (ASCII ones are shared singletons), ints of a range, pairs of a mapping."""
    if isinstance(value, str):
        return len(value) * (8 if value.isascii() else _STR_OBJECT_BYTES + 4)
    if isinstance(value, range):
        return len(value) * (8 + 32)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return len(value) * 8
    return len(value) * (8 + 64) if hasattr(value, "__len__") else 0


def split_bytes(s: str, name: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    """Upper bound on the memory of s.split()/rsplit()/splitlines(): a list of new strings."""
    if name == "splitlines":
        pieces = line_count(s)
    else:
        sep = _arg(args, kwargs, 0, "sep", None)
        # Without a separator, pieces are separated by at least one whitespace character.
        pieces = s.count(sep) + 1 if isinstance(sep, str) and sep else len(s) // 2 + 1
    return pieces * _STR_OBJECT_BYTES + 4 * len(s)


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


def line_count(s: str) -> int:
    return 1 + sum(s.count(c) for c in _LINE_BREAKS)


def joined_size(items: Any, sep: Any, escaping: bool, limit: int) -> int:
    """Upper bound on len(sep.join(map(str, items))) (escaped when ``escaping``)."""
    sized = escaped_size if escaping else str_size
    total = 0
    for i, item in enumerate(items):
        total += sized(item, limit) + (len(str(sep)) if i else 0)
        if total > limit:
            break
    return total


# ---- printf-style and str.format -----------------------------------------------------------------


def _number(digits: str, what: object) -> int:
    if len(digits) > 9:
        raise LimitError(f"{what}: a width or precision of {len(digits)} digits")
    return int(digits) if digits else 0


def _printf_field(fmt: str, i: int, what: object) -> tuple[int, int, bool]:
    """A width or precision at fmt[i]: (value, next index, whether it is '*')."""
    if i < len(fmt) and fmt[i] == "*":
        return 0, i + 1, True
    start = i
    while i < len(fmt) and fmt[i] in "0123456789":
        i += 1
    return _number(fmt[start:i], what), i, False


def printf_specs(fmt: str, what: object) -> list[tuple[Optional[str], int, int, int, str]]:
    """(mapping key, width, precision, number of '*', type) of each conversion of a
    printf-style format, parsed the way CPython parses it."""
    specs = []
    n = len(fmt)
    i = fmt.find("%")
    while 0 <= i < n - 1:
        i += 1
        key = None
        if fmt[i] == "(":
            depth, start = 1, i + 1
            i += 1
            while i < n and depth:
                depth += {"(": 1, ")": -1}.get(fmt[i], 0)
                i += 1
            key = fmt[start : i - 1]
        while i < n and fmt[i] in "-+ #0":
            i += 1
        width, i, star_width = _printf_field(fmt, i, what)
        precision, star_precision = 0, False
        if i < n and fmt[i] == ".":
            precision, i, star_precision = _printf_field(fmt, i + 1, what)
        while i < n and fmt[i] in "hlL":
            i += 1
        if i < n and fmt[i] != "%":
            specs.append((key, width, precision, star_width + star_precision, fmt[i]))
        i = fmt.find("%", i + 1)
    return specs


def _conversion_size(value: Any, kind: str, precision: int, escaping: bool, limit: int) -> int:
    if kind == "c":
        return 1
    if kind in "rsa":
        size = str_size(value, limit) if kind == "s" else repr_size(value, limit)
        # ascii() writes non-ASCII as \UNNNNNNNN; Markup escapes each value (at most 5x).
        return size * (10 if kind == "a" else 1) * (5 if escaping else 1)
    digits = int_digits(value) if isinstance(value, int) else _FIXED_FLOAT_CHARS
    return digits + precision


def printf_size(fmt: str, args: Any, escaping: bool, limit: int, what: object) -> int:
    """Upper bound on len(fmt % args); ``escaping`` when fmt is Markup."""
    specs = printf_specs(fmt, what)
    keyed = isinstance(args, Mapping) and any(key is not None for key, *_ in specs)
    values = list(args) if isinstance(args, tuple) else [args]
    total = len(fmt)
    next_value = 0
    for key, width, precision, stars, kind in specs:
        if keyed:
            value = args.get(key)
        else:
            # '*' takes the width or precision from the values, in order, like CPython.
            for star in values[next_value : next_value + stars]:
                if isinstance(star, int) and abs(star) > limit:
                    raise LimitError(f"{what}: a '*' width or precision of {star}")
                total += abs(star) if isinstance(star, int) else 0
            next_value += stars
            value = values[next_value] if next_value < len(values) else None
            next_value += 1
        total += width + precision + _conversion_size(value, kind, precision, escaping, limit) + 8
        if total > limit:
            break
    return total


def format_field_size(value: Any, spec: str, limit: int, what: object) -> int:
    """Upper bound on len(format(value, spec)): every number written in the spec (width,
    precision, a digit used as fill) counts in full, plus the value's own text."""
    numbers = 0
    run = ""
    for ch in spec + " ":
        if ch in "0123456789":
            run += ch
        elif run:
            numbers += _number(run, what)
            run = ""
    if isinstance(value, str):
        body = len(value)
    elif isinstance(value, int):
        body = 2 * int_digits(value)  # thousands separators
    elif isinstance(value, float):
        body = 2 * _FIXED_FLOAT_CHARS  # '%' type, thousands separators
    else:
        # Containers print str(); types with their own __format__ (dates) expand their spec.
        body = str_size(value, limit) + 16 * len(spec)
    return numbers + body + 8


# ---- operators -----------------------------------------------------------------------------------


def _sized(x: Any) -> bool:
    return isinstance(x, (str, list, tuple))


def binop_size(op: str, left: Any, right: Any, limit: int, what: object) -> int:
    """Upper bound on the characters or items of ``left op right`` (0 when the result is a
    number: integer results are checked against MAX_INT_BITS here instead)."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op in "+-" and ints:
        check_int_bits(max(left.bit_length(), right.bit_length()) + 1, what)
    elif op == "+" and isinstance(left, str) and isinstance(right, str):
        # Markup + str escapes the str (and str + Markup the left one).
        left_markup, right_markup = isinstance(left, Markup), isinstance(right, Markup)
        size_left = escaped_size(left, limit) if right_markup and not left_markup else len(left)
        size_right = escaped_size(right, limit) if left_markup and not right_markup else len(right)
        return size_left + size_right
    elif op == "+" and _sized(left) and _sized(right):
        return len(left) + len(right)
    elif op == "*" and ints:
        check_int_bits(left.bit_length() + right.bit_length(), what)
    elif op == "*":
        for seq, n in ((left, right), (right, left)):
            if _sized(seq) and isinstance(n, int):
                return len(seq) * max(n, 0)
    elif op == "**" and ints and right > 0 and abs(left) > 1:
        check_int_bits(left.bit_length() * right, what)
    elif op == "%" and isinstance(left, str):
        return printf_size(left, right, isinstance(left, Markup), limit, what)
    return 0


# ---- str methods ---------------------------------------------------------------------------------


def _arg(args: tuple, kwargs: Dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _width(s: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    width = _arg(args, kwargs, 0, "width", 0)
    return max(len(s), width) if isinstance(width, int) else len(s)


def _replace(s: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    old = _arg(args, kwargs, 0, "old", "")
    new = _arg(args, kwargs, 1, "new", "")
    count = _arg(args, kwargs, 2, "count", -1)
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(s)
    hits = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    new_len = escaped_size(new, 0) if isinstance(s, Markup) else len(new)
    return len(s) + hits * max(0, new_len - len(old))


def _expandtabs(s: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    tabsize = _arg(args, kwargs, 0, "tabsize", 8)
    return len(s) + s.count("\t") * (max(tabsize, 0) if isinstance(tabsize, int) else 0)


def _same(s: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    return len(s)


def _cased(s: str, args: tuple, kwargs: Dict[str, Any]) -> int:
    return case_mapped_size(s)


# Methods a template may call on a string, with a bound on the size of their result. Those left
# out (encode, translate, maketrans) turn one string into unbounded or useless output and no chat
# template calls them; format/format_map go through the sandbox's own formatter; join is checked
# by the sandbox (it needs the materialized items).
STR_METHODS: Dict[str, Callable[[str, tuple, Dict[str, Any]], int]] = {
    **dict.fromkeys(
        "count endswith find index isalnum isalpha isascii isdecimal isdigit isidentifier "
        "islower isnumeric isprintable isspace istitle isupper lstrip partition removeprefix "
        "removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith strip "
        "striptags unescape".split(),
        _same,
    ),
    **dict.fromkeys("capitalize casefold lower swapcase title upper".split(), _cased),
    **dict.fromkeys("center ljust rjust zfill".split(), _width),
    "replace": _replace,
    "expandtabs": _expandtabs,
}

# Methods of other built-in values a template may call; all return existing objects, views, or
# copies no larger than the receiver.
OTHER_METHODS: Dict[type, frozenset] = {
    dict: frozenset({"get", "items", "keys", "values", "copy"}),
    list: frozenset({"index", "count", "copy"}),
    tuple: frozenset({"index", "count"}),
    set: frozenset(
        {"copy", "difference", "intersection", "isdisjoint", "issubset", "issuperset", "union"}
    ),
    range: frozenset({"index", "count"}),
}
OTHER_METHODS[frozenset] = OTHER_METHODS[set]
