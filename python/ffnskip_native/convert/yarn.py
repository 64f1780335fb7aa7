"""rope_scaling of type "yarn" (Qwen2.5, Qwen3's long-context configs) as GGUF metadata.

llama.cpp's converter writes {arch}.rope.scaling.type = "yarn", .factor and
.original_context_length, plus .yarn_beta_fast, .yarn_beta_slow and .yarn_attn_factor when the
config gives beta_fast, beta_slow and attention_factor (readers default them to 32, 1 and
1 + 0.1 ln factor, transformers' defaults). What GGUF has no key for is refused: DeepSeek's
mscale / mscale_all_dim magnitude and transformers' truncate = false (unrounded blend ends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConvertError
from .fields import Fields


@dataclass(frozen=True)
class Yarn:
    """The yarn fields GGUF stores; None: the key is not written (readers use the default)."""

    factor: float
    orig_ctx: int
    beta_fast: Optional[float] = None
    beta_slow: Optional[float] = None
    attn_factor: Optional[float] = None


def yarn_rope(cfg: Fields, scaling: Fields) -> Yarn:
    """The yarn parameters of rope_scaling / rope_parameters (ConvertError naming a bad one)."""
    for key in ("mscale", "mscale_all_dim"):
        if scaling.has(key):
            raise ConvertError(f"config.json: yarn rope_scaling with {key} is not supported")
    if not scaling.get_bool("truncate", True):
        raise ConvertError("config.json: yarn rope_scaling with truncate = false is not supported")
    if not scaling.has("original_max_position_embeddings") and not cfg.has(
        "original_max_position_embeddings"
    ):
        raise ConvertError("config.json: yarn rope_scaling needs original_max_position_embeddings")
    return Yarn(
        factor=scaling.get_float("factor", gt=0.0),
        orig_ctx=scaling.get_int(
            "original_max_position_embeddings", cfg.get_int("original_max_position_embeddings", 1)
        ),
        beta_fast=scaling.get_float("beta_fast", None, gt=0.0),
        beta_slow=scaling.get_float("beta_slow", None, gt=0.0),
        attn_factor=scaling.get_float("attention_factor", None, gt=0.0),
    )
