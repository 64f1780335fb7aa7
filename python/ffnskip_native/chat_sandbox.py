"""The Jinja2 environment chat templates render in: Jinja's ImmutableSandboxedEnvironment with every
operation that loops, calls or builds a string or list metered against a per-render Budget
(chat_bounds) before it runs.

Where the work happens and how it is bounded:

- ``{% for %}`` loops (also ``loop(...)`` in recursive loops): each item is a step.
- calls: a step each; methods of built-in values only from an allow-list with a size bound
  (``'a'.ljust(10**9)`` is refused before it allocates), everything else charged after.
- operators ``+ - * / // % **``, ``~``, slicing, comparisons, filters and tests: a step each plus
  the length of what they scan; size bounds before the ones that can grow (``*``, ``%``,
  ``|center`` ...).
- ``{{ ... }}`` output, macro and block bodies: size-checked before they are joined.
- The optimizer is off: it would fold constant expressions at compile time, outside any budget.

The per-filter checks and costs are in chat_filters. Left out: the ``pprint``, ``urlize`` and
``xmlattr`` filters and the ``lipsum`` global (no chat template needs them; hard to bound).
"""

from __future__ import annotations

import functools
import json
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from types import BuiltinMethodType, MethodType
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, operators
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import _PassArg, object_type_repr, pass_eval_context
from markupsafe import EscapeFormatter, Markup

from .chat_bounds import (
    MAX_JSON_INDENT,
    OTHER_METHODS,
    SCAN_UNIT,
    STR_METHODS,
    Budget,
    LimitError,
    Limits,
    binop_size,
    escaped_size,
    format_field_size,
    joined_size,
    materialize,
    repr_size,
    scan_cost,
    split_bytes,
    str_size,
)
from .chat_filters import (
    FILTER_CHECKS,
    NEW_ITEM_FILTERS,
    REMOVED_FILTERS,
    TEST_CHECKS,
    Check,
    filter_steps,
    test_steps,
)

_active_budget: ContextVar[Optional[Budget]] = ContextVar("ffnskip_chat_budget", default=None)


class RaisedByTemplate(Exception):
    """raise_exception() was called: the template's own message."""


_QUOTED_KEY_CHARS = 200


