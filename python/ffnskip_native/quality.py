"""Quality of FFN skipping against the dense model (`ffnskip eval`).

Teacher-forced: the text is cut into windows of `ctx` tokens; in each window the first
`prompt_len` tokens are the prompt (always dense) and the rest are treated as generated tokens,
so the policy applies exactly as in decoding (warm-up counted from the first generated token).
Scored rows are the predictions made at generated positions. Reported: perplexity dense and with
skipping, top-1 agreement with the dense model, mean KL(dense || skip) in nats, the achieved
skip ratio (skipped FFN blocks / (generated tokens x layers), warm-up tokens included), and the
FFN weight bytes not read, as the engine counts them (channel layouts' scale tables included):
over all layers (``ffn_bytes_saved``, 1 - bytes read / (generated tokens x dense FFN bytes per
token), warm-up tokens included) and per layer, with kind 2's per-layer drop fractions.

Generation: for each prompt, greedy continuations with and without skipping; reported are the
fraction of identical tokens and the position of the first divergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from . import _core
from ._util import progress_bar
from .errors import InvalidArgumentError
from .skip import SkipConfig


def row_stats(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log-sum-exp, negative log-likelihood of ``targets``, top-1) of every row, computed
    natively in one pass per row (numpy's float64 log-softmax over 150k-entry vocabularies
    cost as much as the forward pass)."""
    lse, top1 = _core.logsumexp_rows(logits)
    nll = lse - logits[np.arange(len(targets)), targets].astype(np.float64)
    return lse, nll, top1


@dataclass
class Window:
    tokens: list[int]
    targets: np.ndarray  # the token each scored row predicts
    dense_logits: np.ndarray  # (rows, n_vocab) float32, exactly as the engine returned them
    dense_lse: np.ndarray  # (rows,) float64 log-sum-exp of each row
    dense_nll: np.ndarray  # (rows,)
    dense_top1: np.ndarray  # (rows,)


@dataclass
class QualityResult:
    n_scored: int
    ppl_dense: float
    ppl_skip: float
    top1_agreement: float
    kl_mean: float
    skip_ratio: float
    gates: Optional[np.ndarray] = field(default=None, repr=False)
    ffn_bytes_saved: float = 0.0
    # Per layer: 1 - FFN bytes read / (generated tokens x that layer's dense FFN bytes).
    layer_bytes_saved: list[float] = field(default_factory=list)
    # Kind 2, per layer: the fraction of FFN inputs h (``in``), neurons (``gate``) and W_down
    # inputs m (``mid``) dropped, over the FFNs that ran with a channel filter (0 where none ran).
    layer_dropped: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_scored": self.n_scored,
            "ppl_dense": self.ppl_dense,
            "ppl_skip": self.ppl_skip,
            "ppl_increase": self.ppl_skip / self.ppl_dense - 1.0,
            "top1_agreement": self.top1_agreement,
            "kl_mean": self.kl_mean,
            "skip_ratio": self.skip_ratio,
            "ffn_bytes_saved": self.ffn_bytes_saved,
            "layer_ffn_bytes_saved": self.layer_bytes_saved,
            "layer_dropped": self.layer_dropped,
        }


class FfnBytes:
    """Sums the engine's per-call FFN byte and channel-drop counts (skip_stats()) over calls."""

    def __init__(self, n_layer: int, n_embd: int, n_ff: int) -> None:
        self.n_embd, self.n_ff = n_embd, n_ff
        self.tokens = 0
        self.read = np.zeros(n_layer)
        self.dense = np.zeros(n_layer)
        self.runs = np.zeros(n_layer)
        self.dropped = {k: np.zeros(n_layer) for k in ("in", "gate", "mid")}

    def add(self, stats: dict[str, Any]) -> None:
        self.tokens += int(stats["tokens"])
        self.read += np.asarray(stats["ffn_bytes_read"], dtype=np.float64)
        self.dense = np.asarray(stats["ffn_bytes_dense"], dtype=np.float64)
        self.runs += np.asarray(stats["channel_runs"], dtype=np.float64)
        for k in self.dropped:
            self.dropped[k] += np.asarray(stats[f"dropped_{k}"], dtype=np.float64)

    def saved(self) -> float:
        total = self.tokens * self.dense.sum()
        return float(1.0 - self.read.sum() / total) if total > 0 else 0.0

    def layer_saved(self) -> list[float]:
        if self.tokens == 0:
            return [0.0] * len(self.read)
        return [float(x) for x in 1.0 - self.read / np.maximum(self.tokens * self.dense, 1.0)]

    def layer_dropped(self) -> dict[str, list[float]]:
        # t_mid counts only neurons t_gate kept: its fraction is of all n_ff, like t_gate's.
        width = {"in": self.n_embd, "gate": self.n_ff, "mid": self.n_ff}
        runs = np.maximum(self.runs, 1.0)
        return {k: [float(x) for x in v / (runs * width[k])] for k, v in self.dropped.items()}


