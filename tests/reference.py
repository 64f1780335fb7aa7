"""Independent numpy reference for the decoder: float64, written from the model math.

It shares nothing with the C++ engine (weights are dequantized by the `gguf` package), so the engine
is proven against it rather than against itself. Supported: GGUF `llama` (NORM rope on adjacent
pairs), `qwen2` (q/k/v bias, NEOX rope on halves), `qwen3` (NEOX rope, RMSNorm of each q and k
head before it) and `gemma3` (as qwen3, plus: embeddings times sqrt(n_embd), a GELU-tanh gated FFN,
RMSNorms on the attention and FFN outputs before their residual adds, and llama.cpp's layer rule:
every 6th layer global, the others attending to the last `attention.sliding_window` positions with
RoPE base 10000; norm weights are used as stored, llama.cpp's converter having added gemma's +1),
`phi3` (as llama with NEOX rope, q/k/v stacked in one attn_qkv matrix and gate/up in one ffn_up,
gate rows first), a sliding window on every layer for llama (mistral) and phi3 when
`attention.sliding_window` > 0, rope scaling (linear by `{arch}.rope.scaling.type`, llama3-style
by the per-pair divisors of `rope_freqs.weight`, phi3's long or short per-pair factors with
`rope.scaling.attn_factor` on the rotated dims, and yarn), plus the FFN skip policy of
shared/DESIGN.md ("FFN skipping — exact semantics") and the channel-sparse FFN ("Conditional FFN —
two kinds": thresholds t_in / t_gate / t_mid on |h|, |act(gate)| and |m|, NaN = off).

    model = load(path)
    logits = model.forward(tokens)                         # (n, n_vocab), dense, empty context
    logits, skipped, gates = model.forward_with_skip(tokens, prompt_len, SkipCfg(threshold=0.9))

Layout: GGUF stores a matrix with ne[0] = input dim (contiguous), so gguf's dequantize returns the
numpy shape (out, in) and y = W @ x. llama.cpp's converter already permuted the q/k rows of llama
files for NORM rope, so the stored weights are used as they are.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import gguf
import numpy as np
from gguf.quants import dequantize

ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "phi3")
ROPE_STYLE = {"llama": "norm", "qwen2": "neox", "qwen3": "neox", "gemma3": "neox", "phi3": "neox"}
GEMMA3_SWA_PERIOD = 6  # llama.cpp: layer l is global when l % 6 == 5, else sliding-window
GEMMA3_LOCAL_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class HParams:
    """Model shape read from GGUF metadata."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rope_base: float
    rope_scale: float  # angle multiplier: 1 / rope.scaling.factor for linear scaling, else 1
    eps: float
    n_ctx: int
    n_vocab: int
    act: str = "silu"  # the FFN gate's activation: "silu" or "gelu_tanh"
    embd_scale: float = 1.0
    attn_scale: float = 0.0  # q.k multiplier; 1/sqrt(head_dim) unless the architecture says else
    swa_window: int = 0  # keys a sliding-window layer sees (0: none)
    swa_period: int = 0  # gemma3: every swa_period-th layer is global; 0: all layers slide
    # Per rotated pair, the divisor of its angle (rope_freqs.weight, phi3's long or short
    # factors, yarn's interpolation), or None.
    rope_factors: np.ndarray | None = None
    rope_mscale: float = 1.0  # rotated dims are multiplied by it (yarn, rope.scaling.attn_factor)

    def sliding(self, layer: int) -> bool:
        """Whether `layer` attends only to the last swa_window positions."""
        if self.swa_window <= 0:
            return False
        return self.swa_period == 0 or layer % self.swa_period < self.swa_period - 1


@dataclass
class SkipCfg:
    """The skip policy's knobs, with the engine's defaults (ffnskip.h SkipConfig)."""

    enabled: bool = True
    warmup: int = 32
    cold_start: int = 2
    cold_end: int = 2
    threshold: Union[float, Sequence[float]] = 0.98
    span: int = 3
    t_in: Union[None, float, Sequence[float]] = None
    t_gate: Union[None, float, Sequence[float]] = None
    t_mid: Union[None, float, Sequence[float]] = None


@dataclass
class _KVCache:
    """Per layer: keys and values of the positions seen so far, (n_pos, n_head_kv, head_dim)."""

    k: list[np.ndarray]
    v: list[np.ndarray]

    @property
    def n_pos(self) -> int:
        return 0 if not self.k or self.k[0] is None else int(self.k[0].shape[0])


