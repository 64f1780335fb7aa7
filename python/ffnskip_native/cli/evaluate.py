"""``ffnskip eval``: the quality of FFN skipping against the dense model (quality.py measures).

The skip config: the skip flags' (skip_flags.py), else the model file's stored profile, else
SkipConfig's defaults; ``--no-skip`` evaluates the dense model against itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from .. import _core
from .._util import dumps_json
from ..errors import InvalidArgumentError
from ..quality import TeacherForcedEval, generation_agreement
from ..skip import SkipConfig
from ..skip_flags import add_skip_flags, skip_from_flags
from .common import add_backend_args, positive_int, read_text_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file")
    p.add_argument("--text", help="UTF-8 text file for teacher-forced evaluation")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--prompt-len", type=int, default=64, help="dense prompt tokens per window")
    p.add_argument("--max-windows", type=positive_int, default=None, help="at most N windows")
    p.add_argument("--prompts", help="file with one prompt per line (greedy-generation agreement)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    add_backend_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--progress", action="store_true", help="progress bar (default: on a tty)")
    add_skip_flags(
        p,
        "the skip profile stored in the model file, else SkipConfig's defaults (threshold "
        "0.98, span 3)",
        old_spellings=True,
    )


def _skip_config(args: argparse.Namespace, engine: _core.Engine) -> Optional[SkipConfig]:
    """The config to evaluate (None: dense)."""
    stored = engine.skip_profile
    profile = SkipConfig.from_core(stored, engine.n_layer) if stored is not None else None
    choice = skip_from_flags(args, profile)
    if choice is False:
        return None
    if choice is None:
        return profile if profile is not None else SkipConfig()
    return choice


def run(args: argparse.Namespace) -> int:
    if not args.text and not args.prompts:
        raise InvalidArgumentError("give --text FILE and/or --prompts FILE")
    text = read_text_file(args.text, "--text") if args.text else None
    prompts = None
    if args.prompts:
        lines = read_text_file(args.prompts, "--prompts").split("\n")
        prompts = [line for line in lines if line.strip()]
    progress = args.progress or sys.stderr.isatty()
    n_ctx = max(args.ctx, 256) + args.max_new_tokens + 64
    engine = _core.Engine(
        args.model, backend=args.backend, n_ctx=n_ctx, n_threads=args.threads or 0
    )
    try:
        skip = _skip_config(args, engine)
        out: dict[str, Any] = {"model": args.model, "skip": skip.to_dict() if skip else None}
        if text is not None:
            tokens = engine.tokenize(text, False, False)
            ev = TeacherForcedEval(
                engine, tokens, args.ctx, args.prompt_len, args.max_windows, progress
            )
            result = ev.score(skip) if skip is not None else ev.dense_result()
            out["teacher_forced"] = result.to_dict()
        if prompts is not None:
            out["generation"] = generation_agreement(
                engine, prompts, skip, args.max_new_tokens, progress
            )
    finally:
        engine.close()
    print(dumps_json(out) if args.json else format_text(out))
    return 0


def format_text(out: dict[str, Any]) -> str:
    skip = "dense (--no-skip)" if out["skip"] is None else json.dumps(out["skip"])
    lines = [f"model  {out['model']}", f"skip   {skip}"]
    tf = out.get("teacher_forced")
    if tf:
        lines += [
            f"teacher-forced over {tf['n_scored']} scored tokens:",
            f"  perplexity   dense {tf['ppl_dense']:.4f}  skip {tf['ppl_skip']:.4f} "
            f"({100 * tf['ppl_increase']:+.2f}%)",
            f"  top-1 agreement with dense  {100 * tf['top1_agreement']:.2f}%",
            f"  mean KL(dense || skip)      {tf['kl_mean']:.5f} nats",
            f"  skip ratio                  {100 * tf['skip_ratio']:.2f}%",
            f"  FFN bytes saved             {100 * tf['ffn_bytes_saved']:.2f}%",
        ]
    gen = out.get("generation")
    if gen:
        lines += [
            f"greedy generation over {gen['prompts']} prompts:",
            f"  token match rate {100 * gen['token_match_rate']:.1f}%, mean first divergence "
            f"{gen['mean_first_divergence']:.1f}, identical {gen['identical_continuations']}",
            f"  skip ratio {100 * gen['skip_ratio']:.2f}%",
        ]
    return "\n".join(lines)
