"""What travels to the lent GPU machine (issue 19): benchmarks/gpu/h200-wheels.txt, the packages its image
(benchmarks/gpu/image-packages.txt) lacks. The machine reaches no registry and the loan is 15 minutes, so a
wheel at the wrong version, or one whose needs neither travel nor are in the image, must fail here."""

from __future__ import annotations

import importlib.metadata
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from testing.gpu_packages import CARRIED, IMAGE, REPO, listed

# That machine's Python (the image's python3 is 3.12.3 on x86-64 Linux), for the wheels' environment markers.
DEVICE_PYTHON = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
                 "implementation_name": "cpython", "platform_python_implementation": "CPython",
                 "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
# A need that is declared but not met there, each with the reason nothing breaks.
UNMET = {
    ("keras-hub", "tensorflow-text"): "keras-hub imports it behind try/except, for its TensorFlow tokenizers and "
                                      "preprocessing layers alone; bert-jax uses none of them (the dry run under "
                                      "testing/gpu_image/ proves it)",
}


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\\n]+)", (REPO / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def test_every_carried_wheel_is_pinned_at_the_lock_s_version() -> None:
    lock = locked()
    for name, requirement in listed(CARRIED).items():
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert len(pins) == 1, f"h200-wheels.txt: {requirement}: pin it (name==version), as the lock does"
        assert name in lock, f"h200-wheels.txt: {name} is not in requirements.lock: lock it first, then carry it"
        assert pins[0] == lock[name], \
            f"h200-wheels.txt: {requirement}, but requirements.lock has {name}=={lock[name]}: carry the locked version"


def test_what_each_carried_wheel_needs_travels_with_it_or_is_in_the_image() -> None:
    carried = listed(CARRIED)
    there = set(carried) | set(listed(IMAGE))
    unmet = []
    for name in carried:
        for text in importlib.metadata.requires(name) or []:  # installed here at the same (locked) version
            need = Requirement(text)
            if need.marker and not need.marker.evaluate(DEVICE_PYTHON):
                continue  # another Python, platform, or an extra
            if canonicalize_name(need.name) not in there and (name, canonicalize_name(need.name)) not in UNMET:
                unmet.append(f"{name} needs {need}")
    assert not unmet, "not in benchmarks/gpu/image-packages.txt: add each to h200-wheels.txt at the lock's " \
                      f"version: {unmet}"


def test_an_exception_for_an_unmet_need_names_a_need_that_is_declared() -> None:
    for carrier, need in UNMET:
        declared = {canonicalize_name(Requirement(t).name) for t in importlib.metadata.requires(carrier) or []}
        assert need in declared, f"{carrier} no longer needs {need}: drop it from UNMET"
