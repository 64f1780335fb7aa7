"""What a calibration returns: the evaluated rows of the report and the result as a whole."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..quality import QualityResult
from ..skip import SkipConfig
from .search import GateSet


@dataclass
class ReportRow:
    """One config evaluated for the report: a method at a target ratio on one text split."""

    target: float
    method: str
    split: str
    result: QualityResult
    config: SkipConfig

    def to_dict(self) -> dict[str, Any]:
        d = {"target": self.target, "method": self.method, "split": self.split}
        d.update(self.result.to_dict())
        d["config"] = self.config.to_dict()
        if "compensation" in d["config"]:  # n_layer x n_embd numbers live in the profile only
            d["config"]["compensation"] = True
        return d


@dataclass
class CalibrationResult:
    model: str
    n_layer: int
    goal: dict[str, Any]
    profile: SkipConfig
    rows: list[ReportRow]
    curve: list[dict[str, Any]]  # every engine run: split, method, ratio, kl, ppl
    calib_gates: GateSet
    heldout_gates: GateSet
    heldout_skip_freq: Optional[np.ndarray]  # per layer, chosen profile on held-out
    sensitivity: np.ndarray
    static_order: list[int]
    profile_source: str = ""  # the search family the chosen profile came from
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def rows_for(self, split: str) -> list[ReportRow]:
        return [r for r in self.rows if r.split == split]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "n_layer": self.n_layer,
            "goal": self.goal,
            "profile": self.profile.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "curve": self.curve,
            "sensitivity": [float(x) if math.isfinite(x) else None for x in self.sensitivity],
            "static_removal_order": self.static_order,
            "profile_source": self.profile_source,
            "heldout_skip_freq": None
            if self.heldout_skip_freq is None
            else [float(x) for x in self.heldout_skip_freq],
            "timings_s": self.timings,
            "settings": self.settings,
        }
