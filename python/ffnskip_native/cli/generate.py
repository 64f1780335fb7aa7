"""``ffnskip run`` (one prompt, streamed to stdout) and ``ffnskip chat`` (interactive)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..skip_flags import add_skip_flags, skip_from_flags
from .common import (
    add_model_args,
    add_sampling_args,
    model_path,
    report_stats,
    sampling,
    stream,
    utf8_text,
)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text ('-' reads stdin)")
    p.add_argument("--chat", action="store_true", help="treat the prompt as a chat message")
    p.add_argument("--system", help="system message (with --chat)")
    add_sampling_args(p)
    add_skip_flags(p)


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--system", help="system message")
    add_sampling_args(p)
    add_skip_flags(p)


def open_generator(args: argparse.Namespace) -> Any:
    """A Generator with the model, backend and skip flags of ``args``."""
    from ..generator import Generator

    gen = Generator(
        model_path(args.model),
        backend=args.backend,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        seed=args.seed,
        skip=False if args.no_skip else None,
    )
    try:
        skip = skip_from_flags(args, gen.skip)
        if skip is not None:
            gen.skip = skip
    except BaseException:
        gen.close()
        raise
    return gen


def cmd_run(args: argparse.Namespace) -> int:
    if args.prompt == "-":
        prompt = utf8_text(sys.stdin.read(), "the prompt on stdin")
    else:
        prompt = utf8_text(args.prompt, "--prompt")
    if args.system is not None:
        utf8_text(args.system, "--system")
    with open_generator(args) as gen:
        if args.chat:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": prompt})
            pieces = gen.chat(messages, stream=True, **sampling(args))
        else:
            pieces = gen.generate(prompt, **sampling(args))
        _, stopped = stream(sys.stdout, pieces)
        sys.stdout.write("\n")
        sys.stdout.flush()
        if stopped:
            return 130
        if args.verbose:
            report_stats(gen, sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    out = sys.stdout
    if args.system is not None:
        utf8_text(args.system, "--system")
    with open_generator(args) as gen:
        system = [{"role": "system", "content": args.system}] if args.system else []
        messages: list[dict[str, str]] = list(system)
        if interactive:
            out.write("Chat with the model. Ctrl-C stops an answer, Ctrl-D exits, /reset clears.\n")
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                if interactive:
                    out.write("\n")
                return 0
            except KeyboardInterrupt:
                out.write("\n")
                continue
            text = utf8_text(line, "the input line").strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                messages = list(system)
                continue
            messages.append({"role": "user", "content": line})
            answer, stopped = stream(out, gen.chat(messages, stream=True, **sampling(args)))
            if stopped:
                out.write(" [stopped]")
            out.write("\n")
            out.flush()
            messages.append({"role": "assistant", "content": answer})
            if args.verbose:
                report_stats(gen, sys.stderr)
