"""The FFN-skip flags of the command line, spelled the same in every command that takes them.

    --skip FILE|JSON           a SkipConfig: a JSON object, or a file holding one
    --skip-threshold T[,T...]  single fields, applied over the --skip config, else over the
    --skip-span N              model's stored profile, else over SkipConfig's defaults
    --skip-warmup N
    --skip-cold-start N
    --skip-cold-end N
    --no-skip                  dense, even when the model file stores a profile

With none of them a command uses the profile stored in the model file (dense where there is
none). The JSON is handed to SkipConfig whole, so every field SkipConfig has (per-layer lists
included) is accepted there without a change here; a field that deserves a flag of its own is
one more row of FIELD_FLAGS.

Old spellings (``ffnskip eval``'s ``--threshold``, ``--span``, ``--warmup``, ``--cold-start``,
``--cold-end`` and ``--skip @FILE``) still work for one release and print a one-line notice.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence, Union

from .errors import InvalidArgumentError

if TYPE_CHECKING:  # skip.py needs the compiled core, which `ffnskip --help` does not
    from .skip import SkipConfig

# What a command does about skipping: a config, None (the model file's profile, dense where it
# has none) or False (dense).
SkipChoice = Union["SkipConfig", None, Literal[False]]


class SkipFlagError(InvalidArgumentError):
    """Skip flags that contradict each other, such as --no-skip with a config. The command line
    reports it as a usage error (exit status 2)."""


def layer_values(text: str) -> Union[float, list[float]]:
    """``T`` or ``T,T,...`` (one per layer; ``nan`` for never): a float or a list of floats."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number or a comma-separated list of numbers: {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class FieldFlag:
    """One SkipConfig field settable by a flag of its own."""

    field: str
    flag: str
    parse: Callable[[str], Any]
    metavar: str
    help: str
    old: Optional[str] = None  # the spelling ``ffnskip eval`` had before (deprecated)


FIELD_FLAGS: tuple[FieldFlag, ...] = (
    FieldFlag(
        "threshold",
        "--skip-threshold",
        layer_values,
        "T[,T...]",
        "gate threshold: one value, or one per layer (nan: never)",
        "--threshold",
    ),
    FieldFlag(
        "span", "--skip-span", int, "N", "hot layers skipped after a gate fires (0: all)", "--span"
    ),
    FieldFlag(
        "warmup", "--skip-warmup", int, "N", "dense generated tokens before skipping", "--warmup"
    ),
    FieldFlag(
        "cold_start", "--skip-cold-start", int, "N", "first layers that never skip", "--cold-start"
    ),
    FieldFlag("cold_end", "--skip-cold-end", int, "N", "last layers that never skip", "--cold-end"),
)


def _dest(f: FieldFlag) -> str:
    return "skip_" + f.field


def deprecated(old: str, new: str) -> None:
    """The one-line notice for an old spelling, on stderr."""
    sys.stderr.write(f"ffnskip: warning: {old} is deprecated and goes in the next release: {new}\n")


class OldSpelling(argparse.Action):
    """Stores like the new flag, after a deprecation notice naming it."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Optional[str] = None,
    ) -> None:
        deprecated(str(option_string), f"use {self.new}")
        setattr(namespace, self.dest, values)


def add_skip_flags(
    parser: argparse.ArgumentParser,
    default: str = "the skip profile stored in the model file, if any, else dense",
    old_spellings: bool = False,
) -> None:
    """Add the skip flags to ``parser`` in a group of their own; ``default`` says what the
    command does without them. ``old_spellings`` also accepts the deprecated spellings (only
    ``ffnskip eval`` had them)."""
    g = parser.add_argument_group(
        "FFN skipping",
        f"Default: {default}. The --skip-* options change single fields of the --skip config, "
        "else of the stored profile, else of SkipConfig's defaults; --no-skip is dense.",
    )
    g.add_argument("--skip", metavar="FILE|JSON", help="SkipConfig as a JSON object or a file")
    for f in FIELD_FLAGS:
        g.add_argument(f.flag, dest=_dest(f), type=f.parse, metavar=f.metavar, help=f.help)
        if old_spellings and f.old:
            g.add_argument(
                f.old,
                dest=_dest(f),
                type=f.parse,
                action=OldSpelling,
                new=f.flag,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
    g.add_argument("--no-skip", action="store_true", help="dense, even if the file has a profile")


def read_skip_json(source: str) -> SkipConfig:
    """The config of ``--skip SOURCE``: a JSON object, or the name of a file holding one."""
    from .skip import SkipConfig

    text = source
    if not source.lstrip().startswith("{"):
        name = source
        if source.startswith("@"):
            name = source[1:]
            deprecated(f"--skip @{name}", f"use --skip {name}")
        path = Path(name)
        if not path.is_file():
            raise InvalidArgumentError(
                f"--skip: {source!r} is neither a JSON object nor an existing file"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"--skip: {path} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise InvalidArgumentError(f"--skip: cannot read {path}: {exc.strerror}") from None
    return SkipConfig.from_json(text)


def skip_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fields set by single-field flags."""
    values = {f.field: getattr(args, _dest(f), None) for f in FIELD_FLAGS}
    return {k: v for k, v in values.items() if v is not None}


def skip_from_flags(args: argparse.Namespace, stored: Optional[SkipConfig]) -> SkipChoice:
    """What the flags ask for: False (--no-skip), None (no skip flag: the file's profile) or a
    SkipConfig (the --skip config, else ``stored``, else the defaults, with the single fields
    applied). Contradicting flags raise SkipFlagError."""
    from .skip import SkipConfig

    overrides = skip_overrides(args)
    if args.no_skip:
        if overrides or args.skip:
            raise SkipFlagError("--no-skip cannot be combined with --skip or --skip-* options")
        return False
    if args.skip:
        base = read_skip_json(args.skip)
    elif overrides:
        base = stored if stored is not None else SkipConfig()
    else:
        return None
    return dataclasses.replace(base, **overrides) if overrides else base