class _BoundedUndefined(Undefined):
    """Undefined whose error message quotes the missing key only when it is short: ``{}[k]``
    with k a tuple of many long strings would otherwise build a gigantic repr."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        if self._undefined_hint is None and not isinstance(name, str):
            if repr_size(name, _QUOTED_KEY_CHARS) > _QUOTED_KEY_CHARS:
                return f"{object_type_repr(self._undefined_obj)} has no such element"
        return Undefined._undefined_message.fget(self)  # type: ignore[attr-defined]


# ---- code generation -----------------------------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Routes the operations Jinja compiles to plain Python (loops, ``~``, slices, comparisons)
    through the environment, where they are metered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja allows no custom node types, so the iterable is marked by identity and wrapped
        # where it is written (the loop header, or the first loop() call of a recursive loop).
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.counted_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # Jinja joins with markup_join when autoescaping (also decided at run time when volatile).
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.bounded_slice(")
        self.visit(node.node, frame)
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            self.write(", ")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write(")")

    # List, tuple and dict literals build a new container each time they are evaluated: a long
    # one in a loop would otherwise pile up memory no operation is charged for.
    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # a target: {% for a, b in ... %}, {% set a, b = ... %}
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built_literal(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("(environment.scanned(")
        self.visit(node.expr, frame)
        self.write(")")
        for op in node.ops:
            self.write(f" {operators[op.op]} environment.scanned(")
            self.visit(op.expr, frame)
            self.write(")")
        self.write(")")


class _Counted:
    """An iterable whose items each cost a step; keeps len() so ``loop.length`` stays cheap."""

    __slots__ = ("_iterable", "_budget")

    def __init__(self, iterable: Any, budget: Budget) -> None:
        self._iterable = iterable
        self._budget = budget

    def __len__(self) -> int:
        return len(self._iterable)

    def __iter__(self) -> Iterator[Any]:
        budget = self._budget
        # Items of a container exist already; a string, range or generator makes each one new,
        # and loop.length keeps them all.
        fresh = not isinstance(self._iterable, (list, tuple, dict, set, frozenset))
        for item in self._iterable:
            budget.step()
            if fresh:
                budget.charge(sys.getsizeof(item), "a {% for %} loop")
            yield item


# ---- the environment -----------------------------------------------------------------------------


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that fails loudly and meters everything a template does."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def __init__(self, limits: Limits) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
            optimized=False,
            undefined=_BoundedUndefined,
        )
        self.limits = limits
        self.finalize = self.finalize_output
        self.globals.pop("lipsum", None)
        self.globals.update(
            range=self._range,
            raise_exception=self._raise_exception,
            strftime_now=self._strftime_now,
        )
        filters = {k: v for k, v in self.filters.items() if k not in REMOVED_FILTERS}
        filters["tojson"] = self._tojson
        self.filters = {
            k: self._metered(
                f"the '{k}' filter",
                f,
                FILTER_CHECKS.get(k),
                True,
                filter_steps(k),
                new_items=k in NEW_ITEM_FILTERS,
            )
            for k, f in filters.items()
        }
        self.tests = {
            k: self._metered(f"the '{k}' test", f, TEST_CHECKS.get(k), False, test_steps(k))
            for k, f in self.tests.items()
        }

    # -- budget ------------------------------------------------------------------------------------

    @contextmanager
    def render_budget(self) -> Iterator[Budget]:
        """The budget the operations of one render (on this thread or task) charge."""
        budget = Budget(self.limits)
        token = _active_budget.set(budget)
        try:
            yield budget
        finally:
            _active_budget.reset(token)

    def budget(self) -> Budget:
        # Outside render_budget() (nothing in this module evaluates there) each operation gets a
        # fresh budget: its own size bound still holds.
        return _active_budget.get() or Budget(self.limits)

    # -- sandbox hooks -----------------------------------------------------------------------------

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that renders as "": a hostile template would
        # go unnoticed. Refuse at the point of access instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget()
        what = f"'{operator}'"
        budget.step(1 + scan_cost(left) + scan_cost(right))
        budget.check_size(
            binop_size(operator, left, right, self.limits.max_output_chars, what), what
        )
        result = super().call_binop(context, operator, left, right)
        budget.charge_value(result, what)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = __self.budget()
        what = _CallName(__obj)
        # A macro call or recursive loop() runs Jinja's argument binding, a new frame and
        # buffer: about ten steps' worth (measured: 20-50 us each, against 1-5 for a step).
        frame = isinstance(__obj, (Macro, LoopContext))
        budget.step((MACRO_STEPS if frame else 1) + len(args) // 16 + sum(map(scan_cost, args)))
        # f(*x) builds a tuple of x's items, which the callee may keep (cycler() does).
        budget.charge(8 * (len(args) + len(kwargs)), what)
        receiver = getattr(__obj, "__self__", None)
        if isinstance(__obj, LoopContext) and args:
            # loop(children) in a recursive for: the new level's items are counted too.
            args = (__self.counted_iter(args[0]), *args[1:])
        elif isinstance(receiver, _BUILTIN_VALUES):
            args = __self._check_method(receiver, __obj.__name__, args, kwargs, budget, what)
        result = super().call(__context, __obj, *args, **kwargs)
        budget.charge_value(result, what, new_items=True)
        return result

    def _check_method(
        self, receiver: Any, name: str, args: tuple, kwargs: dict, budget: Budget, what: object
    ) -> tuple:
        limit = self.limits.max_output_chars
        if isinstance(receiver, str):
            if name == "join" and args:
                items = materialize(args[0], budget, what)
                size = joined_size(items, receiver, isinstance(receiver, Markup), limit)
                budget.check_size(size, what)
                return (items, *args[1:])
            check = STR_METHODS.get(name)
            if check is not None:
                budget.check_size(check(receiver, args, kwargs), what)
                if name in ("split", "rsplit", "splitlines"):
                    budget.check_bytes(split_bytes(receiver, name, args, kwargs), what)
                return args
        elif receiver is Markup and name == "escape" and args:
            budget.check_size(escaped_size(args[0], limit), what)
            return args
        elif any(isinstance(receiver, t) and name in ok for t, ok in OTHER_METHODS.items()):
            if name == "index" and args:
                # list.index and range.index put repr(x) in their ValueError.
                budget.check_size(repr_size(args[0], limit), what)
            return args
        raise SecurityError(f"calling {what} is not allowed in a chat template")

    def wrap_str_format(self, value: Any) -> Optional[Callable[..., str]]:
        """str.format / str.format_map through a formatter that checks each field's size before
        formatting it (``'{:>3000000000}'.format(1)`` is refused, not allocated). Jinja calls
        this on every attribute lookup that yields one of them since 3.1.5, and ``|attr`` goes
        through that lookup since 3.1.6: hence the dependency on jinja2>=3.1.6."""
        if not isinstance(value, (MethodType, BuiltinMethodType)):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        fmt = getattr(value, "__self__", None)
        if not isinstance(fmt, str):
            return None
        is_format_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            formatter: _BoundedFormatter
            if isinstance(fmt, Markup):
                formatter = _BoundedEscapeFormatter(self, fmt, escape=fmt.escape)
            else:
                formatter = _BoundedFormatter(self, fmt)
            return type(fmt)(formatter.vformat(fmt, args, kwargs))

        return functools.update_wrapper(bounded_format, value)

    # -- hooks of the generated code ---------------------------------------------------------------

    @pass_eval_context
    def finalize_output(self, eval_ctx: Any, value: Any) -> Any:
        """Every ``{{ ... }}``: its text is checked before str() (or escape()) builds it."""
        if isinstance(value, str) and not eval_ctx.autoescape:
            return value  # no new string; the output total is checked by the caller
        limit = self.limits.max_output_chars
        size = escaped_size(value, limit) if eval_ctx.autoescape else str_size(value, limit)
        budget = self.budget()
        budget.check_size(size, "{{ ... }}")
        budget.charge(size, "{{ ... }}")
        return value

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins the output of a macro, block or {% set %}/{% filter %} body."""
        budget = self.budget()
        parts = parts if isinstance(parts, list) else list(parts)
        size = sum(map(len, parts))
        budget.step(1 + size // SCAN_UNIT)
        budget.check_size(size, "a macro or block body")
        result = "".join(parts)
        budget.charge_value(result, "a macro or block body")
        return result

    def bounded_concat(self, parts: tuple, markup: bool) -> str:
        """The ``~`` operator."""
        budget = self.budget()
        limit = self.limits.max_output_chars
        if markup and any(hasattr(p, "__html__") for p in parts):
            size = sum(escaped_size(p, limit) for p in parts)
        else:
            size = sum(str_size(p, limit) for p in parts)
        budget.step(1 + size // SCAN_UNIT)
        budget.check_size(size, "'~'")
        result = markup_join(parts) if markup else str_join(parts)
        budget.charge_value(result, "'~'")
        return result

    def bounded_slice(self, obj: Any, start: Any, stop: Any, step: Any) -> Any:
        """``x[a:b:c]``: no bigger than x, but a new object that a loop could keep many of."""
        budget = self.budget()
        budget.step(1 + scan_cost(obj))
        result = obj[start:stop:step]
        budget.charge_value(result, "a slice")
        return result

    def scanned(self, value: Any) -> Any:
        """An operand of a comparison: ``in`` and ``==`` read all of it."""
        self.budget().step(scan_cost(value))
        return value

    def built_literal(self, value: Any) -> Any:
        """A list, tuple or dict literal, just built."""
        budget = self.budget()
        budget.step(1 + scan_cost(value))
        budget.charge_value(value, "a literal")
        return value

    def counted_iter(self, iterable: Any) -> _Counted:
        return _Counted(iterable, self.budget())

    # -- filters, tests and globals ----------------------------------------------------------------

    def _metered(
        self,
        what: str,
        func: Callable[..., Any],
        check: Optional[Check],
        materializes: bool,
        cost: Callable[[Any], int],
        new_items: bool = False,
    ) -> Any:
        """``func`` (a filter or test) charging its steps (1 + ``cost`` of its input + the scan
        of its other arguments) and result, after ``check`` bounded what it would build. With
        ``materializes`` an iterator input is listed first so that check can size it;
        ``new_items``: the result's items are new objects, charged too."""
        pass_arg = _PassArg.from_obj(func)
        lead = 0 if pass_arg is None else 1

        @functools.wraps(func)  # keeps jinja_pass_arg: Jinja passes the same leading argument
        def metered(*args: Any, **kwargs: Any) -> Any:
            budget = self.budget()
            if materializes and len(args) > lead:
                args = (*args[:lead], materialize(args[lead], budget, what), *args[lead + 1 :])
            if len(args) > lead:
                budget.step(1 + cost(args[lead]) + sum(map(scan_cost, args[lead + 1 :])))
            else:
                budget.step()
            if check is not None and len(args) > lead:
                escaping = bool(lead and _autoescape(pass_arg, args[0]))
                check(self, budget, escaping, what, *args[lead:], **kwargs)
            result = func(*args, **kwargs)
            budget.charge_value(result, what, new_items)
            return result

        return metered

    def _range(self, *args: int) -> range:
        r = range(*args)
        try:
            n = len(r)
        except OverflowError:  # more than sys.maxsize items
            n = sys.maxsize
        if n > self.budget().steps_left:
            raise LimitError(
                f"range() of {n} items: more than the {self.limits.max_iterations} steps a "
                "render may take (max_iterations)"
            )
        return r

    def _raise_exception(self, message: Any) -> None:
        self.budget().check_size(str_size(message, self.limits.max_output_chars), "raise_exception")
        raise RaisedByTemplate(str(message))

    def _strftime_now(self, fmt: str) -> str:
        if not isinstance(fmt, str):
            raise TypeError(f"strftime_now() takes a string, not {type(fmt).__name__}")
        # One directive (2 characters) expands to at most 24 ('%c' in the C locale).
        self.budget().check_size(16 * len(fmt), "strftime_now()")
        return datetime.now().strftime(fmt)

    def _tojson(
        self,
        value: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Optional[Sequence[str]] = None,
        sort_keys: bool = False,
    ) -> str:
        """json.dumps as Hugging Face's templates expect it (Jinja's own tojson HTML-escapes
        < > & ', wrong for prompts), streamed so that the size is checked as it grows."""
        budget = self.budget()
        width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        if width > MAX_JSON_INDENT:
            raise LimitError(f"tojson(indent={width}): the limit is {MAX_JSON_INDENT}")
        seps = tuple(separators) if separators is not None else None
        if seps is not None:
            limit = self.limits.max_output_chars
            budget.check_size(sum(str_size(s, limit) for s in seps), "tojson(separators=...)")
        encoder = json.JSONEncoder(
            ensure_ascii=ensure_ascii, indent=indent, separators=seps, sort_keys=sort_keys
        )
        chunks: list[str] = []
        size = 0
        for chunk in encoder.iterencode(value):
            size += len(chunk)
            budget.step()
            budget.check_size(size, "tojson")
            chunks.append(chunk)
        return "".join(chunks)


MACRO_STEPS = 10


class _CallName:
    """Names a callee in a limit's message; formatted only if one is raised."""

    __slots__ = ("callee",)

    def __init__(self, callee: Any) -> None:
        self.callee = callee

    def __str__(self) -> str:
        callee = self.callee
        name = callee.name if isinstance(callee, Macro) else getattr(callee, "__qualname__", None)
        return f"{name if isinstance(name, str) else type(callee).__name__}()"


_BUILTIN_VALUES = (str, bytes, int, float, complex, list, tuple, dict, set, frozenset, range, type)


def _autoescape(pass_arg: Any, first: Any) -> bool:
    if pass_arg is _PassArg.eval_context:
        return bool(first.autoescape)
    if pass_arg is _PassArg.context:
        return bool(first.eval_ctx.autoescape)
    return False


class _BoundedFormatter(SandboxedFormatter):
    """str.format with a running total: each field's size is bounded before it is formatted."""

    def __init__(self, env: BoundedSandbox, fmt: str, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._bounded_env = env
        self._total = len(fmt)
        self._scale = 5 if isinstance(fmt, Markup) else 1  # Markup escapes each field

    def _add(self, size: int) -> None:
        self._total += self._scale * size
        self._bounded_env.budget().check_size(self._total, "str.format()")

    def convert_field(self, value: Any, conversion: Optional[str]) -> Any:
        limit = self._bounded_env.limits.max_output_chars
        if conversion == "s":
            self._add(str_size(value, limit))
        elif conversion in ("r", "a"):
            self._add(repr_size(value, limit) * (10 if conversion == "a" else 1))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> str:
        limit = self._bounded_env.limits.max_output_chars
        self._add(format_field_size(value, format_spec, limit, "str.format()"))
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass
