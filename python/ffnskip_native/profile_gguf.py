"""Store a skip profile in a GGUF file as ``ffnskip.*`` metadata (read back by the engine).

The copy keeps every key/value pair and the raw bytes of every tensor (nothing is re-quantized);
only the ``ffnskip.*`` keys are replaced. It is written to a temporary file next to the
destination and renamed at the end, so a failure never leaves a partial model behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from ._util import atomic_write
from .errors import InvalidArgumentError
from .skip import SkipConfig

PREFIX = "ffnskip."
CHANNEL_KEYS = ("t_in", "t_gate", "t_mid")
_ARCH_KEY = "general.architecture"
_ALIGN_KEY = "general.alignment"


def profile_metadata(cfg: SkipConfig) -> dict[str, Any]:
    """The ``ffnskip.*`` keys for ``cfg`` (the layout cpp/src/model.cpp read_skip_profile reads).

    Kind 2's thresholds (``ffnskip.t_in`` / ``t_gate`` / ``t_mid``, float arrays) are written only
    when set; an absent key is a filter that is off.
    """
    meta: dict[str, Any] = {
        "ffnskip.enabled": bool(cfg.enabled),
        "ffnskip.warmup": int(cfg.warmup),
        "ffnskip.cold_start": int(cfg.cold_start),
        "ffnskip.cold_end": int(cfg.cold_end),
        "ffnskip.span": int(cfg.span),
        "ffnskip.threshold": [float(t) for t in cfg.threshold_list()],
    }
    for name in CHANNEL_KEYS:
        values = cfg.channel_list(name)
        if values:
            meta[PREFIX + name] = values
    return meta


def write_profile_gguf(src: Union[str, Path], dst: Union[str, Path], cfg: SkipConfig) -> Path:
    """Copy ``src`` to ``dst`` with ``cfg`` stored as its skip profile; returns ``dst``."""
    import gguf  # the `convert`/`calibrate` extras; only needed when writing

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InvalidArgumentError(f"--write-gguf {dst} would overwrite the input model")
    if not dst.parent.is_dir():
        raise InvalidArgumentError(f"output directory does not exist: {dst.parent}")
    reader = gguf.GGUFReader(str(src))
    arch_field = reader.fields.get(_ARCH_KEY)
    if arch_field is None:
        raise InvalidArgumentError(f"{src}: no {_ARCH_KEY} key")
    arch = str(arch_field.contents())

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), arch)
        align = reader.fields.get(_ALIGN_KEY)
        if align is not None:
            # Tensor offsets must follow the source's alignment, which the copied key declares.
            writer.data_alignment = int(align.contents())
        for field in reader.fields.values():
            if field.name == _ARCH_KEY or field.name.startswith(("GGUF.", PREFIX)):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
        meta = profile_metadata(cfg)
        writer.add_bool("ffnskip.enabled", meta["ffnskip.enabled"])
        for key in ("warmup", "cold_start", "cold_end", "span"):
            writer.add_uint32(PREFIX + key, meta[PREFIX + key])
        writer.add_array("ffnskip.threshold", meta["ffnskip.threshold"])
        for name in CHANNEL_KEYS:
            if PREFIX + name in meta:
                writer.add_array(PREFIX + name, meta[PREFIX + name])
        if cfg.compensation is not None:
            # Flat float32 array, row-major (n_layer, n_embd), as model.cpp reads it.
            writer.add_array("ffnskip.compensation", cfg.compensation.ravel().tolist())
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(t.data)
        writer.close()

    atomic_write(dst, write)
    return dst


def read_profile_gguf(path: Union[str, Path]) -> Optional[SkipConfig]:
    """The skip profile stored in ``path`` as the engine parses it (None when there is none)."""
    from . import _core

    engine = _core.Engine(str(path), backend="cpu", n_ctx=16, n_threads=1)
    try:
        profile = engine.skip_profile
        n_layer = engine.n_layer
    finally:
        engine.close()
    return SkipConfig.from_core(profile, n_layer) if profile is not None else None


def same_profile(a: SkipConfig, b: SkipConfig) -> bool:
    """Field-by-field equality with NaN == NaN and thresholds compared as float32."""
    import numpy as np

    def same_floats(xa: list[float], xb: list[float]) -> bool:
        ta = np.asarray(xa, dtype=np.float32)
        tb = np.asarray(xb, dtype=np.float32)
        return ta.shape == tb.shape and bool(np.all((ta == tb) | (np.isnan(ta) & np.isnan(tb))))

    same_th = same_floats(a.threshold_list(), b.threshold_list()) and all(
        same_floats(a.channel_list(n), b.channel_list(n)) for n in CHANNEL_KEYS
    )
    fields = ("enabled", "warmup", "cold_start", "cold_end", "span")
    ca, cb = a.compensation, b.compensation
    same_comp = (ca is None and cb is None) or (
        ca is not None and cb is not None and ca.shape == cb.shape and bool(np.all(ca == cb))
    )
    return same_th and same_comp and all(getattr(a, f) == getattr(b, f) for f in fields)
