"""The calibration and held-out texts: the packaged ones, reading user files, and mixing genres."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .. import _core
from ..errors import InvalidArgumentError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def builtin_texts(split: str) -> list[Path]:
    """The packaged texts of one split ('calib' or 'heldout'); see data/README.md."""
    return sorted(DATA_DIR.glob(f"{split}_*.txt"))


def read_texts(paths: Sequence[os.PathLike[str] | str], what: str) -> list[str]:
    """Read UTF-8 texts; a missing or empty file is a clear error."""
    if not paths:
        raise InvalidArgumentError(f"no {what} text given")
    texts = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InvalidArgumentError(f"{what} text not found: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise InvalidArgumentError(f"{what} text is empty: {path}")
        texts.append(text)
    return texts


def mix_tokens(engine: _core.Engine, texts: Sequence[str], budget: int) -> list[int]:
    """About ``budget`` tokens with an equal share from every text (short texts give all they
    have and the rest is spread over the others), so each genre is represented."""
    toks = [engine.tokenize(t, False, False) for t in texts]
    shares = [0] * len(toks)
    left = budget
    open_ = [i for i, t in enumerate(toks) if t]
    while left > 0 and open_:
        each = max(1, left // len(open_))
        for i in list(open_):
            take = min(each, len(toks[i]) - shares[i], left)
            shares[i] += take
            left -= take
            if shares[i] >= len(toks[i]):
                open_.remove(i)
            if left == 0:
                break
    return [tok for t, n in zip(toks, shares) for tok in t[:n]]
