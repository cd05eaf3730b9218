"""The Lambda runtime layers are built for: pip picks wheels for it, bytecode is compiled by its Python."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from packaging.markers import default_environment

from catalog.lambda_runtime import ARCHES, RUNTIME_GLIBC, SERVING_PYTHONS, Arch
from lambda_layers.errors import LayerError

MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


@dataclass(frozen=True)
class Target:
    """The Lambda runtime the layers are built for."""

    python_version: str
    """"3.12": pip picks wheels for it, and only an interpreter of this version compiles bytecode."""
    arch: Arch
    """Lambda architecture; pip picks manylinux wheels for its machine."""
    glibc: tuple[int, int]
    """glibc of the runtime's OS: the newest manylinux tag that loads there."""

    @classmethod
    def lambda_runtime(cls, python_version: str = "3.12", arch: str = "x86_64") -> Target:
        if python_version not in RUNTIME_GLIBC:
            raise LayerError(f"python version {python_version!r} is not a Lambda runtime the serving layers support "
                             f"(their wheels need glibc 2.34, Amazon Linux 2023); use one of "
                             f"{', '.join(SERVING_PYTHONS)}")
        if arch not in ARCHES:
            raise LayerError(f"architecture {arch!r} is not a Lambda architecture; use one of {list(ARCHES)}")
        return cls(python_version, arch, RUNTIME_GLIBC[python_version])  # type: ignore[arg-type]

    @classmethod
    def host(cls) -> Target:
        """This machine's interpreter, OS and architecture: layers that can be unpacked and run here."""
        arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
        libc, libc_version = platform.libc_ver()
        if arch is None or libc != "glibc":
            raise LayerError(f"this machine ({platform.machine()}, {libc or 'no glibc'}) is not a Lambda-like Linux")
        major, minor = (int(p) for p in libc_version.split(".")[:2])
        return cls(f"{sys.version_info.major}.{sys.version_info.minor}", arch, (major, minor))  # type: ignore[arg-type]

    @property
    def runtime(self) -> str:
        return f"python{self.python_version}"

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.arch}-glibc{self.glibc[0]}.{self.glibc[1]}"

    def platform_tags(self) -> list[str]:
        """Every manylinux tag that loads on the target, newest first (pip takes them as given)."""
        machine = MACHINE[self.arch]
        major, minor = self.glibc
        return [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)] + [f"manylinux2014_{machine}"]

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values on the target (for checking Requires-Dist), not on this machine."""
        env = default_environment()
        env.update(
            python_version=self.python_version,
            python_full_version=f"{self.python_version}.0",
            platform_machine=MACHINE[self.arch],
            sys_platform="linux",
            platform_system="Linux",
            os_name="posix",
            implementation_name="cpython",
            platform_python_implementation="CPython",
        )
        return env
