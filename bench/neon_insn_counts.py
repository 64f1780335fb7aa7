#!/usr/bin/env python3
"""Executed-instruction counts of the NEON kernels against the scalar ones, under qemu-aarch64.

Speed cannot be measured under emulation; this shows instead that the NEON kernels are vectorised
and how much work they issue: each kernel call of bench/neon_insn_counts.cpp runs under
`qemu-aarch64 -d in_asm,exec,nochain`, and the instructions of every translated block executed
between the driver's two marker calls are counted and classified (vector: an operand is a vector
register `vN.<arrangement>` or a 128-bit `qN`; FP scalar: `hN`/`sN`/`dN`, which includes 64-bit
vector loads such as the f16 rows' `ldr dN`, so the vector share is a lower bound; the rest
integer, address and branch). The scalar level's code is partly auto-vectorised by GCC at -O3.
Needs the cross build of tools/test_arm64.sh (build/arm64).

    bash tools/test_arm64.sh && python bench/neon_insn_counts.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "arm64"
QEMU = ["qemu-aarch64", "-cpu", "cortex-a53", "-L", "/usr/aarch64-linux-gnu"]
# (kernel spec, unit of the per-unit count)
KERNELS = [
    *((f"matmul:{t}:1", "32-weight block") for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")),
    ("matmul:Q4_0:1:grouped", "32-weight block"),
    ("matmul:Q4_1:1:grouped", "32-weight block"),
    *((f"matmul:{t}:1", "32-weight block") for t in ("Q4_K", "Q5_K", "Q6_K", "F16", "F32")),
    *((f"matmul:{t}:16", "32 weights x token") for t in ("Q4_0", "Q4_K", "Q6_K", "F16")),
    ("matmul:Q4_1:16:grouped", "32 weights x token"),
    ("attention", "key x query head"),
    ("rmsnorm", "element"),
    ("rope", "element"),
    ("swiglu", "element"),
]
VECTOR = re.compile(r"\bv\d+\.\d*[bhsd]\b|\bq\d+\b")
FP_SCALAR = re.compile(r"\b[hsd]\d+\b")
INSN = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]{8}\s+(\S+)\s*(.*)$")
TRACE = re.compile(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/[0-9a-f]+\] ?(\S*)")


def build_driver() -> Path:
    lib = BUILD / "libffnskip_core.a"
    if not lib.exists():
        sys.exit(f"{lib} is missing: run tools/test_arm64.sh first")
    exe = BUILD / "neon_insn_counts"
    cmd = ["aarch64-linux-gnu-g++", "-std=gnu++17", "-O2", "-static", "-pthread"]
    cmd += ["-I", str(ROOT / "cpp/include"), "-I", str(ROOT / "cpp/src")]
    cmd += [str(ROOT / "bench/neon_insn_counts.cpp"), str(lib), "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def count(exe: Path, level: str, kernel: str) -> tuple[int, dict[str, int]]:
    """(work units, instructions executed between the markers by class)."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        run = [*QEMU, "-d", "in_asm,exec,nochain", "-D", log.name, str(exe), level, kernel]
        out = subprocess.run(run, check=True, capture_output=True, text=True).stdout
        units = int(out.split()[-1])
        blocks: dict[int, list[str]] = {}  # translated block start -> class of each instruction
        current: list[str] | None = None
        counts = {"vector": 0, "fp scalar": 0, "other": 0}
        inside = False
        with open(log.name, errors="replace") as f:
            for line in f:
                if line.startswith("IN:"):
                    current = None
                    continue
                m = INSN.match(line)
                if m:
                    if current is None:
                        current = blocks.setdefault(int(m.group(1), 16), [])
                        current.clear()
                    ops = m.group(3)
                    kind = (
                        "vector"
                        if VECTOR.search(ops)
                        else "fp scalar"
                        if FP_SCALAR.search(ops)
                        else "other"
                    )
                    current.append(kind)
                    continue
                m = TRACE.match(line)
                if not m:
                    continue
                current = None
                symbol = m.group(2)
                if symbol == "insn_mark_begin":
                    inside = True
                elif symbol == "insn_mark_end":
                    inside = False
                elif inside:
                    for kind in blocks[int(m.group(1), 16)]:
                        counts[kind] += 1
    return units, counts


def main() -> int:
    exe = build_driver()
    head = ("kernel", "unit", "scalar", "vector", "neon", "vector", "ratio")
    row = "{:24} {:20} {:>8} {:>7} {:>8} {:>7} {:>6}"
    print("instructions executed per unit of work (vector: share naming a vector register)")
    print(row.format(*head))
    for kernel, unit in KERNELS:
        cells: list[str] = []
        per: dict[str, float] = {}
        for level in ("scalar", "neon"):
            units, counts = count(exe, level, kernel)
            total = sum(counts.values())
            per[level] = total / units
            cells += [f"{per[level]:.1f}", f"{counts['vector'] / total:.0%}"]
        print(row.format(kernel, unit, *cells, f"{per['scalar'] / per['neon']:.1f}x"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
