"""Phi3ForCausalLM's config.json as llama.cpp's converter turns it into `phi3` GGUF metadata.

Phi-3/3.5/4-mini rotate int(partial_rotary_factor * hidden_size) // num_attention_heads dimensions
of each head (Phi-4-mini: 3/4 of them) and, for their long-context versions, scale RoPE by
"longrope": per rotated pair a long and a short divisor (rope_factors_long/short.weight; readers
take the long ones when their context exceeds original_max_position_embeddings) and a magnitude
on cos and sin, rope.scaling.attn_factor = sqrt(1 + ln(s) / ln(original context)) with
s = max_position_embeddings / original_max_position_embeddings (1 when s <= 1). transformers
takes s from rope_parameters' `factor` and the magnitude from `attention_factor` when the config
gives them; so does this converter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import ConvertError
from .fields import Fields


@dataclass(frozen=True)
class LongRope:
    """phi3's longrope: per-pair divisors and the cos/sin magnitude."""

    long_factors: Tuple[float, ...]
    short_factors: Tuple[float, ...]
    attn_factor: float


@dataclass(frozen=True)
class Phi3Rope:
    """What phi3's rope metadata needs from config.json."""

    n_rot: int
    orig_ctx: int
    longrope: Optional[LongRope]


def _factors(scaling: Fields, key: str, n_pairs: int) -> Tuple[float, ...]:
    values = scaling.get_list(key)
    ok = len(values) == n_pairs and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in values
    )
    if not ok:
        raise ConvertError(
            f"{scaling.where}: {key} must be {n_pairs} positive numbers (one per rotated pair)"
        )
    return tuple(float(v) for v in values)


def phi3_rope(
    cfg: Fields, scaling: Fields, kind: Optional[str], n_embd: int, n_head: int
) -> Phi3Rope:
    """The rotated dimensions, original context and longrope factors of a phi3 config.

    scaling: rope_parameters (transformers >= 5) or rope_scaling; kind its rope type.
    """
    rot_pct = scaling.get_float(
        "partial_rotary_factor", cfg.get_float("partial_rotary_factor", 1.0, gt=0.0), gt=0.0
    )
    n_rot = int(rot_pct * n_embd) // n_head
    if n_rot < 2 or n_rot % 2 or n_rot > n_embd // n_head:
        raise ConvertError(
            f"config.json: partial_rotary_factor {rot_pct} gives {n_rot} rotated dimensions per "
            "head (must be even, >= 2 and at most the head size)"
        )
    n_ctx = cfg.get_int("max_position_embeddings", 4096)
    orig_ctx = scaling.get_int(
        "original_max_position_embeddings", cfg.get_int("original_max_position_embeddings", n_ctx)
    )
    if kind in (None, "default"):
        return Phi3Rope(n_rot, orig_ctx, None)
    if kind not in ("longrope", "su"):
        raise ConvertError(f"config.json: phi3 rope_scaling type {kind!r} is not supported")
    factor = scaling.get_float("factor", n_ctx / orig_ctx, gt=0.0)
    default = math.sqrt(1 + math.log(factor) / math.log(orig_ctx)) if factor > 1.0 else 1.0
    longrope = LongRope(
        long_factors=_factors(scaling, "long_factor", n_rot // 2),
        short_factors=_factors(scaling, "short_factor", n_rot // 2),
        attn_factor=scaling.get_float("attention_factor", default, gt=0.0),
    )
    return Phi3Rope(n_rot, orig_ctx, longrope)
