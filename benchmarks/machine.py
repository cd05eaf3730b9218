"""What a benchmark ran on: one line, printed just before its ratio, naming the CPU, the features that move
CPU figures and the precision used, so that a figure is never read against the wrong class of machine.

    machine: cpu "Intel(R) Xeon(R) Processor", class avx512-bf16, 2 cores, load 1.9; avx2 avx512f avx512_bf16
    amx vnni (none missing); torch ISA AVX512; precision ernie bf16, baseline fp32

The features: avx2 and avx512f set the width of fp32 arithmetic (matmuls run about 1.7x faster with
AVX-512 here), avx512_bf16 and amx make bf16 native (torch computes bf16 only where one of them is
present), vnni makes int8 dot products native (without it onnxruntime's int8 kernels saturate).

`cap_isa("avx2")` re-runs the benchmark with torch, oneDNN and MKL held to AVX2, which makes this machine
stand in for one without AVX-512 and native bf16: bf16 is then reported unsupported, matmuls and
compiled kernels are AVX2 code. The line then says the CPU was capped.
"""

from __future__ import annotations

import getpass
import os
import platform
import sys
import tempfile
from pathlib import Path

# feature name -> the /proc/cpuinfo flags that provide it
FEATURES: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
    "vnni": ("avx512_vnni", "avx_vnni"),
}
# What a cap to AVX2 leaves usable: oneDNN's AVX2 level has neither VNNI nor bf16.
_UNDER_AVX2_CAP = {"avx2"}
CAP_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, flags


def features() -> dict[str, bool]:
    """Which of FEATURES this CPU has (not what a cap lets torch use)."""
    flags = _cpuinfo()[1]
    return {name: any(f in flags for f in provided) for name, provided in FEATURES.items()}


def capped() -> str | None:
    """The ISA this process is held to by cap_isa, if any."""
    return next((isa for isa, env in CAP_ENV.items() if all(os.environ.get(k) == v for k, v in env.items())), None)


def usable() -> dict[str, bool]:
    """The features the benchmark's libraries may use: the CPU's, less what a cap takes away."""
    have = features()
    return {name: ok and (capped() is None or name in _UNDER_AVX2_CAP) for name, ok in have.items()}


def cpu_class() -> str:
    """The README's benchmark classes: avx512-bf16 (native bf16), avx512, avx2, older."""
    f = usable()
    if f["avx512_bf16"] or f["amx"]:
        return "avx512-bf16"
    return "avx512" if f["avx512f"] else "avx2" if f["avx2"] else "older"


def cap_isa(isa: str | None) -> None:
    """Re-execute this benchmark with its libraries held to `isa` (None: no cap). Call before torch loads."""
    if isa is None or capped() == isa:
        return
    if "torch" in sys.modules:
        raise RuntimeError("cap_isa must run before torch is imported: the caps are read when it loads")
    # torch.compile's kernel cache is not keyed on the cap: kernels it built for AVX-512 would be loaded
    # into AVX2 code and crash it. A cache of the cap's own keeps them apart.
    cache = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}_{isa}"
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {**os.environ, **CAP_ENV[isa], "TORCHINDUCTOR_CACHE_DIR": str(cache)})


def summary() -> str:
    """The CPU, its class and which FEATURES it has and lacks: also what tests whose figures vary by CPU
    name in their messages (testing/cpu_line.py)."""
    model, _ = _cpuinfo()
    have, use = features(), usable()
    named = " ".join(n if use[n] else f"{n}(capped)" for n in FEATURES if have[n])
    missing = [n for n in FEATURES if not have[n]]
    return (f'cpu "{model}", class {cpu_class()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; '
            f"{named or 'no listed features'} ({'missing ' + ' '.join(missing) if missing else 'none missing'})")


def describe(precision: str) -> str:
    """The machine line. `precision`: what each side computed in, e.g. "ernie bf16, baseline fp32"."""
    # The ISA torch dispatches to, where this process computes with torch (a cap shows here too).
    isa = f"; torch ISA {sys.modules['torch'].backends.cpu.get_cpu_capability()}" if "torch" in sys.modules else ""
    cap = f"; capped to {capped().upper()} by {'/'.join(CAP_ENV[capped()])}" if capped() else ""
    return f"machine: {summary()}{isa}{cap}; precision {precision}"
