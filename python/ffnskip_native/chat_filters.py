"""Size checks and step costs of Jinja's filters and tests as the chat sandbox (chat_sandbox)
meters them: a check raises LimitError before a filter would build something too big; the cost
says how many steps its input is worth.

check(env, budget, escaping, what, value, *filter arguments): ``env`` is the sandbox (its
limits, and attribute lookup for ``join(attribute=...)``), ``escaping`` whether autoescaping
is on. The filter's steps and result bytes are charged by the sandbox.
"""

from __future__ import annotations

from typing import Any, Callable

from jinja2.filters import make_attrgetter
from markupsafe import Markup

from .chat_bounds import (
    SCAN_UNIT,
    STR_METHODS,
    Budget,
    case_mapped_size,
    escaped_size,
    item_cost,
    joined_size,
    line_count,
    list_items_bytes,
    printf_size,
    repr_size,
    scan_cost,
    str_size,
)

# Left out of the sandbox: no chat template needs them and their output is hard to bound
# (pprint indents nested values by their keys' width; urlize and xmlattr build HTML).
REMOVED_FILTERS = frozenset({"pprint", "urlize", "xmlattr"})

Check = Callable[..., None]


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _text(env: Any, value: Any, escaping: bool) -> int:
    limit = env.limits.max_output_chars
    return escaped_size(value, limit) if escaping else str_size(value, limit)


