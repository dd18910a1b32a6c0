"""What the machine can do: native bfloat16 arithmetic and a one-line description of the CPU.

bfloat16 autocast pays only where the hardware computes in bfloat16: a CUDA device that reports it,
or an x86 CPU with AVX512-BF16 or AMX-BF16 (Intel Xeon since Cooper Lake / Sapphire Rapids, AMD Zen 4).
On an AVX2-only CPU (AMD EPYC Zen 3, for one) PyTorch emulates bfloat16 and a convolution runs many
times slower than in float32, so :func:`monai_t1t2.inference.translation.check_precision` falls back to
float32 there with one warning line.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

#: The x86 CPU flags (``/proc/cpuinfo``) that mean bfloat16 is computed in hardware.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return name or platform.machine(), flags


def cpu_name() -> str:
    """The CPU's model name, for the sidecar and the benchmarks' tables (``AMD EPYC``, ``Intel(R) Xeon(R) ...``)."""
    return _cpuinfo()[0]


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16).

    Reads the CPU flags on Linux; elsewhere asks oneDNN, which PyTorch's CPU convolutions use.
    """
    name, flags = _cpuinfo()
    if flags:
        return any(flag in flags for flag in BF16_CPU_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a PyTorch without the query: assume the slow path
        return False


def native_bf16(device: torch.device | str) -> bool:
    """True where ``device`` computes bfloat16 in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def describe(device: torch.device | str = "cpu") -> str:
    """One line naming the hardware a figure was measured on: the GPU's name, or the CPU's with its cores."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu_name()}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, {bf16}"
