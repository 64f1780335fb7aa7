"""The files a calibration writes: profile JSON, report JSON, PNG and the model copy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .._util import atomic_write, dumps_json
from ..profile_gguf import write_profile_gguf
from .kinds import KindCalibration
from .report import plot_report
from .results import CalibrationResult


def write_outputs(
    result: Union[CalibrationResult, KindCalibration],
    profile_path: Optional[Path],
    report_path: Optional[Path],
    plot_path: Optional[Path],
    gguf_path: Optional[Path],
) -> list[Path]:
    """Write the requested files; each appears complete or not at all."""
    written: list[Path] = []
    if gguf_path is not None:
        write_profile_gguf(result.model, gguf_path, result.profile)
        written.append(gguf_path)
    if plot_path is not None and isinstance(result, CalibrationResult):
        atomic_write(plot_path, lambda p: plot_report(result, p))
        written.append(plot_path)
    if report_path is not None:
        text = dumps_json(result.to_dict())
        atomic_write(report_path, lambda p: p.write_text(text, encoding="utf-8"))
        written.append(report_path)
    if profile_path is not None:
        text = dumps_json(result.profile.to_dict())
        atomic_write(profile_path, lambda p: p.write_text(text + "\n", encoding="utf-8"))
        written.append(profile_path)
    return written
