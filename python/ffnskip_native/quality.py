"""Quality of FFN skipping against the dense model (`ffnskip eval`).

Teacher-forced: the text is cut into windows of `ctx` tokens; in each window the first
`prompt_len` tokens are the prompt (always dense) and the rest are treated as generated tokens,
so the policy applies exactly as in decoding (warm-up counted from the first generated token).
Scored rows are the predictions made at generated positions. Reported: perplexity dense and with
skipping, top-1 agreement with the dense model, mean KL(dense || skip) in nats, and the achieved
skip ratio (skipped FFN blocks / (generated tokens x layers), warm-up tokens included).

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_scored": self.n_scored,
            "ppl_dense": self.ppl_dense,
            "ppl_skip": self.ppl_skip,
            "ppl_increase": self.ppl_skip / self.ppl_dense - 1.0,
            "top1_agreement": self.top1_agreement,
            "kl_mean": self.kl_mean,
            "skip_ratio": self.skip_ratio,
        }


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
        return QualityResult(
            n_scored=self.n_scored,
            ppl_dense=ppl,
            ppl_skip=ppl,
            top1_agreement=1.0,
            kl_mean=0.0,
            skip_ratio=0.0,
        )

    def score(self, skip: SkipConfig, label: str = "skip") -> QualityResult:
        core = skip.to_core()
        nll, agree, kl = [], [], []
        skipped = evaluated = 0
        gates = []
        with progress_bar(len(self.windows), label, self.progress) as bar:
            for w in self.windows:
                logits = self.engine.logits(
                    w.tokens, all_positions=True, skip=core, prompt_len=self.prompt_len
                )
                stats = self.engine.skip_stats()
                skipped += sum(stats["skipped"])
                evaluated += sum(stats["evaluated"])
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
