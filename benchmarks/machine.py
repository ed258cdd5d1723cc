"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# the instruction-set flags that decide which dtype is fast (native bfloat16: avx512_bf16, amx_bf16)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
               "amx_int8")


def cpu_flags() -> list[str]:
    """The processor's flags among :data:`SPEED_FLAGS` (/proc/cpuinfo, read as ``backend.dtype: auto`` reads it)."""
    from ifplay.generation.backends import cpu_flags as all_flags

    present = all_flags()
    return [flag for flag in SPEED_FLAGS if flag in present]


def describe() -> dict:
    """CPUs, processor, its speed-relevant flags and Python version, as stored in every benchmark's
    JSON report."""
    return {"cpus": os.cpu_count(), "processor": cpu_model(), "cpu_flags": cpu_flags(),
            "python": platform.python_version()}
