"""config.json: the supported architectures and the hyper-parameters, checked for type and range."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .errors import ConvertError
from .fields import Fields
from .phi3 import Phi3Rope, phi3_rope
from .yarn import Yarn, yarn_rope

# HF `architectures` entry -> GGUF general.architecture.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}

# The layer rule llama.cpp applies to gemma3 (GGUF has no key for it): layer l is global when
# l % 6 == 5, else sliding-window with RoPE base 10000 and no scaling.
GEMMA3_SWA_PERIOD = 6
GEMMA3_LOCAL_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class Llama3Rope:
    """rope_scaling of rope_type "llama3" (Llama 3.1/3.2): becomes the rope_freqs.weight tensor."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_ctx: int


@dataclass(frozen=True)
class HParams:
    """The config.json values the GGUF metadata and the shape checks need."""

    arch: str  # "llama" | "qwen2" | "qwen3" | "gemma3" | "phi3"
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope_scaling_factor: Optional[float]  # linear rope scaling, None when absent
    llama3_rope: Optional[Llama3Rope] = None
    # attention.sliding_window: gemma3's local layers; mistral's and phi3's every layer (0: none)
    sliding_window: Optional[int] = None
    phi3: Optional[Phi3Rope] = None  # rotated dims, original context, longrope factors
    yarn: Optional[Yarn] = None

    @property
    def n_rot(self) -> int:
        """Rotated dimensions per head (rope.dimension_count)."""
        return self.phi3.n_rot if self.phi3 is not None else self.head_dim

    @staticmethod
    def from_config(cfg: Fields) -> HParams:
        """Validate config.json and extract hyper-parameters (ConvertError naming what is wrong).

        Each field is checked for type and range here; sizes are checked against the tensors
        actually present by plan.plan(), before anything is allocated from them.
        """
        archs = cfg.get_str_list("architectures")
        known = [a for a in archs if a in ARCHITECTURES]
        if not known:
            raise ConvertError(
                f"unsupported architecture {', '.join(archs) or '(none given)'}: "
                f"supported are {', '.join(ARCHITECTURES)}"
            )
        arch = ARCHITECTURES[known[0]]

        n_embd, n_head = cfg.get_int("hidden_size"), cfg.get_int("num_attention_heads")
        head_dim = cfg.get_int("head_dim", n_embd // n_head)
        n_head_kv = cfg.get_int("num_key_value_heads", n_head)
        if n_head % n_head_kv:
            raise ConvertError(
                f"config.json: num_attention_heads {n_head} is not a multiple of "
                f"num_key_value_heads {n_head_kv}"
            )
        if head_dim == 0 or head_dim % 2:
            raise ConvertError(
                f"config.json: head dimension {head_dim} is not a positive even number"
            )
        window = _gemma3_checks(cfg, n_embd, n_head, head_dim) if arch == "gemma3" else None
        if known[0] == "MistralForCausalLM":  # every layer slides; null: no window
            window = cfg.get_int("sliding_window", None)
        scaling, rope_theta = _gemma3_rope(cfg) if arch == "gemma3" else _rope_fields(cfg)
        factor: Optional[float] = None
        llama3: Optional[Llama3Rope] = None
        phi3: Optional[Phi3Rope] = None
        yarn: Optional[Yarn] = None
        if arch == "phi3":
            kind = scaling.get_str("rope_type", scaling.get_str("type", None))
            phi3 = phi3_rope(cfg, scaling, kind, n_embd, n_head)
            window = cfg.get_int("sliding_window", 0, lo=0)  # llama.cpp writes 0 for none
        elif scaling.obj:
            kind = scaling.get_str("rope_type", scaling.get_str("type", None))
            if kind not in ("linear", "default", "llama3", "yarn"):
                raise ConvertError(f"config.json: rope_scaling type {kind!r} is not supported")
            if kind in ("llama3", "yarn") and arch == "gemma3":
                raise ConvertError("config.json: gemma3 supports linear rope scaling only")
            if kind == "llama3":
                llama3 = _llama3_rope(cfg, scaling)
            elif kind == "yarn":
                yarn = yarn_rope(cfg, scaling)
            else:
                factor = scaling.get_float("factor", None, gt=0.0)
        if cfg.get_bool("mlp_bias", False) or (
            arch in ("llama", "qwen3", "phi3") and cfg.get_bool("attention_bias", False)
        ):
            raise ConvertError(
                f"config.json: {arch} with attention_bias / mlp_bias is not supported"
            )
        return HParams(
            arch=arch,
            n_vocab=cfg.get_int("vocab_size"),
            n_embd=n_embd,
            n_layer=cfg.get_int("num_hidden_layers"),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=cfg.get_int("intermediate_size"),
            n_ctx=cfg.get_int("max_position_embeddings", 2048),
            # The engine's own limits: rope base > 1, epsilon in (0, 1).
            rope_theta=rope_theta,
            rms_eps=cfg.get_float("rms_norm_eps", 1e-6, gt=0.0, lt=1.0),
            # Gemma ties its output to the embedding unless told otherwise.
            tied=cfg.get_bool("tie_word_embeddings", arch == "gemma3"),
            rope_scaling_factor=factor,
            llama3_rope=llama3,
            sliding_window=window,
            phi3=phi3,
            yarn=yarn,
        )


def _rope_fields(cfg: Fields) -> Tuple[Fields, float]:
    """(the rope scaling object, rope_theta) from either config layout.

    transformers >= 5 saves both in one `rope_parameters` object (rope_type "default" when
    unscaled); earlier versions a top-level rope_theta and an optional `rope_scaling`. Reading only
    the old keys from a new file would silently give base 10000.
    """
    params = cfg.get_obj("rope_parameters")
    if not params.obj:
        return cfg.get_obj("rope_scaling"), cfg.get_float("rope_theta", 10000.0, gt=1.0)
    if not params.has("rope_type") and not params.has("rope_theta"):
        raise ConvertError(
            "config.json: per-layer-type rope_parameters "
            f"({', '.join(sorted(params.obj)) or 'empty'}) are not supported"
        )
    return params, params.get_float("rope_theta", 10000.0, gt=1.0)


def _gemma3_checks(cfg: Fields, n_embd: int, n_head: int, head_dim: int) -> int:
    """The gemma3 config values that GGUF cannot express must be those llama.cpp assumes; returns
    the sliding window. Checked: the GELU-tanh activation, no soft-capping, the attention scale
    query_pre_attn_scalar^-0.5 (head_dim, or n_embd / n_head for the 62-layer 27B) and, when
    layer_types is given, the 5 local : 1 global layer pattern."""
    act = cfg.get_str("hidden_activation", cfg.get_str("hidden_act", "gelu_pytorch_tanh"))
    if act != "gelu_pytorch_tanh":
        raise ConvertError(f"config.json: gemma3 hidden_activation {act!r} is not supported")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.has(key):
            raise ConvertError(f"config.json: gemma3 with {key} is not supported")
    n_layer = cfg.get_int("num_hidden_layers")
    scalar = n_embd // n_head if n_layer == 62 else head_dim
    if cfg.get_float("query_pre_attn_scalar", float(scalar), gt=0.0) != scalar:
        raise ConvertError(
            f"config.json: gemma3 query_pre_attn_scalar must be {scalar} (GGUF readers derive the "
            "attention scale from the head size)"
        )
    want = [
        "full_attention" if i % GEMMA3_SWA_PERIOD == GEMMA3_SWA_PERIOD - 1 else "sliding_attention"
        for i in range(n_layer)
    ]
    types = cfg.get_str_list("layer_types")
    if types and types != want:
        raise ConvertError(
            "config.json: gemma3 layer_types must put a full_attention layer every "
            f"{GEMMA3_SWA_PERIOD}th layer (the rule GGUF readers apply)"
        )
    return cfg.get_int("sliding_window")


def _gemma3_rope(cfg: Fields) -> Tuple[Fields, float]:
    """(the global layers' rope scaling, their rope_theta); the local layers' rope must be the
    fixed unscaled base 10000. transformers >= 5 keeps one rope_parameters object per layer type,
    earlier versions rope_theta, rope_local_base_freq and rope_scaling."""
    params = cfg.get_obj("rope_parameters")
    if params.has("full_attention") or params.has("sliding_attention"):
        local = params.get_obj("sliding_attention")
        local_base = local.get_float("rope_theta", GEMMA3_LOCAL_ROPE_BASE, gt=1.0)
        local_kind = local.get_str("rope_type", "default")
        scaling = params.get_obj("full_attention")
        theta = scaling.get_float("rope_theta", 1_000_000.0, gt=1.0)
    else:
        local_base = cfg.get_float("rope_local_base_freq", GEMMA3_LOCAL_ROPE_BASE, gt=1.0)
        local_kind = "default"
        scaling = cfg.get_obj("rope_scaling")
        theta = cfg.get_float("rope_theta", 1_000_000.0, gt=1.0)
    if local_base != GEMMA3_LOCAL_ROPE_BASE or local_kind != "default":
        raise ConvertError(
            "config.json: gemma3 sliding-window layers must use unscaled RoPE with base 10000 "
            "(the value GGUF readers assume)"
        )
    return scaling, theta


def _llama3_rope(cfg: Fields, scaling: Fields) -> Llama3Rope:
    """The llama3 rope_scaling fields, with the defaults of Meta's Llama 3.1 release."""
    rope = Llama3Rope(
        factor=scaling.get_float("factor", 8.0, gt=0.0),
        low_freq_factor=scaling.get_float("low_freq_factor", 1.0, gt=0.0),
        high_freq_factor=scaling.get_float("high_freq_factor", 4.0, gt=0.0),
        original_ctx=scaling.get_int(
            "original_max_position_embeddings",
            cfg.get_int("original_max_position_embeddings", 8192),
        ),
    )
    if rope.high_freq_factor <= rope.low_freq_factor:
        raise ConvertError("config.json: rope_scaling high_freq_factor must exceed low_freq_factor")
    return rope


def load_config(hf_dir: Path) -> Fields:
    """config.json of a checkpoint dir, as a JSON object (ConvertError if absent or not one)."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{hf_dir}: config.json not found (not a Hugging Face checkpoint dir?)")
    return Fields.load(path)
