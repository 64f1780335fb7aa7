"""Generator: the high-level Python API over one loaded model (text in, streamed text out)."""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import warnings
from collections import deque
from collections.abc import Generator as PyGenerator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._checks import (
    FLT_MAX,
    FLT_MIN,
    float32_arg,
    int_arg,
    optional_int_arg,
    path_arg,
    seed_arg,
    str_arg,
)
from .chat import ChatTemplate, model_chat_template
from .chat_tokens import chat_prompt_ids
from .errors import (
    CancelledError,
    ContextLengthWarning,
    ContextOverflowError,
    Error,
    InvalidArgumentError,
)
from .exclusive import OperationGate, TextStream
from .hub import hf_download
from .skip import SkipConfig
from .streaming import StopMatcher, Utf8Assembler, normalize_stop

# The keyword arguments chat() passes on to the sampling loop (those of generate()).
_SAMPLING_ARGS = frozenset(
    {
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "seed",
        "stop",
    }
)

# The repetition penalty looks at this many most recent tokens (prompt tokens included), as
# llama.cpp's default penalty_last_n.
REPEAT_LAST_N = 64

SkipArg = Union[SkipConfig, None, bool]


class Generator:
    """One GGUF model loaded on a backend, with a KV cache of ``n_ctx`` positions.

    ``model`` is the path of a GGUF file. ``backend`` is ``"auto"``, ``"cpu"`` or ``"cuda"``;
    ``n_threads=None`` uses the physical cores (at most 4x the logical CPUs may be asked for).
    ``seed`` seeds the sampler (an int in [0, 2**64), None: random); each
    ``generate(seed=...)`` can reseed it. An ``n_ctx`` beyond the context the model was trained
    on gives a ContextLengthWarning; one whose KV cache cannot be allocated, a ResourceError
    naming the bytes it needs. ``skip`` selects FFN skipping: a :class:`SkipConfig`,
    ``None`` (the skip profile stored in the file if there is one, else dense) or ``False``
    (dense even if the file has a profile).

    Threads: one operation at a time per Generator. An operation is a call that uses the
    engine: :meth:`generate` or :meth:`chat` (the call, and each ``next()`` on the iterator it
    returns), :meth:`logits`, setting :attr:`skip`, :meth:`close`. One started while another
    runs in another thread raises :class:`BusyError` at once (nothing waits). An iterator
    suspended between ``next()`` calls holds nothing: the next other operation supersedes it
    (it is closed, finish reason ``"cancelled"``, and its next ``next()`` raises Error). An
    iterator may be consumed from any thread. :meth:`cancel` works from any thread at any time;
    :meth:`close` from any thread cancels the running operation, waits for it, then frees the
    model. Tokenizing, chat templates and the read-only properties are safe concurrently.
    Use it as a context manager or call :meth:`close` to release the model promptly.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike[str]],
        backend: str = "auto",
        n_ctx: int = 4096,
        n_threads: Optional[int] = None,
        seed: Optional[int] = None,
        skip: SkipArg = None,
    ) -> None:
        self._engine: Optional[_core.Engine] = None  # first, so __del__ works if loading fails
        self._executor: Optional[ThreadPoolExecutor] = None
        self._cancel_event = threading.Event()
        self._gate = OperationGate()
        path = path_arg("model", model)
        backend = str_arg("backend", backend)
        n_ctx = int_arg("n_ctx", n_ctx, 1)
        n_threads = optional_int_arg("n_threads", n_threads, 1)
        seed = secrets.randbits(64) if seed is None else seed_arg(seed)
        self._engine = _core.Engine(path, backend=backend, n_ctx=n_ctx, n_threads=n_threads or 0)
        self.model_path = Path(path)
        n_train = self._engine.hparams["n_ctx_train"]
        if n_ctx > n_train:
            warnings.warn(
                f"n_ctx={n_ctx} is beyond the {n_train} positions the model was trained on: "
                "its output usually degrades past them",
                ContextLengthWarning,
                stacklevel=2,
            )
        # The engine's own tokenizer, or (older engines without one) a tokenizer-only load.
        tok = getattr(self._engine, "tokenizer", None)
        self._tokenizer = tok if tok is not None else _core.Tokenizer(path)
        self._eog = frozenset(self._tokenizer.eog_ids)
        self._sampler = _core.Sampler(seed)
        self._template: Optional[ChatTemplate] = None
        self._skip: Optional[SkipConfig] = None
        self._stats: dict[str, Any] = {}
        self.skip = skip  # type: ignore[assignment]  # the setter resolves None/False

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        filename: str,
        cache_dir: Union[str, os.PathLike[str], None] = None,
        *,
        revision: Optional[str] = None,
        local_files_only: Optional[bool] = None,
        **kwargs: Any,
    ) -> Generator:
        """Load ``filename`` from the Hugging Face Hub repository ``repo_id`` (downloaded into
        the Hub cache if needed; with ``HF_HUB_OFFLINE=1`` only the cache is used). Other
        keyword arguments go to the constructor."""
        path = hf_download(
            repo_id, filename, cache_dir, revision=revision, local_files_only=local_files_only
        )
        return cls(path, **kwargs)

    # ---- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop any unfinished generation and free the model. From any thread: an operation
        running in another thread is cancelled and waited for first. Idempotent; afterwards
        every other method (and an unfinished iterator) raises Error."""
        self._gate.close(self._free, self.cancel)

    def _free(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    @property
    def closed(self) -> bool:
        return self._engine is None

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _eng(self) -> _core.Engine:
        if self._engine is None:
            raise Error("Generator is closed")
        return self._engine

    # ---- properties -----------------------------------------------------------------------

    @property
    def engine(self) -> _core.Engine:
        """The underlying ``_core.Engine`` (for tools that need the low-level API)."""
        return self._eng()

    @property
    def backend(self) -> str:
        return self._eng().backend

    @property
    def n_ctx(self) -> int:
        return self._eng().n_ctx

    @property
    def n_vocab(self) -> int:
        return self._eng().n_vocab

    @property
    def metadata(self) -> dict[str, Any]:
        """The GGUF metadata key/value pairs."""
        return self._eng().metadata

    @property
    def tokenizer(self) -> _core.Tokenizer:
        self._eng()
        return self._tokenizer

    @property
    def skip(self) -> Optional[SkipConfig]:
        """The active FFN-skipping policy (None: dense). Assign a SkipConfig, None (the file's
        profile, else dense) or False (dense)."""
        self._eng()
        return self._skip

    @skip.setter
    def skip(self, skip: SkipArg) -> None:
        with self._operation() as engine:
            self._set_skip(engine, skip)

    def _set_skip(self, engine: _core.Engine, skip: SkipArg) -> None:
        cfg: Optional[SkipConfig]
        if skip is None:
            profile = engine.skip_profile
            cfg = SkipConfig.from_core(profile, engine.n_layer) if profile is not None else None
        elif skip is False:
            cfg = None
        elif isinstance(skip, SkipConfig):
            cfg = skip
            _check_compensation_shape(cfg, engine)
        else:
            raise InvalidArgumentError(
                f"skip must be a SkipConfig, None or False, got {type(skip).__name__}"
            )
        engine.set_skip(cfg.to_core() if cfg is not None else None)
        self._skip = cfg

    @property
    def stats(self) -> dict[str, Any]:
        """Numbers of the last generate()/chat() call: ``prompt_tokens``, ``generated_tokens``,
        ``prompt_seconds``, ``decode_seconds``, ``prompt_tok_s``, ``decode_tok_s``,
        ``finish_reason`` and, when skipping is on, ``skip`` (the engine's skip_stats())."""
        return dict(self._stats)

    @property
    def last_finish_reason(self) -> Optional[str]:
        """Why the last generation ended: ``"stop"`` (end-of-generation token or stop string),
        ``"length"`` (max_new_tokens or the context window is full) or ``"cancelled"``."""
        return self._stats.get("finish_reason")

    # ---- text <-> tokens ------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos``: add the special tokens the model file asks for
        (BOS). ``special``: recognise control-token strings such as ``<|im_start|>``. Text that
        is not valid Unicode (a lone surrogate) raises InvalidArgumentError."""
        self._eng()
        return self._tokenizer.encode(text, add_special=add_bos, parse_special=special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of ``ids`` (control tokens rendered only with ``special``)."""
        self._eng()
        return self._tokenizer.decode(ids, special=special)

    # ---- evaluation -----------------------------------------------------------------------

    def logits(
        self,
        tokens: Sequence[int],
        all_positions: bool = False,
        skip: Union[SkipConfig, None, bool] = None,
        prompt_len: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """Teacher-forced logits of ``tokens`` from an empty context: (n_vocab,) for the last
        position, or (len(tokens), n_vocab). With a SkipConfig the policy applies as in
        decoding: ``tokens[:prompt_len]`` are the prompt (dense), later ones count as
        generated tokens. ``skip=None`` is dense (not the file's profile)."""
        loaded = self._eng()
        if skip is not None and skip is not False and not isinstance(skip, SkipConfig):
            raise InvalidArgumentError("skip must be a SkipConfig, None or False")
        if isinstance(skip, SkipConfig):
            _check_compensation_shape(skip, loaded)
        prompt_len = optional_int_arg("prompt_len", prompt_len, 0)
        core_skip = skip.to_core() if isinstance(skip, SkipConfig) else None
        with self._operation(clear_cancel=True) as engine:
            return engine.logits(
                tokens, all_positions=all_positions, skip=core_skip, prompt_len=prompt_len
            )

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> Iterator[str]:
        """Stream the continuation of ``prompt`` as text pieces.

        The prompt is tokenized with the model's BOS and evaluated from an empty cache. Each
        step samples a token (``temperature=0``: greedy; filter order in cpp/src/sampler.h;
        the repetition penalty covers the last 64 tokens, prompt included) and stops on an
        end-of-generation token, after ``max_new_tokens`` tokens, or when a ``stop`` string
        appears (it is not emitted; text that may begin one is held back until decided).
        Pieces never split a UTF-8 character. ``seed`` (an int in [0, 2**64)) reseeds the
        sampler: the same seed gives the same text. Every argument is checked at this call.

        Raises ContextOverflowError (at this call) if the prompt alone does not fit in
        ``n_ctx``; if prompt + generated tokens fill the context, generation ends with
        ``finish_reason == "length"``. Closing the iterator, :meth:`cancel` or Ctrl-C
        (KeyboardInterrupt, re-raised) stop it within one token; prompt evaluation is
        interrupted between chunks. Starting another operation (e.g. another generation)
        closes an unfinished one; its iterator then raises Error (class docstring: threads).
        """
        self._eng()
        if not isinstance(prompt, str):
            raise InvalidArgumentError(f"prompt must be str, got {type(prompt).__name__}")
        ids = self._tokenizer.encode(prompt, add_special=True, parse_special=False)
        return self._start(
            ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=stop,
        )

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for ``messages`` from the file's ``tokenizer.chat_template``
        (chat.fallback_template when it has none), rendered in a sandbox (TemplateError on
        failure)."""
        return self._chat_template().render(messages, add_generation_prompt=add_generation_prompt)

    def _chat_template(self) -> ChatTemplate:
        self._eng()
        if self._template is None:
            source = self.metadata.get("tokenizer.chat_template")
            self._template = model_chat_template(source, self._tokenizer)
        return self._template

    def chat(
        self, messages: Sequence[Mapping[str, Any]], stream: bool = True, **sampling: Any
    ) -> Union[Iterator[str], str]:
        """Answer the conversation ``messages`` (``[{"role": ..., "content": ...}, ...]``).

        The prompt comes from :meth:`apply_chat_template`: the template's own control tokens
        are parsed, message contents are tokenized as plain text (a "<|im_start|>" typed by a
        user stays text, chat_tokens.py), and no BOS is added when the template starts with one.
        ``sampling`` takes the keyword arguments of :meth:`generate`. ``stream=True`` returns an
        iterator of text pieces, ``stream=False`` the whole answer.
        """
        unknown = set(sampling) - _SAMPLING_ARGS
        if unknown:
            raise InvalidArgumentError(
                f"chat(): unknown keyword argument(s) {sorted(unknown)}; it takes generate()'s "
                f"{sorted(_SAMPLING_ARGS)}"
            )
        ids = chat_prompt_ids(self._tokenizer, self._chat_template(), messages)
        pieces = self._start(ids, **sampling)
        return pieces if stream else "".join(pieces)

    def cancel(self) -> None:
        """Stop the running generation (thread-safe): its iterator ends within one token with
        ``finish_reason == "cancelled"``. Has no effect on generations started later."""
        self._cancel_event.set()
        engine = self._engine
        if engine is not None:
            engine.cancel()

    def _clear_cancel(self) -> None:
        # Called by the gate as an operation starts, under its lock, so that a cancel() from a
        # close() that has begun is never undone.
        self._cancel_event.clear()
        if self._engine is not None:
            self._engine.clear_cancel()

    @contextmanager
    def _operation(self, clear_cancel: bool = False) -> Iterator[_core.Engine]:
        """Hold the gate (one operation at a time) around a use of the engine."""
        token = object()
        try:
            self._gate.begin(token, clear_cancel=self._clear_cancel if clear_cancel else None)
            yield self._eng()
        finally:
            self._gate.end(token)

    def _start(
        self,
        ids: list[int],
        max_new_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> TextStream:
        engine = self._eng()
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InvalidArgumentError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
        if max_new_tokens < 0:
            raise InvalidArgumentError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        params = _sampling_params(temperature, top_k, top_p, min_p, repetition_penalty)
        seed = None if seed is None else seed_arg(seed)
        stops = normalize_stop(stop)
        if not ids:
            raise InvalidArgumentError("the prompt is empty (and the model adds no BOS token)")
        if len(ids) > engine.n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(ids)} tokens does not fit in the context (n_ctx={engine.n_ctx})"
            )
        # The cancel flags are cleared here, not when iteration starts, so that a cancel()
        # issued in between counts.
        token = object()
        try:
            self._gate.begin(token, clear_cancel=self._clear_cancel)
            steps = self._stream(ids, params, max_new_tokens, stops, seed)
            stream = TextStream(self._gate, steps, self.cancel)
            self._gate.install(token, stream)
        finally:
            self._gate.end(token)
        return stream

    def _stream(
        self,
        ids: list[int],
        params: dict[str, Any],
        max_new_tokens: int,
        stops: list[str],
        seed: Optional[int],
    ) -> PyGenerator[str, None, None]:
        engine = self._eng()
        tok = self._tokenizer
        sampler = self._sampler
        if seed is not None:
            sampler.reseed(seed)
        finish = "cancelled"
        decided = False  # finish is final (only the closing flush may still be pending)
        n_gen = 0
        t_prompt = t_decode = 0.0
        self._stats = {"prompt_tokens": len(ids), "generated_tokens": 0, "finish_reason": None}
        try:
            t0 = time.perf_counter()
            engine.reset()
            engine.reset_skip_stats()
            try:
                logits = self._eval_prompt(engine, ids)
            except CancelledError:
                decided = True
                return
            t_prompt = time.perf_counter() - t0
            use_recent = params["repetition_penalty"] != 1.0
            recent: deque[int] = deque(ids[-REPEAT_LAST_N:], maxlen=REPEAT_LAST_N)
            text = Utf8Assembler()
            matcher = StopMatcher(stops)
            n_ctx = engine.n_ctx
            finish = "length"
            while n_gen < max_new_tokens:
                if self._cancel_event.is_set():
                    finish = "cancelled"
                    break
                t0 = time.perf_counter()
                token = sampler.sample(logits, recent=list(recent) if use_recent else (), **params)
                t_decode += time.perf_counter() - t0
                if token in self._eog:
                    finish = "stop"
                    break
                n_gen += 1
                recent.append(token)
                piece, stopped = matcher.feed(text.feed(tok.token_to_bytes(token)))
                if piece:
                    yield piece
                if stopped:
                    finish = "stop"
                    break
                # The token just sampled needs a free cache slot to be evaluated.
                if n_gen >= max_new_tokens or len(ids) + n_gen > n_ctx:
                    break
                if self._cancel_event.is_set():
                    finish = "cancelled"
                    break
                t0 = time.perf_counter()
                try:
                    logits = engine.eval_generated(token, n_gen - 1)
                except CancelledError:
                    finish = "cancelled"
                    break
                finally:
                    t_decode += time.perf_counter() - t0
            decided = True
            if finish != "cancelled" and not matcher.stopped:
                tail, stopped = matcher.feed(text.flush())
                if stopped:
                    finish = "stop"
                tail += matcher.flush()
                if tail:
                    yield tail
        except (GeneratorExit, KeyboardInterrupt):
            if not decided:
                finish = "cancelled"
            raise
        finally:
            self._record_stats(ids, n_gen, t_prompt, t_decode, finish)

    def _eval_prompt(self, engine: _core.Engine, ids: list[int]) -> npt.NDArray[np.float32]:
        # Ctrl-C is delivered to the main thread only, and only between bytecodes: run the
        # (long, GIL-free) prompt evaluation on a worker so the main thread can react at once
        # and cancel it. Other threads call the engine directly.
        if threading.current_thread() is not threading.main_thread():
            return engine.eval(ids)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ffnskip-eval")
        future = None
        try:
            # Inside the try: a Ctrl-C that lands in submit(), once the worker may already be
            # evaluating, must still cancel it (it used to escape uncancelled).
            future = self._executor.submit(engine.eval, ids)
            # Short timed waits: Python runs signal handlers between them, so Ctrl-C is handled
            # within 50 ms without relying on the blocking wait being interruptible.
            while True:
                try:
                    return future.result(timeout=0.05)
                except FutureTimeout:
                    continue
        except KeyboardInterrupt:
            engine.cancel()
            try:
                if future is None:  # maybe queued: the single worker drains in order
                    self._executor.submit(lambda: None).result()
                else:
                    future.result()
            except BaseException:  # the engine's CancelledError, or a second Ctrl-C
                pass
            raise

    def _record_stats(
        self, ids: list[int], n_gen: int, t_prompt: float, t_decode: float, finish: str
    ) -> None:
        stats: dict[str, Any] = {
            "prompt_tokens": len(ids),
            "generated_tokens": n_gen,
            "prompt_seconds": t_prompt,
            "decode_seconds": t_decode,
            "prompt_tok_s": len(ids) / t_prompt if t_prompt > 0 else math.nan,
            "decode_tok_s": n_gen / t_decode if t_decode > 0 else math.nan,
            "finish_reason": finish,
        }
        engine = self._engine
        if engine is not None and self._skip is not None and self._skip.enabled:
            stats["skip"] = engine.skip_stats()
        self._stats = stats


def _sampling_params(
    temperature: float, top_k: int, top_p: float, min_p: float, repetition_penalty: float
) -> dict[str, Any]:
    """Check the sampling arguments up front (the C++ sampler checks them again), so that a
    bad value fails at the generate() call rather than at the first token. The sampler works
    in float32: values it would round to 0 or inf are refused here."""
    return {
        "temperature": float32_arg("temperature", temperature, FLT_MIN, FLT_MAX, zero="greedy"),
        "top_k": int_arg("top_k", top_k, 0),
        "top_p": float32_arg("top_p", top_p, FLT_MIN, 1),
        "min_p": float32_arg("min_p", min_p, 0, 1),
        "repetition_penalty": float32_arg(
            "repetition_penalty", repetition_penalty, FLT_MIN, FLT_MAX
        ),
    }


def _check_compensation_shape(cfg: SkipConfig, engine: _core.Engine) -> None:
    """The compensation is one row per layer: a right-sized array of another shape is refused
    rather than silently flattened."""
    if cfg.compensation is None:
        return
    want = (engine.n_layer, engine.hparams["n_embd"])
    if cfg.compensation.shape != want:
        raise InvalidArgumentError(
            f"SkipConfig.compensation has shape {cfg.compensation.shape}; this model needs "
            f"{want} (n_layer, n_embd)"
        )
