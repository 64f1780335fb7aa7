"""SkipConfig: the FFN-skipping policy (semantics in shared/DESIGN.md, implemented in C++)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

from . import _core
from .errors import InvalidArgumentError


@dataclass
class SkipConfig:
    """Adaptive FFN skipping (FFN-SkipLLM).

    After attention, layer l's FFN may be skipped for the current generated token when the gate
    g = cos(h, h + FFN(norm(h))) of an earlier hot layer reached ``threshold``: the next ``span``
    hot layers (0: all remaining hot layers) are then skipped. Prompt tokens, the first
    ``warmup`` generated tokens, and the cold layers (the first ``cold_start`` and the last
    ``cold_end``) are always dense. ``threshold`` is one float or one per layer (NaN: never).
    """

    enabled: bool = True
    warmup: int = 32
    cold_start: int = 2
    cold_end: int = 2
    threshold: Union[float, Sequence[float]] = 0.98
    span: int = 3
    record_gates: bool = False

    def __post_init__(self) -> None:
        for name in ("warmup", "cold_start", "cold_end", "span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"SkipConfig.{name} must be an int, got {value!r}")
            if value < 0:
                raise InvalidArgumentError(f"SkipConfig.{name} must be >= 0, got {value}")
        values = self.threshold_list()
        if not values:
            raise InvalidArgumentError("SkipConfig.threshold: empty list")
        for i, t in enumerate(values):
            if not math.isnan(t) and not -1.0 <= t <= 1.0 and not math.isinf(t):
                raise InvalidArgumentError(
                    f"SkipConfig.threshold[{i}] = {t} is outside [-1, 1] (use NaN for 'never')"
                )

    def threshold_list(self) -> list[float]:
        if isinstance(self.threshold, (int, float)):
            return [float(self.threshold)]
        try:
            return [float(t) for t in self.threshold]
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"SkipConfig.threshold: {exc}") from None

    def to_core(self) -> _core.SkipConfig:
        cfg = _core.SkipConfig()
        cfg.enabled = bool(self.enabled)
        cfg.warmup = self.warmup
        cfg.cold_start = self.cold_start
        cfg.cold_end = self.cold_end
        cfg.threshold = self.threshold_list()
        cfg.span = self.span
        cfg.record_gates = bool(self.record_gates)
        return cfg

    @classmethod
    def from_core(cls, cfg: _core.SkipConfig) -> SkipConfig:
        th = list(cfg.threshold)
        return cls(
            enabled=cfg.enabled,
            warmup=cfg.warmup,
            cold_start=cfg.cold_start,
            cold_end=cfg.cold_end,
            threshold=th[0] if len(th) == 1 else th,
            span=cfg.span,
            record_gates=cfg.record_gates,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not isinstance(d["threshold"], float):
            d["threshold"] = [None if math.isnan(t) else t for t in self.threshold_list()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkipConfig:
        known = {"enabled", "warmup", "cold_start", "cold_end", "threshold", "span", "record_gates"}
        unknown = set(d) - known
        if unknown:
            raise InvalidArgumentError(f"SkipConfig: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        th = d.get("threshold", 0.98)
        if isinstance(th, list):
            d["threshold"] = [math.nan if t is None else float(t) for t in th]
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> SkipConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"SkipConfig JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgumentError("SkipConfig JSON must be an object")
        return cls.from_dict(data)