def limit_blas_threads(n: int | None = None) -> bool:
    """Set OpenBLAS's thread count (default $FFNSKIP_REF_BLAS_THREADS or 1); True if it worked.

    Why: the reference is dominated by matrix-vector products, and a multi-threaded OpenBLAS on a
    busy 2-core machine spins and yields, making a 1536x576 matvec ~20x slower than one thread.
    """
    n = n if n is not None else int(os.environ.get("FFNSKIP_REF_BLAS_THREADS", "1"))
    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for lib in glob.glob(os.path.join(libdir, "*openblas*")):
        dll = ctypes.CDLL(lib)
        for sym in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            fn = getattr(dll, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


def _field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata key {key!r} is missing")
        return default
    return f.contents()


def _rope_scale(reader: gguf.GGUFReader, arch: str) -> tuple[str, float]:
    """({arch}.rope.scaling.type, the angle multiplier of linear scaling); unknown types raise."""
    kind = str(_field(reader, f"{arch}.rope.scaling.type", "none"))
    if kind in ("none", "yarn") or (kind == "longrope" and arch == "phi3"):
        return kind, 1.0
    if kind == "linear":
        return kind, 1.0 / float(_field(reader, f"{arch}.rope.scaling.factor"))
    raise ValueError(f"reference does not implement rope scaling type {kind!r}")


def yarn_divisors(
    n_rot: int, base: float, factor: float, orig_ctx: int, beta_fast: float, beta_slow: float
) -> np.ndarray:
    """Per rotated pair, the divisor of its angle under YaRN (arXiv 2309.00071, section 3.2).

    Pairs that turn more than beta_fast times over the original context keep their frequency,
    those that turn fewer than beta_slow times are interpolated (angle / factor), and in between
    the two blend linearly in the pair index. The pair that turns r times over orig_ctx is
    n_rot * ln(orig_ctx / (2 pi r)) / (2 ln base); the blend's ends are rounded outwards.
    """

    def pair_turning(r: float) -> float:
        return n_rot * math.log(orig_ctx / (2 * math.pi * r)) / (2 * math.log(base))

    low = max(0.0, math.floor(pair_turning(beta_fast)))
    high = min(n_rot - 1.0, math.ceil(pair_turning(beta_slow)))
    i = np.arange(n_rot // 2, dtype=np.float64)
    keep = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
    return 1.0 / (keep + (1.0 - keep) / factor)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight, over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(
    x: np.ndarray,
    pos: np.ndarray,
    n_rot: int,
    base: float,
    style: str,
    scale: float = 1.0,
    freq_factors: np.ndarray | None = None,
    mscale: float = 1.0,
) -> np.ndarray:
    """Rotary embedding of x (n_pos, n_heads, head_dim) at positions pos (n_pos,).

    Pair i (i < n_rot/2) is rotated by angle pos * base^(-2i/n_rot) * scale / freq_factors[i]
    and multiplied by mscale. "norm" pairs the adjacent elements (2i, 2i+1); "neox" pairs
    (i, i + n_rot/2). Dimensions >= n_rot are left unchanged.
    """
    half = n_rot // 2
    inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot) * scale
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.cos(ang)[:, None, :] * mscale
    sin = np.sin(ang)[:, None, :] * mscale
    out = np.array(x, dtype=np.float64, copy=True)
    if style == "norm":
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    elif style == "neox":
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:
        raise ValueError(f"unknown rope style {style!r}")
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cos(a, b); 1 when both rows are zero, 0 when only one is (as the engine defines)."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    dot = np.sum(a * b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = dot / (na * nb)
    c = np.where((na == 0) & (nb == 0), 1.0, c)
    return np.where((na == 0) ^ (nb == 0), 0.0, c)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), written to avoid overflow in exp for large negative x."""
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {"silu": silu, "gelu_tanh": gelu_tanh}


class RefModel:
    """A GGUF model evaluated in float64 numpy.

    Dequantized tensors are cached (least recently used first out) up to `cache_bytes`, so small
    models stay fully resident and big ones still run with bounded memory.
    """

    def __init__(
        self, path: str | Path, cache_bytes: int = 3 << 30, n_ctx: int | None = None
    ) -> None:
        limit_blas_threads()
        self.path = Path(path)
        self.reader = gguf.GGUFReader(str(self.path))
        self._tensors = {t.name: t for t in self.reader.tensors}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self.hp = self._read_hparams(n_ctx)
        self.ffn_trace: list[np.ndarray] = []  # per eval() of generated rows (see eval)
        # Per eval() of generated rows: (n, n_layer, 3) entries dropped by t_in / t_gate / t_mid,
        # -1 where no channel-sparse FFN ran.
        self.channel_trace: list[np.ndarray] = []
        self._dropped = np.zeros((0, 3))
        # Every channel-sparse _ffn call: (layer, h~, g, m) before t_mid (tests check margins).
        self.channel_values: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.rope_style = ROPE_STYLE[self.hp.arch]
        self.output_name = (
            "output.weight" if "output.weight" in self._tensors else "token_embd.weight"
        )

    def _read_hparams(self, n_ctx: int | None) -> HParams:
        r = self.reader
        arch = str(_field(r, "general.architecture"))
        if arch not in ARCHS:
            raise ValueError(f"reference supports {ARCHS}, not architecture {arch!r}")
        n_embd = int(_field(r, f"{arch}.embedding_length"))
        n_head = int(_field(r, f"{arch}.attention.head_count"))
        head_dim = int(_field(r, f"{arch}.attention.key_length", n_embd // n_head))
        n_rot = int(_field(r, f"{arch}.rope.dimension_count", head_dim))
        rope_base = float(_field(r, f"{arch}.rope.freq_base", 10000.0))
        n_ctx_train = int(_field(r, f"{arch}.context_length"))
        n_ctx = n_ctx_train if n_ctx is None else n_ctx
        emb = self._tensors["token_embd.weight"]
        extra: dict[str, Any] = {}
        if arch == "gemma3":
            extra = dict(
                act="gelu_tanh",
                embd_scale=math.sqrt(n_embd),
                swa_window=int(_field(r, "gemma3.attention.sliding_window")),
                swa_period=GEMMA3_SWA_PERIOD,
            )
        elif arch in ("llama", "phi3"):  # mistral, phi3: every layer slides (0: no window)
            extra = dict(swa_window=int(_field(r, f"{arch}.attention.sliding_window", 0)))
        kind, rope_scale = _rope_scale(r, arch)
        factors = np.ones(n_rot // 2)
        if self.has("rope_freqs.weight"):  # llama3
            factors *= self.weight("rope_freqs.weight")
        orig_ctx = int(_field(r, f"{arch}.rope.scaling.original_context_length", n_ctx_train))
        if self.has("rope_factors_long.weight"):  # phi3 longrope: llama.cpp picks by context
            long = n_ctx > orig_ctx
            factors *= self.weight(f"rope_factors_{'long' if long else 'short'}.weight")
        mscale = float(_field(r, f"{arch}.rope.scaling.attn_factor", 1.0))
        if kind == "yarn":
            factor = float(_field(r, f"{arch}.rope.scaling.factor"))
            factors *= yarn_divisors(
                n_rot,
                rope_base,
                factor,
                orig_ctx,
                float(_field(r, f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                float(_field(r, f"{arch}.rope.scaling.yarn_beta_slow", 1.0)),
            )
            default = 1.0 + 0.1 * math.log(factor) if factor > 1 else 1.0
            mscale *= float(_field(r, f"{arch}.rope.scaling.yarn_attn_factor", default))
        n_layer = int(_field(r, f"{arch}.block_count"))
        # llama.cpp's rule: query_pre_attn_scalar is head_dim, except n_embd / n_head for the
        # 62-layer Gemma 3 27B.
        scale_dim = n_embd // n_head if arch == "gemma3" and n_layer == 62 else head_dim
        return HParams(
            arch=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_ff=int(_field(r, f"{arch}.feed_forward_length")),
            n_head=n_head,
            n_head_kv=int(_field(r, f"{arch}.attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_rot=n_rot,
            rope_base=rope_base,
            rope_scale=rope_scale,
            eps=float(_field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
            n_ctx=n_ctx,
            n_vocab=int(emb.shape[1]),
            attn_scale=1.0 / math.sqrt(scale_dim),
            rope_factors=None if np.all(factors == 1.0) else factors,
            rope_mscale=mscale,
            **extra,
        )

    # ---- weights -------------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether the file holds a tensor of this name."""
        return name in self._tensors

    def weight(self, name: str) -> np.ndarray:
        """A tensor dequantized to float64, numpy shape (ne[1], ne[0]) = (out, in) for matrices."""
        w = self._cache.get(name)
        if w is not None:
            self._cache.move_to_end(name)
            return w
        t = self._tensors[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        self._cache[name] = w
        total = sum(a.nbytes for a in self._cache.values())
        while total > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes
        return w

    def embed(self, tokens: Sequence[int]) -> np.ndarray:
        """Rows of token_embd for `tokens`, dequantizing only those rows unless already cached."""
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.hp.n_vocab):
            raise ValueError(f"token id out of range [0, {self.hp.n_vocab})")
        if "token_embd.weight" in self._cache:
            return self.weight("token_embd.weight")[ids] * self.hp.embd_scale
        t = self._tensors["token_embd.weight"]
        rows = dequantize(t.data[ids], t.tensor_type).astype(np.float64)
        return rows.reshape(len(ids), self.hp.n_embd) * self.hp.embd_scale

    # ---- forward -------------------------------------------------------------------------------

    def new_cache(self) -> _KVCache:
        """An empty KV cache for incremental evaluation."""
        return _KVCache(k=[None] * self.hp.n_layer, v=[None] * self.hp.n_layer)

    def _attention(self, layer: int, x: np.ndarray, pos0: int, cache: _KVCache) -> np.ndarray:
        """h = x + Wo · attn(rmsnorm(x) * attn_norm) for rows at positions pos0..; extends cache."""
        hp = self.hp
        p = f"blk.{layer}."
        n = x.shape[0]
        xn = rms_norm(x, self.weight(p + "attn_norm.weight"), hp.eps)
        wq, wk, wv = self._qkv(p)
        q, k, v = xn @ wq.T, xn @ wk.T, xn @ wv.T
        for name, arr in (("attn_q.bias", q), ("attn_k.bias", k), ("attn_v.bias", v)):
            if self.has(p + name):
                arr += self.weight(p + name)
        pos = np.arange(pos0, pos0 + n)
        q = q.reshape(n, hp.n_head, hp.head_dim)
        k = k.reshape(n, hp.n_head_kv, hp.head_dim)
        if self.has(p + "attn_q_norm.weight"):  # qwen3: per-head RMSNorm, one weight for all heads
            q = rms_norm(q, self.weight(p + "attn_q_norm.weight"), hp.eps)
            k = rms_norm(k, self.weight(p + "attn_k_norm.weight"), hp.eps)
        args = (
            pos, hp.n_rot, hp.rope_base, self.rope_style, hp.rope_scale, hp.rope_factors,
            hp.rope_mscale,
        )  # fmt: skip
        local = hp.sliding(layer)
        if local and hp.arch == "gemma3":  # its sliding-window layers: own base, no scaling
            args = (pos, hp.n_rot, GEMMA3_LOCAL_ROPE_BASE, self.rope_style)
        q = rope(q, *args)
        k = rope(k, *args)
        v = v.reshape(n, hp.n_head_kv, hp.head_dim)
        if cache.k[layer] is not None:
            k = np.concatenate([cache.k[layer], k])
            v = np.concatenate([cache.v[layer], v])
        cache.k[layer], cache.v[layer] = k, v
        # GQA: query head h reads kv head h // (n_head / n_head_kv).
        group = hp.n_head // hp.n_head_kv
        kh = np.repeat(k, group, axis=1)
        vh = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, kh) * hp.attn_scale
        n_keys = kh.shape[0]
        visible = np.arange(n_keys)[None, :] <= (pos[:, None])  # causal: key pos <= query pos
        if local:  # and key pos > query pos - window
            visible &= np.arange(n_keys)[None, :] > pos[:, None] - hp.swa_window
        scores = np.where(visible[None], scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hqk,khd->qhd", probs, vh).reshape(n, hp.n_head * hp.head_dim)
        return x + self._post_norm(
            p + "post_attention_norm.weight", out @ self.weight(p + "attn_output.weight").T
        )

    def _qkv(self, p: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W_q, W_k, W_v of a layer; phi3 stores them stacked in that order as attn_qkv."""
        if not self.has(p + "attn_qkv.weight"):
            return tuple(self.weight(p + f"attn_{w}.weight") for w in "qkv")  # type: ignore
        w = self.weight(p + "attn_qkv.weight")
        q_dim, kv_dim = self.hp.n_head * self.hp.head_dim, self.hp.n_head_kv * self.hp.head_dim
        assert w.shape[0] == q_dim + 2 * kv_dim, w.shape
        return w[:q_dim], w[q_dim : q_dim + kv_dim], w[q_dim + kv_dim :]

    def _gate_up(self, p: str) -> tuple[np.ndarray, np.ndarray]:
        """W_gate, W_up of a layer; phi3 stores both in ffn_up, the gate's rows first."""
        if self.has(p + "ffn_gate.weight"):
            return self.weight(p + "ffn_gate.weight"), self.weight(p + "ffn_up.weight")
        w = self.weight(p + "ffn_up.weight")
        assert w.shape[0] == 2 * self.hp.n_ff, w.shape
        return w[: self.hp.n_ff], w[self.hp.n_ff :]

    def _post_norm(self, name: str, out: np.ndarray) -> np.ndarray:
        """gemma3's RMSNorm of a block's output before the residual add; others: out itself."""
        return rms_norm(out, self.weight(name), self.hp.eps) if self.has(name) else out

    def _ffn(
        self, layer: int, h: np.ndarray, channel: tuple[float, float, float] | None = None
    ) -> np.ndarray:
        """h' = h + W_down · (act(W_gate · hn) * (W_up · hn)), hn = rmsnorm(h) * ffn_norm.

        act is silu, or gelu_tanh for gemma3, whose FFN output is also RMS-normalized
        (post_ffw_norm) before the add. With channel = (t_in, t_gate, t_mid), the channel-sparse
        FFN: entries of hn with |hn| < t_in, of g = act(W_gate · hn~) with |g| < t_gate and of
        m = g * (W_up · hn~) with |m| < t_mid are zeroed (a NaN threshold keeps everything).
        self._dropped gets (dropped_in, dropped_gate, dropped_mid) per row, dropped_mid counting
        only neurons that t_gate kept.
        """
        p = f"blk.{layer}."
        act = ACTIVATIONS[self.hp.act]
        post = p + "post_ffw_norm.weight"
        hn = rms_norm(h, self.weight(p + "ffn_norm.weight"), self.hp.eps)
        if channel is None:
            w_gate, w_up = self._gate_up(p)
            gate, up = hn @ w_gate.T, hn @ w_up.T
            return h + self._post_norm(
                post, (act(gate) * up) @ self.weight(p + "ffn_down.weight").T
            )
        t_in, t_gate, t_mid = channel

        def keep(v: np.ndarray, t: float) -> np.ndarray:
            return np.ones(v.shape, dtype=bool) if math.isnan(t) else np.abs(v) >= t

        k_in = keep(hn, t_in)
        hn = hn * k_in
        w_gate, w_up = self._gate_up(p)
        g = act(hn @ w_gate.T)
        k_gate = keep(g, t_gate)
        m = g * k_gate * (hn @ w_up.T)
        k_mid = keep(m, t_mid) & k_gate
        self.channel_values.append((layer, hn, g, m))
        self._dropped = np.stack(
            [(~k_in).sum(-1), (~k_gate).sum(-1), (k_gate & ~k_mid).sum(-1)], axis=-1
        )
        return h + self._post_norm(post, (m * k_mid) @ self.weight(p + "ffn_down.weight").T)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        xn = rms_norm(x, self.weight("output_norm.weight"), self.hp.eps)
        return xn @ self.weight(self.output_name).T

    def eval(
        self,
        tokens: Sequence[int],
        cache: _KVCache,
        policy: _Policy | None = None,
        gen_index0: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evaluate tokens at positions cache.n_pos.. and extend the cache.

        With a policy, row r is generated token number gen_index0 + r (gen_index0 None: prompt
        rows, always dense). Rows are independent given the layer's keys/values, so a batch with
        per-row skip state equals feeding the rows one at a time.
        Returns (logits (n, n_vocab), skipped (n, n_layer) bool, gates (n, n_layer) with NaN where
        no gate was computed).
        """
        hp = self.hp
        n = len(tokens)
        pos0 = cache.n_pos
        if pos0 + n > hp.n_ctx:
            raise ValueError(f"{pos0 + n} positions exceed the context length {hp.n_ctx}")
        skipped = np.zeros((n, hp.n_layer), dtype=bool)
        gates = np.full((n, hp.n_layer), np.nan)
        # FFN outputs (h' - h) of generated rows, NaN where skipped: what record_ffn records.
        ffn = np.full((n, hp.n_layer, hp.n_embd), np.nan)
        dropped = np.full((n, hp.n_layer, 3), -1, dtype=np.int64)
        states = [
            (policy or _Policy.dense(hp.n_layer)).begin_token(
                None if gen_index0 is None else gen_index0 + r
            )
            for r in range(n)
        ]
        x = self.embed(tokens)
        for layer in range(hp.n_layer):
            h = self._attention(layer, x, pos0, cache)
            run = np.array([not s.skip_ffn(layer) for s in states], dtype=bool)
            skipped[:, layer] = ~run
            x = h.copy()
            comp = policy.compensation if policy is not None else None
            if comp is not None and (~run).any():
                x[~run] += comp[layer]  # a skipped FFN adds its compensation row
            if run.any():
                h_run = h[run]
                h_new = np.empty_like(h_run)
                # Gated rows take the layer's channel-sparse FFN when it has a filter on.
                channel = policy.channel[layer] if policy is not None else None
                sparse = np.array([s.past_warmup for s in states], dtype=bool)[run]
                if channel is None or all(math.isnan(t) for t in channel):
                    sparse[:] = False
                if (~sparse).any():
                    h_new[~sparse] = self._ffn(layer, h_run[~sparse])
                if sparse.any():
                    h_new[sparse] = self._ffn(layer, h_run[sparse], channel)
                    dropped[np.flatnonzero(run)[sparse], layer] = self._dropped
                x[run] = h_new
                ffn[run, layer] = h_new - h_run
                g = cosine(h_run, h_new)
                for r, gv in zip(np.flatnonzero(run), g):
                    if gen_index0 is not None:
                        gates[r, layer] = gv
                    states[r].observe_gate(layer, float(gv))
        if gen_index0 is not None:
            self.ffn_trace.append(ffn)
            self.channel_trace.append(dropped)
        return self._logits(x), skipped, gates

    def forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Dense logits (len(tokens), n_vocab) for every position, from an empty context."""
        logits, _, _ = self.eval(tokens, self.new_cache())
        return logits

    def forward_with_skip(
        self,
        tokens: Sequence[int],
        prompt_len: int,
        cfg: Any,
        incremental: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits under the FFN skip policy, with the per-token decisions and gate values.

        tokens[:prompt_len] are the prompt (dense); tokens[i] for i >= prompt_len is generated
        token number i - prompt_len. `cfg` is a SkipCfg, the engine's SkipConfig, or anything with
        the same attributes (a dict works too). `incremental` feeds generated tokens one at a time
        through the KV cache, as decoding does; False evaluates them in one batch (same result).
        Returns (logits (n, n_vocab), skipped (n, n_layer) bool, gates (n, n_layer): cos(h, h')
        for every evaluated FFN of a generated token, NaN for skipped FFNs and prompt tokens).
        """
        if not 0 <= prompt_len <= len(tokens):
            raise ValueError("prompt_len must be in [0, len(tokens)]")
        policy = _Policy.from_config(cfg, self.hp.n_layer)
        cache = self.new_cache()
        self.ffn_trace = []
        self.channel_trace = []
        self.channel_values = []
        parts = []
        if prompt_len:
            parts.append(self.eval(tokens[:prompt_len], cache))
        gen = list(tokens[prompt_len:])
        if incremental:
            for g, tok in enumerate(gen):
                parts.append(self.eval([tok], cache, policy, gen_index0=g))
        elif gen:
            parts.append(self.eval(gen, cache, policy, gen_index0=0))
        logits, skipped, gates = (np.concatenate(a) for a in zip(*parts))
        return logits, skipped, gates

    def greedy(self, prompt: Sequence[int], n_new: int) -> list[int]:
        """Greedy continuation (dense), via the KV cache."""
        cache = self.new_cache()
        logits, _, _ = self.eval(prompt, cache)
        out: list[int] = []
        for _ in range(n_new):
            out.append(int(np.argmax(logits[-1])))
            logits, _, _ = self.eval([out[-1]], cache)
        return out


class _TokenState:
    """One token's walk through the layers (budget never carries across tokens)."""

    def __init__(self, policy: _Policy, past_warmup: bool) -> None:
        self.policy = policy
        self.past_warmup = past_warmup
        self.budget = 0

    def skip_ffn(self, layer: int) -> bool:
        if not self.past_warmup or not self.policy.hot[layer] or self.budget <= 0:
            return False
        self.budget -= 1
        return True

    def observe_gate(self, layer: int, g: float) -> None:
        # NaN thresholds and NaN gates compare False, so they never trigger.
        if self.past_warmup and self.policy.hot[layer] and g >= self.policy.threshold[layer]:
            self.budget = self.policy.grant[layer]


class _Policy:
    """DESIGN.md skip semantics as per-layer tables: hot flags, thresholds, budget grants."""

    def __init__(
        self,
        enabled: bool,
        warmup: int,
        hot: list[bool],
        threshold: list[float],
        grant: list[int],
        compensation: np.ndarray | None = None,
        channel: list[tuple[float, float, float]] | None = None,
    ) -> None:
        self.compensation = compensation  # (n_layer, n_embd) or None
        # Per layer (t_in, t_gate, t_mid), NaN = off.
        self.channel = channel or [(math.nan, math.nan, math.nan)] * len(hot)
        self.enabled = enabled
        self.warmup = warmup
        self.hot = hot
        self.threshold = threshold
        self.grant = grant

    @staticmethod
    def dense(n_layer: int) -> _Policy:
        return _Policy(False, 0, [False] * n_layer, [math.nan] * n_layer, [0] * n_layer)

    @staticmethod
    def from_config(cfg: Any, n_layer: int) -> _Policy:
        def get(name: str) -> Any:
            return cfg[name] if isinstance(cfg, dict) else getattr(cfg, name)

        thr = get("threshold")
        thr = [float(thr)] if np.isscalar(thr) else [float(t) for t in thr]
        if len(thr) == 1:
            thr = thr * n_layer
        if len(thr) != n_layer:
            raise ValueError(f"threshold needs 1 or {n_layer} values, got {len(thr)}")
        cold_start, cold_end, span = int(get("cold_start")), int(get("cold_end")), int(get("span"))
        if min(cold_start, cold_end, span, int(get("warmup"))) < 0:
            raise ValueError("warmup, cold_start, cold_end and span must be >= 0")
        hot = [cold_start <= i < n_layer - cold_end for i in range(n_layer)]
        grant = [span if span > 0 else sum(hot[i + 1 :]) for i in range(n_layer)]
        try:
            comp = get("compensation")
        except (KeyError, AttributeError):
            comp = None
        if comp is not None:
            comp = np.asarray(comp, dtype=np.float64)
            comp = comp.reshape(n_layer, -1) if comp.size else None

        def per_layer(name: str) -> list[float]:
            try:
                v = get(name)
            except (KeyError, AttributeError):
                v = None
            if v is None:
                return [math.nan] * n_layer
            v = [float(v)] if np.isscalar(v) else [float(t) for t in v]
            if not v:
                return [math.nan] * n_layer
            if len(v) == 1:
                v = v * n_layer
            if len(v) != n_layer:
                raise ValueError(f"{name} needs 0, 1 or {n_layer} values, got {len(v)}")
            return v

        channel = list(zip(per_layer("t_in"), per_layer("t_gate"), per_layer("t_mid")))
        return _Policy(bool(get("enabled")), int(get("warmup")), hot, thr, grant, comp, channel)

    def begin_token(self, gen_index: int | None) -> _TokenState:
        past_warmup = self.enabled and gen_index is not None and gen_index >= self.warmup
        return _TokenState(self, past_warmup)


def load(path: str | Path, cache_bytes: int = 3 << 30, n_ctx: int | None = None) -> RefModel:
    """Open a llama/qwen2/qwen3/gemma3/phi3 GGUF file for reference evaluation.

    n_ctx: the context the engine under test runs with (default: the file's context_length). It
    bounds the positions and picks phi3's long or short rope factors (llama.cpp's rule: long when
    n_ctx exceeds rope.scaling.original_context_length).
    """
    return RefModel(path, cache_bytes=cache_bytes, n_ctx=n_ctx)


def gguf_vocab(path: str | Path) -> list[str]:
    """The token strings of a GGUF file (tokenizer.ggml.tokens)."""
    return list(_field(gguf.GGUFReader(str(path)), "tokenizer.ggml.tokens"))


def hf_tokenizer(path: str | Path) -> Any:
    """A HF `tokenizers` byte-level BPE built from a gpt2-style GGUF vocab and merges.

    Uses the plain GPT-2 pre-tokenizer, so it matches model-specific pre-tokenizers on ordinary
    English text only; good enough to produce prompts for tests.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(str(path))
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok
