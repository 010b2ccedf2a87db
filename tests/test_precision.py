"""``core.precision``: bf16 on a CPU only where the CPU computes it natively, and every shipped CPU
config in fp32 on a CPU without it (the capability check forced both ways)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import precision
from core.precision import CPU_BF16_ENV, cpu_has_native_bf16, cpu_precision
from experiments import shipped_configs
from experiments.cli import _precision_choice

ROOT = Path(__file__).resolve().parents[1]


def test_bf16_stays_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "native")
    assert cpu_precision("bf16-mixed").precision == "bf16-mixed"
    assert not cpu_precision("bf16-mixed").changed


def test_bf16_becomes_fp32_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "none")
    for asked in ("bf16-mixed", "bf16-true", "bf16"):
        choice = cpu_precision(asked)
        assert choice.precision == "32-true" and choice.configured == asked
        assert choice.describe() == f"32-true (the config asks {asked}; this CPU has no native bf16: CONVLAB_CPU_BF16=none)"
    # Nothing else is touched.
    assert cpu_precision("32-true").precision == "32-true"
    assert cpu_precision("64-true").precision == "64-true"
    assert cpu_precision(None).precision == "32-true"


@pytest.mark.parametrize(("flags", "native"), [
    ("fpu avx2 avx512f avx512_bf16 avx512bw", True),   # AMD Zen 4, Intel Cooper Lake and later
    ("fpu avx2 amx_bf16 amx_tile", True),
    ("fpu avx2 avx512f avx512bw avx512_vnni", False),  # AVX-512 without BF16 (Intel Xeon, Skylake-SP)
    ("fpu sse4_2 avx avx2 fma", False),                # AVX2 only
])
def test_the_x86_flags_decide(tmp_path, monkeypatch, flags, native):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "_CPUINFO", cpuinfo)
    assert cpu_has_native_bf16()[0] is native


def test_arm_bf16_feature_counts(tmp_path, monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    monkeypatch.setattr(precision, "_CPUINFO", cpuinfo)
    assert cpu_has_native_bf16() == (True, "CPU flag bf16")


def test_pytorch_limited_below_avx512_counts_as_no_bf16(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512_bf16"})
    assert cpu_has_native_bf16() == (False, "ATEN_CPU_CAPABILITY=avx2")


def _cpu_configs() -> list[str]:
    paths = [path for group in shipped_configs().values() for path in group]
    return [p for p in paths if (yaml.safe_load((ROOT / p).read_text()) or {}).get("trainer", {}).get("accelerator", "auto") in ("auto", "cpu")]


@pytest.mark.parametrize("config", _cpu_configs())
def test_every_shipped_config_trains_in_fp32_on_a_cpu_without_bf16(config, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "none")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    trainer = (yaml.safe_load((ROOT / config).read_text()) or {}).get("trainer", {})
    choice = _precision_choice(trainer)
    assert choice is not None
    assert choice.precision in ("32-true", "16-mixed"), (config, choice)
