"""SkipConfig: the FFN-skipping policy (semantics in shared/DESIGN.md, implemented in C++)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _core
from ._checks import int_arg
from .errors import InvalidArgumentError

ChannelThreshold = Union[None, float, Sequence[float]]
_CHANNEL_FIELDS = ("t_in", "t_gate", "t_mid")


@dataclass
class SkipConfig:
    """Conditional FFN: block skipping (kind 1) and channel sparsity (kind 2), composable.

    Kind 1 (FFN-SkipLLM). After attention, layer l's FFN may be skipped for the current generated
    token when the gate g = cos(h, h + FFN(norm(h))) of an earlier hot layer reached
    ``threshold``: the next ``span`` hot layers (0: all remaining hot layers) are then skipped.
    Prompt tokens, the first ``warmup`` generated tokens, and the cold layers (the first
    ``cold_start`` and the last ``cold_end``) are always dense. ``threshold`` is one float or one
    per layer (NaN: never).

    Kind 2, channel sparsity (TEAL-like): in an FFN that runs for a gated token, entries of the FFN
    input h with ``|h| < t_in``, neurons whose activated gate has ``|g| < t_gate``, and entries of
    W_down's input m with ``|m| < t_mid`` are zeroed and their weights are not read. Each is None
    (off), one float for every layer, or one per layer; NaN turns a filter off in that layer.
    Kind 2 applies to the same tokens as kind 1 (not to prompt or warm-up tokens) and to every
    layer, cold ones included. A block that kind 1 skips is skipped whole; otherwise kind 1's gate
    is taken on kind 2's output. Kind 2 alone: ``threshold=float("nan")``.

    ``compensation`` (optional, shape (n_layer, n_embd)): what a skipped FFN block adds to the
    residual stream instead of nothing; the calibration tool fits it as the mean FFN update of
    the tokens its profile skips. ``record_gates`` / ``record_ffn`` keep every gate value / FFN
    output in the engine's stats (calibration input; ``record_ffn`` on the CPU backend only);
    ``record_channels`` counts |h|, |g| and |m| into per-layer log-scale histograms (CPU only;
    ``channel_quantile`` turns them into thresholds).
    """

    enabled: bool = True
    warmup: int = 32
    cold_start: int = 2
    cold_end: int = 2
    threshold: Union[float, Sequence[float]] = 0.98
    span: int = 3
    t_in: ChannelThreshold = None
    t_gate: ChannelThreshold = None
    t_mid: ChannelThreshold = None
    record_gates: bool = False
    record_ffn: bool = False
    record_channels: bool = False
    # Arrays do not compare with ==; same_profile() compares it explicitly.
    compensation: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("warmup", "cold_start", "cold_end", "span"):
            setattr(self, name, int_arg(f"SkipConfig.{name}", getattr(self, name), 0))
        values = self.threshold_list()
        if not values:
            raise InvalidArgumentError("SkipConfig.threshold: empty list")
        for i, t in enumerate(values):
            if not math.isnan(t) and not -1.0 <= t <= 1.0 and not math.isinf(t):
                raise InvalidArgumentError(
                    f"SkipConfig.threshold[{i}] = {t} is outside [-1, 1] (use NaN for 'never')"
                )
        for name in _CHANNEL_FIELDS:
            for i, t in enumerate(self.channel_list(name)):
                if t < 0:
                    raise InvalidArgumentError(
                        f"SkipConfig.{name}[{i}] = {t} is negative (use NaN for 'off')"
                    )
        if self.compensation is not None:
            try:
                comp = np.asarray(self.compensation, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"SkipConfig.compensation: {exc}") from None
            if comp.ndim != 2 or comp.size == 0:
                raise InvalidArgumentError(
                    f"SkipConfig.compensation must be a non-empty (n_layer, n_embd) array, "
                    f"got shape {comp.shape}"
                )
            if not np.isfinite(comp).all():
                raise InvalidArgumentError("SkipConfig.compensation holds non-finite values")
            self.compensation = comp

    def threshold_list(self) -> list[float]:
        th = self.threshold
        try:
            return [float(th)] if isinstance(th, (int, float)) else [float(t) for t in th]
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int > 1e308
            raise InvalidArgumentError(f"SkipConfig.threshold: {exc}") from None

    def channel_list(self, name: str) -> list[float]:
        """Kind 2 thresholds ``name`` (t_in, t_gate or t_mid) as a list: [] when off."""
        value = getattr(self, name)
        if value is None:
            return []
        if isinstance(value, (int, float)):
            return [float(value)]
        try:
            return [float(t) for t in value]
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"SkipConfig.{name}: {exc}") from None

    def to_core(self) -> _core.SkipConfig:
        cfg = _core.SkipConfig()
        cfg.enabled = bool(self.enabled)
        cfg.warmup = self.warmup
        cfg.cold_start = self.cold_start
        cfg.cold_end = self.cold_end
        cfg.threshold = self.threshold_list()
        cfg.span = self.span
        cfg.t_in = self.channel_list("t_in")
        cfg.t_gate = self.channel_list("t_gate")
        cfg.t_mid = self.channel_list("t_mid")
        cfg.record_gates = bool(self.record_gates)
        cfg.record_ffn = bool(self.record_ffn)
        cfg.record_channels = bool(self.record_channels)
        if self.compensation is not None:
            cfg.compensation = np.ascontiguousarray(self.compensation, dtype=np.float32).ravel()
        return cfg

    @classmethod
    def from_core(cls, cfg: _core.SkipConfig, n_layer: Optional[int] = None) -> SkipConfig:
        th = list(cfg.threshold)
        comp = np.asarray(cfg.compensation, dtype=np.float32)
        layers = n_layer or (len(th) if len(th) > 1 else 0)

        def channel(values: Sequence[float]) -> ChannelThreshold:
            values = list(values)
            return None if not values else values[0] if len(values) == 1 else values

        return cls(
            enabled=cfg.enabled,
            warmup=cfg.warmup,
            cold_start=cfg.cold_start,
            cold_end=cfg.cold_end,
            threshold=th[0] if len(th) == 1 else th,
            span=cfg.span,
            t_in=channel(cfg.t_in),
            t_gate=channel(cfg.t_gate),
            t_mid=channel(cfg.t_mid),
            record_gates=cfg.record_gates,
            record_ffn=cfg.record_ffn,
            record_channels=cfg.record_channels,
            compensation=comp.reshape(layers, -1) if comp.size and layers else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if not isinstance(d["threshold"], (int, float)):
            d["threshold"] = [None if math.isnan(t) else t for t in self.threshold_list()]
        for name in _CHANNEL_FIELDS:
            if d[name] is not None and not isinstance(d[name], (int, float)):
                d[name] = [None if math.isnan(t) else t for t in self.channel_list(name)]
        if self.compensation is None:
            del d["compensation"]
        else:
            d["compensation"] = self.compensation.astype(float).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkipConfig:
        if not isinstance(d, dict):
            raise InvalidArgumentError(f"SkipConfig: expected a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidArgumentError(f"SkipConfig: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        th = d.get("threshold", 0.98)
        if th is None:  # to_dict writes a NaN threshold (never: kind 2 alone) as JSON null
            d["threshold"] = math.nan
        elif isinstance(th, list):
            d["threshold"] = [math.nan if t is None else t for t in th]  # checked by __init__
        for name in _CHANNEL_FIELDS:
            if isinstance(d.get(name), list):
                d[name] = [math.nan if t is None else float(t) for t in d[name]]
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
