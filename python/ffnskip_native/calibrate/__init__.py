"""``ffnskip calibrate``: find a model's best FFN-skip profile under a quality goal.

Goal: ``--target-skip R`` (best quality at skip ratio R) or ``--max-ppl-increase P`` /
``--max-kl K`` (most skipping within a budget). Phases, each timed:

1. dense reference + gate recording on the calibration and the held-out text (one pass each:
   never-firing thresholds give dense logits while recording every layer's gate);
2. per-layer sensitivity: KL to dense when one layer's FFN is removed, on short pieces spread
   over the whole calibration text;
3. surrogate search over per-layer thresholds: the greedy path (search.greedy_path)
   for every (span, cold_end) pair and the sensitivity-tilted global threshold for every span;
   the engine verifies the best few candidates together with the two baselines at the same
   predicted ratio; the best candidate and the best global threshold are each matched to the
   target ratio on the calibration text and the lower KL wins;
4. held-out report: the chosen profile and the baselines, (a) the paper's single global
   threshold (best span) and (b) static removal of the highest-gate FFN blocks, each matched to
   the same skip ratio on the held-out text.

Outputs (written only when everything succeeded): the profile JSON (a SkipConfig, usable as
``--skip FILE``), a report JSON, a PNG, and with ``--write-gguf`` a model copy carrying the
profile as ``ffnskip.*`` metadata.

``--kind channel --target-bytes R`` calibrates kind 2 (channel sparsity) instead, and ``--kind
both`` a block profile plus channel thresholds (kinds.py): per-layer thresholds from quantiles of
the recorded |h|, |g|, |m|, allocated greedily towards R of the FFN bytes per generated token
not read (the engine's count), judged on held-out text against the uniform allocation and the
best block-skip profile at equal bytes.

Modules: texts (the packaged texts, mixing genres), search (the surrogate search over recorded
gates), phases (one function per phase), pipeline (``calibrate()``: the phases in order),
results (what it returns), output (the files it writes), report (table and PNG), cli (the
``ffnskip calibrate`` arguments); for kind 2: channel_search (levels, byte model, greedy
allocation), channel_pipeline (``calibrate_channel()``), kinds (``--kind channel|both`` and the
baselines).
"""

from .cli import main
from .output import write_outputs
from .phases import DenseReference, dense_pass
from .pipeline import calibrate
from .results import CalibrationResult, ReportRow
from .texts import builtin_texts, mix_tokens, read_texts

__all__ = [
    "CalibrationResult",
    "DenseReference",
    "ReportRow",
    "builtin_texts",
    "calibrate",
    "dense_pass",
    "main",
    "mix_tokens",
    "read_texts",
    "write_outputs",
]