class TeacherForcedEval:
    """Dense reference computed once; then any number of skip configs scored against it."""

    def __init__(
        self,
        engine: _core.Engine,
        tokens: Sequence[int],
        ctx: int = 512,
        prompt_len: int = 64,
        max_windows: Optional[int] = None,
        progress: bool = False,
    ) -> None:
        if not 0 < prompt_len < ctx - 1:
            raise InvalidArgumentError(f"need 0 < prompt_len ({prompt_len}) < ctx - 1 ({ctx - 1})")
        if ctx > engine.n_ctx:
            raise InvalidArgumentError(f"ctx {ctx} exceeds the engine's n_ctx {engine.n_ctx}")
        tokens = list(tokens)
        n_windows = len(tokens) // ctx
        if max_windows is not None:
            n_windows = min(n_windows, max_windows)
        if n_windows == 0:
            raise InvalidArgumentError(
                f"the text has {len(tokens)} tokens: at least one window of {ctx} is needed"
            )
        self.engine, self.ctx, self.prompt_len, self.progress = engine, ctx, prompt_len, progress
        self.windows: list[Window] = []
        with progress_bar(n_windows, "dense", self.progress) as bar:
            for w in range(n_windows):
                toks = tokens[w * ctx : (w + 1) * ctx]
                # Same prompt/generated split as the skip runs: equal decisions, equal logits.
                logits = engine.logits(toks, all_positions=True, prompt_len=prompt_len)
                rows = np.ascontiguousarray(logits[prompt_len:-1])
                targets = np.asarray(toks[prompt_len + 1 :])
                lse, nll, top1 = row_stats(rows, targets)
                self.windows.append(Window(toks, targets, rows, lse, nll, top1))
                bar.update()

    @property
    def n_scored(self) -> int:
        return sum(len(w.targets) for w in self.windows)

    def dense_ppl(self) -> float:
        return math.exp(np.concatenate([w.dense_nll for w in self.windows]).mean())

    def dense_result(self) -> QualityResult:
        """The result of a config that skips nothing: the dense model against itself."""
        ppl = self.dense_ppl()
        n_layer = self.engine.n_layer
        return QualityResult(
            n_scored=self.n_scored,
            ppl_dense=ppl,
            ppl_skip=ppl,
            top1_agreement=1.0,
            kl_mean=0.0,
            skip_ratio=0.0,
            layer_bytes_saved=[0.0] * n_layer,
            layer_dropped={k: [0.0] * n_layer for k in ("in", "gate", "mid")},
        )

    def score(self, skip: SkipConfig, label: str = "skip") -> QualityResult:
        core = skip.to_core()
        nll, agree, kl = [], [], []
        skipped = evaluated = 0
        gates = []
        hp = self.engine.hparams
        ffn_bytes = FfnBytes(self.engine.n_layer, int(hp["n_embd"]), int(hp["n_ff"]))
        with progress_bar(len(self.windows), label, self.progress) as bar:
            for w in self.windows:
                logits = self.engine.logits(
                    w.tokens, all_positions=True, skip=core, prompt_len=self.prompt_len
                )
                stats = self.engine.skip_stats()
                skipped += sum(stats["skipped"])
                evaluated += sum(stats["evaluated"])
                ffn_bytes.add(stats)
                if skip.record_gates and "gates" in stats:
                    gates.append(stats["gates"])
                rows = np.ascontiguousarray(logits[self.prompt_len : -1])
                lse, row_nll, top1 = row_stats(rows, w.targets)
                nll.append(row_nll)
                agree.append(top1 == w.dense_top1)
                kl.append(_core.kl_rows(w.dense_logits, w.dense_lse, rows, lse))
                bar.update()
        total = skipped + evaluated
        return QualityResult(
            n_scored=self.n_scored,
            ppl_dense=self.dense_ppl(),
            ppl_skip=math.exp(np.concatenate(nll).mean()),
            top1_agreement=float(np.concatenate(agree).mean()),
            kl_mean=float(np.concatenate(kl).mean()),
            skip_ratio=skipped / total if total else 0.0,
            gates=np.concatenate(gates) if gates else None,
            ffn_bytes_saved=ffn_bytes.saved(),
            layer_bytes_saved=ffn_bytes.layer_saved(),
            layer_dropped=ffn_bytes.layer_dropped(),
        )


def greedy(engine: _core.Engine, prompt: Sequence[int], n_new: int, skip: Optional[SkipConfig]):
    engine.set_skip(skip.to_core() if skip else None)
    engine.reset()
    logits = engine.eval(list(prompt))
    out: list[int] = []
    eog = set(engine.eog_ids)
    for i in range(n_new):
        tok = int(np.argmax(logits))
        out.append(tok)
        if tok in eog or engine.n_past + 1 >= engine.n_ctx:
            break
        logits = engine.eval_generated(tok, i)
    stats = engine.skip_stats()
    engine.set_skip(None)
    return out, stats


def generation_agreement(
    engine: _core.Engine,
    prompts: Sequence[str],
    skip: Optional[SkipConfig],
    max_new_tokens: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Greedy continuations with skipping compared token by token with dense ones (``skip``
    None: dense against itself, without running it twice)."""
    same = total = skipped_blocks = blocks = 0
    first_div = []
    with progress_bar(len(prompts), "generate", progress) as bar:
        for text in prompts:
            ids = engine.tokenize(text, True, False)
            dense, dense_stats = greedy(engine, ids, max_new_tokens, None)
            sk, stats = (
                (dense, dense_stats) if skip is None else greedy(engine, ids, max_new_tokens, skip)
            )
            n = min(len(dense), len(sk))
            div = next((i for i in range(n) if dense[i] != sk[i]), n)
            first_div.append(div)
            same += sum(a == b for a, b in zip(dense, sk))
            total += max(len(dense), len(sk))
            skipped_blocks += sum(stats["skipped"])
            blocks += sum(stats["skipped"]) + sum(stats["evaluated"])
            bar.update()
    return {
        "prompts": len(prompts),
        "token_match_rate": same / total if total else 1.0,
        "mean_first_divergence": float(np.mean(first_div)) if first_div else 0.0,
        "identical_continuations": sum(d >= max_new_tokens for d in first_div),
        "skip_ratio": skipped_blocks / blocks if blocks else 0.0,
    }
