"""The ``ffnskip`` command: run, chat, info, bench, eval, calibrate.

One module per command (generate: run and chat; info; bench; evaluate: eval; calibrate's lives
in calibrate/cli.py), each with ``add_arguments``-style functions and the command itself; this
module builds the parser and turns errors into messages and exit statuses. Library errors print
``ffnskip: error: <message>`` and exit with status 1; usage errors exit with status 2
(argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Optional, Sequence

from ..errors import Error
from ..skip_flags import SkipFlagError
from . import generate, info
from .common import PROG, UsageError

# Subcommands whose module is imported only when chosen (they pull in more of the package, and
# the rest of the CLI must work without them): name -> (module, help).
DELEGATED = {
    "bench": ("ffnskip_native.cli.bench", "measure prompt/decode speed, dense vs FFN skipping"),
    "eval": (
        "ffnskip_native.cli.evaluate",
        "quality of FFN skipping vs dense (perplexity, agreement)",
    ),
    "serve": (
        "ffnskip_native.cli.serve",
        "OpenAI-compatible HTTP server with continuous batching",
    ),
    "calibrate": (
        "ffnskip_native.calibrate.cli",
        "find a model's best skip profile under a quality budget",
    ),
}

# name -> (help, add arguments, command)
COMMANDS: dict[
    str,
    tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]],
] = {
    "run": (
        "generate text from a prompt (streams to stdout)",
        generate.add_run_arguments,
        generate.cmd_run,
    ),
    "chat": (
        "interactive chat (Ctrl-C stops an answer, Ctrl-D exits)",
        generate.add_chat_arguments,
        generate.cmd_chat,
    ),
    "info": ("describe a GGUF file", info.add_arguments, info.cmd_info),
}


def build_parser(load: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser. Delegated subcommands named in ``load`` get their real arguments; the
    others are listed with a placeholder (their module is not imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run GGUF language models with adaptive FFN skipping."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    for name, (module_name, help_text) in DELEGATED.items():
        if name in load:
            p = sub.add_parser(name, help=help_text)
            importlib.import_module(module_name).add_arguments(p)
        else:
            p = sub.add_parser(name, help=help_text, add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command in DELEGATED:
        return int(importlib.import_module(DELEGATED[args.command][0]).run(args))
    return COMMANDS[args.command][2](args)


def _chosen_command(argv: Sequence[str]) -> Optional[str]:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ffnskip`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen_command(argv)
    load: list[str] = []
    if chosen in DELEGATED:
        try:
            importlib.import_module(DELEGATED[chosen][0])
            load.append(chosen)
        except ImportError as exc:
            sys.stderr.write(f"{PROG}: error: '{chosen}' is not available: {exc}\n")
            return 1
    parser = build_parser(load)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (UsageError, SkipFlagError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Error, OSError) as exc:
        # OSError: a file the command had to write (a read-only directory, a full disk); the
        # system's message is the clearest one.
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