def _check_text(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    budget.check_size(_text(env, value, escaping), what)


def _check_escape(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    budget.check_size(escaped_size(value, env.limits.max_output_chars), what)


def _check_case(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    size = case_mapped_size(value) if isinstance(value, str) else 3 * _text(env, value, False)
    budget.check_size(size, what)


def _check_urlencode(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    # Each character is at most 4 UTF-8 bytes, each byte at most 3 characters (%XX).
    budget.check_size(12 * _text(env, value, False), what)


def _check_center(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    width = _arg(args, kwargs, 0, "width", 80)
    size = _text(env, value, False)
    budget.check_size(max(size, width) if isinstance(width, int) else size, what)


def _check_indent(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    s: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    width = _arg(args, kwargs, 0, "width", 4)
    indent = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size = _text(env, s, False)
    lines = line_count(s) if isinstance(s, str) else size + 1
    budget.check_size(size + lines * (max(indent, 0) + 1), what)


def _check_replace(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    s: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    if isinstance(s, str) and not escaping:
        size = STR_METHODS["replace"](s, args, kwargs)
    else:
        new = _arg(args, kwargs, 1, "new", "")
        text = _text(env, s, escaping)
        size = text + (text + 1) * _text(env, new, escaping)
    budget.check_size(size, what)


def _check_format(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    budget.check_size(_text(env, value, False), what)
    fmt = value if isinstance(value, str) else str(value)
    values = kwargs or args
    size = printf_size(fmt, values, isinstance(fmt, Markup), env.limits.max_output_chars, what)
    budget.check_size(size, what)


def _check_join(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    sep = _arg(args, kwargs, 0, "d", "")
    attribute = _arg(args, kwargs, 1, "attribute", None)
    items = value
    if attribute is not None:
        items = list(map(make_attrgetter(env, attribute), value))
    escaping = escaping and (
        hasattr(sep, "__html__") or any(hasattr(item, "__html__") for item in items)
    )
    budget.check_size(joined_size(items, sep, escaping, env.limits.max_output_chars), what)


def _check_fill(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    """batch(n, fill_with) pads the last batch to n items; slice(n) makes n lists."""
    count = args[0] if args else next(iter(kwargs.values()), 0)
    if isinstance(count, int):
        budget.check_size(len(value) + max(count, 0) if hasattr(value, "__len__") else count, what)


def _check_wordwrap(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    s: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    wrapstring = _arg(args, kwargs, 2, "wrapstring", None)
    joint = len(wrapstring) if isinstance(wrapstring, str) else 1
    size = _text(env, s, False)
    lines = size + (line_count(s) if isinstance(s, str) else 1)
    budget.step(size // 4)  # textwrap is Python code: about 4 characters per microsecond
    budget.check_size(size + lines * joint, what)


def _check_truncate(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    s: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    end = _arg(args, kwargs, 2, "end", "...")
    budget.check_size(_text(env, s, False) + (len(end) if isinstance(end, str) else 0), what)


def _check_sized(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    if hasattr(value, "__len__"):
        budget.check_size(len(value), what)


def _check_list(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    if hasattr(value, "__len__"):
        budget.check_size(len(value), what)
        budget.check_bytes(list_items_bytes(value), what)


def _check_sort_keys(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    # Sorting case-insensitively (the default) keeps a lower-cased copy of every string key until
    # it is done: shared items are copied once each time they occur.
    if kwargs.get("case_sensitive") is True:
        return
    items = value.items() if isinstance(value, dict) else value
    nbytes = 0
    for item in items:
        if isinstance(item, str):
            nbytes += 4 * case_mapped_size(item)
        elif not isinstance(item, (int, float)):  # a key may be picked out of it
            nbytes += 4 * repr_size(item, budget.bytes_left)
        if nbytes > budget.bytes_left:
            break
    budget.charge(nbytes, what)


def _check_sum(
    env: Any,
    budget: Budget,
    escaping: bool,
    what: str,
    value: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    start = _arg(args, kwargs, 1, "start", 0)
    parts = [start, *value]
    if all(isinstance(p, (int, float)) for p in parts):
        return
    # Lists or tuples: sum() copies the growing result once per item.
    total = sum(len(p) for p in parts if hasattr(p, "__len__"))
    budget.check_size(total, what)
    budget.step(len(parts) * total // SCAN_UNIT)


FILTER_CHECKS: dict[str, Check] = {
    **dict.fromkeys(["string", "safe", "trim", "striptags"], _check_text),
    **dict.fromkeys(["escape", "e", "forceescape"], _check_escape),
    **dict.fromkeys(["upper", "lower", "title", "capitalize"], _check_case),
    **dict.fromkeys(["batch", "slice"], _check_fill),
    **dict.fromkeys(["sort", "dictsort", "groupby"], _check_sort_keys),
    "urlencode": _check_urlencode,
    "center": _check_center,
    "indent": _check_indent,
    "replace": _check_replace,
    "format": _check_format,
    "join": _check_join,
    "wordwrap": _check_wordwrap,
    "truncate": _check_truncate,
    "list": _check_list,
    "reverse": _check_sized,
    "sum": _check_sum,
}
# Filters and tests whose work does not grow with their input (len(), the first item ...), and
# filters that run Python code on every item. (map, select and the like call a filter or test
# per item, which charges for itself.)
_CONSTANT_FILTERS = frozenset(
    {"length", "count", "first", "last", "default", "d", "attr", "random", "abs", "round"}
)
_ITEMWISE_FILTERS = frozenset(
    {"sort", "dictsort", "groupby", "unique", "min", "max", "join", "sum", "list", "items"}
    | {"batch", "slice", "reverse", "tojson", "string", "urlencode"}
)
# Filters whose result holds new objects (pairs, batches, the characters of a string).
NEW_ITEM_FILTERS = frozenset({"items", "dictsort", "groupby", "batch", "slice", "list"})
_SCANNING_TESTS = frozenset(
    {"in", "eq", "==", "equalto", "ne", "!=", "lower", "upper", "lt", "<", "le", "<=", "gt", ">"}
    | {"ge", ">=", "lessthan", "greaterthan"}
)


def _no_cost(value: Any) -> int:
    return 0


def filter_steps(name: str) -> Callable[[Any], int]:
    if name in _CONSTANT_FILTERS:
        return _no_cost
    return item_cost if name in _ITEMWISE_FILTERS else scan_cost


def test_steps(name: str) -> Callable[[Any], int]:
    return scan_cost if name in _SCANNING_TESTS else _no_cost


# The 'lower' and 'upper' tests call str(value) on anything.
TEST_CHECKS: dict[str, Check] = {"lower": _check_text, "upper": _check_text}
