"""``ffnskip info``: what a GGUF file holds (architecture, hyperparameters, weight types,
tokenizer, chat template, stored skip profile)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from typing import Any

from .._util import dumps_json
from ..errors import Error


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="GGUF file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def model_info(path: str) -> dict[str, Any]:
    """A summary of a GGUF file (what ``ffnskip info`` prints)."""
    from .. import _core

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
    from ..profile_gguf import read_profile_gguf  # the engine: the one parser of ffnskip.*

    try:
        profile = read_profile_gguf(path)
    except Error as exc:
        return {"error": str(exc), "raw": raw}
    if profile is None:
        return {"raw": raw}
    d = profile.to_dict()
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
        out.write(dumps_json(info) + "\n")
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
            else dumps_json(info["skip_profile"], indent=None),
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
