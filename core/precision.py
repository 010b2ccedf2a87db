"""Which floating-point precision a run on a CPU can afford.

bf16 on a CPU is fast only where the CPU computes it natively (x86 AVX-512 BF16 or AMX, Arm's BF16
extension); elsewhere PyTorch emulates it and a mixed-bf16 training step is 14-23x slower than
fp32 (measured on an AVX2-only machine: 11.6 s against 0.50 s for the quick U-Net). A config written
on one machine must not turn into that on another, so on a CPU without native bf16 a bf16 precision
becomes fp32 (``32-true``), and the run says so once.

``CONVLAB_CPU_BF16`` overrides the check: ``native`` (trust the CPU) or ``none`` (treat it as
lacking bf16), for tests and for a user who knows better than ``/proc/cpuinfo``.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPU_BF16_ENV", "PrecisionChoice", "cpu_has_native_bf16", "cpu_precision"]

CPU_BF16_ENV = "CONVLAB_CPU_BF16"

# /proc/cpuinfo flags that mean bf16 arithmetic in hardware: x86 (AVX-512 BF16, AMX) and Arm (BF16).
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
# ATEN_CPU_CAPABILITY below avx512 makes PyTorch's kernels skip the AVX-512 (and so the BF16) paths.
_WITHOUT_AVX512 = {"default", "avx2", "avx", "sse", "sse2"}


_CPUINFO = Path("/proc/cpuinfo")


def _cpu_flags() -> set[str]:
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and how that was decided (one short phrase)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("native", "none"):
        return forced == "native", f"{CPU_BF16_ENV}={forced}"
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in _WITHOUT_AVX512:
        return False, f"ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}"
    found = sorted(_cpu_flags() & _BF16_FLAGS)
    if found:
        return True, f"CPU flag {found[0]}"
    return False, f"no bf16 flag in /proc/cpuinfo ({platform.machine()})"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses (``precision``), the one its config asked for (``configured``), and,
    when they differ, why (``reason``)."""

    precision: str
    configured: str
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.precision != self.configured

    def describe(self) -> str:
        if not self.changed:
            return self.precision
        return f"{self.precision} (the config asks {self.configured}; {self.reason})"


def cpu_precision(configured: str | int | None) -> PrecisionChoice:
    """The precision to train with on a CPU when the config asks ``configured`` (Lightning's names:
    ``32-true``, ``bf16-mixed``, ``bf16-true``, ...; ``None`` is Lightning's default, 32-true).
    A bf16 precision stays only where the CPU computes bf16 natively; anything else is unchanged."""
    asked = "32-true" if configured is None else str(configured)
    if not asked.startswith("bf16"):
        return PrecisionChoice(asked, asked)
    native, how = cpu_has_native_bf16()
    if native:
        return PrecisionChoice(asked, asked)
    return PrecisionChoice("32-true", asked, f"this CPU has no native bf16: {how}")
