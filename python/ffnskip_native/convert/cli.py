"""The command line: python tools/convert.py HF_DIR [--outfile ...] (also python -m
ffnskip_native.convert)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .errors import ConvertError
from .plan import OUTTYPES
from .write import convert


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert a Hugging Face Llama/Mistral/Qwen2 safetensors checkpoint to GGUF.",
    )
    ap.add_argument("hf_dir", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    ap.add_argument("--outfile", help="output .gguf path (default: HF_DIR/<name>-<outtype>.gguf)")
    ap.add_argument(
        "--outtype",
        default="auto",
        choices=["auto", *OUTTYPES],
        help="matrix weight type; auto keeps the source precision (default: auto)",
    )
    ap.add_argument("--name", help="general.name (default: the directory name)")
    ap.add_argument("--vocab-pre", help="override the recognised BPE pre-tokenizer name")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: returns 0 on success, 1 with the message on stderr on failure."""
    args = _parser().parse_args(argv)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        out = convert(
            args.hf_dir,
            args.outfile,
            args.outtype,
            name=args.name,
            vocab_pre=args.vocab_pre,
            progress=progress,
        )
    except ConvertError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions: the temporary file is already gone
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0
