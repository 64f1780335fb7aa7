"""Where the C API lives in this install: the header ``ffnskip/ffnskip_c.h`` and ``libffnskip.so``.

The wheel carries both inside the package (``ffnskip_native/include`` and ``ffnskip_native/lib``),
so an app that embeds the engine through C compiles against them::

    cc app.c $(python -m ffnskip_native.capi --cflags --libs) -o app

``--libs`` adds an rpath to the library's folder, so ``app`` runs without LD_LIBRARY_PATH (an app
that ships the library elsewhere links with ``-L``/``-lffnskip`` itself and sets its own rpath).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import Error

HEADER = Path("include") / "ffnskip" / "ffnskip_c.h"
LIBRARY = Path("lib") / "libffnskip.so"


def _package_dirs() -> list[Path]:
    # The package's search path: the installed folder, and first any build tree named by
    # FFNSKIP_CORE_DIR (which mirrors the installed layout).
    from . import __path__ as package_path

    return [Path(p) for p in package_path]


def _find(relative: Path) -> Path:
    for folder in _package_dirs():
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in _package_dirs())
    raise Error(
        f"the C API file {relative} is not in this install of ffnskip_native (searched {searched});"
        " it is installed by `pip install .` and by the wheel"
    )


def header_path() -> Path:
    """Path of ``ffnskip_c.h``."""
    return _find(HEADER)


def include_dir() -> Path:
    """The folder to pass as ``-I`` (it holds ``ffnskip/ffnskip_c.h``)."""
    return header_path().parent.parent


def library_path() -> Path:
    """Path of ``libffnskip.so``."""
    return _find(LIBRARY)


def c_api_paths() -> tuple[Path, Path]:
    """``(include_dir, library_path)``; Error if this install lacks either."""
    return include_dir(), library_path()


def cflags() -> list[str]:
    return [f"-I{include_dir()}"]


def libs() -> list[str]:
    lib_dir = library_path().parent
    return [f"-L{lib_dir}", "-lffnskip", f"-Wl,-rpath,{lib_dir}"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ffnskip_native.capi",
        description="Print the compiler and linker flags of the ffnskip C API.",
    )
    parser.add_argument("--cflags", action="store_true", help="include flags")
    parser.add_argument("--libs", action="store_true", help="linker flags (with an rpath)")
    parser.add_argument("--header", action="store_true", help="path of ffnskip_c.h")
    parser.add_argument("--library", action="store_true", help="path of libffnskip.so")
    args = parser.parse_args(argv)
    try:
        out: list[str] = []
        if args.cflags:
            out += cflags()
        if args.libs:
            out += libs()
        if args.header:
            out.append(str(header_path()))
        if args.library:
            out.append(str(library_path()))
    except Error as exc:
        print(f"ffnskip_native.capi: {exc}", file=sys.stderr)
        return 1
    if not out:
        parser.print_help()
        return 2
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
