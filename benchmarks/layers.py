"""Slimmed Lambda layers against a plain `pip install --target` of the same requirements: size and cold start.

    .venv/bin/python benchmarks/layers.py [--runs 7]

Both are built for this machine's interpreter so both can run here. The slimmed side is the tabular set as
`lambda_layers/` builds it (deduplicated, slimmed, unchecked-hash bytecode), unpacked as Lambda unpacks it
into /opt. The baseline is `pip install --target` of the same pinned requirements with pip's defaults
(timestamp bytecode included) plus the same model package. Cold start = a fresh `python -I -S` whose
sys.path is only the standard library, the layers and the function's code, from before `import handler` to
the first prediction answered (the model loads lazily then), in CPU time of that process (this machine is
shared, and waiting for a core is not what a layer costs; wall time is printed beside it); the median of
several processes, the sides interleaved. A third side, the slimmed layers with their bytecode removed, shows what the bytecode
choice is worth.

Last line: size_ratio=<slim/plain unzipped> cold_import_ms=<slim median> cold_import_ratio=<slim/plain>;
the line before it: the machine (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine  # benchmarks/, the script's directory
from catalog.lambda_runtime import UNZIPPED_LIMIT
from ernie.serving.gateway import to_event
from lambda_layers import harness
from lambda_layers.build import build_function, run_build_script
from lambda_layers.spec import FunctionSpec, load_functions
from lambda_layers.target import Target

COLD_START = """
import json, time
event = json.loads(sys.stdin.read())
wall, cpu = time.perf_counter(), time.process_time()
import handler
response = handler.handler(event, None)
assert response["statusCode"] == 200, response
print((time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000)
"""
INSTANCE = {"age": 50, "sex": 2, "bmi": 25.3, "bp": 94.0, "s1": 180, "s2": 100.2, "s3": 48.0, "s4": 4.0, "s5": 4.6,
            "s6": 91}
EVENT = to_event("POST", "/predict", {"content-type": "application/json"},
                 json.dumps({"instances": [INSTANCE]}).encode(), "127.0.0.1")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11, help="fresh processes per side (median reported)")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3 for a median to mean anything")
    return args


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def plain_install(spec: FunctionSpec, target: Target, dest: Path) -> None:
    """pip's defaults into one --target, for the same platform, then the same model package."""
    requirements = [line for layer in spec.layers for line in layer.requirements]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
               "--target", str(dest), "--implementation", "cp", "--python-version", target.python_version,
               "--only-binary=:all:", *(f"--platform={tag}" for tag in target.platform_tags()), *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the plain pip install failed:\n{result.stderr[-2000:]}")
    shutil.rmtree(dest / "bin", ignore_errors=True)
    for layer in spec.layers:
        if layer.build is not None:
            run_build_script(layer, dest)


def cold_start_ms(python_dir: Path, function_dir: Path) -> tuple[float, float]:
    """(CPU, wall) ms of one cold start. -B: /opt is read-only on Lambda, so no run leaves bytecode for the next."""
    result = harness.run(COLD_START, harness.Unpacked(python_dir, function_dir), json.dumps(EVENT), flags=["-B"])
    result.check_returncode()
    cpu, wall = result.stdout.split()
    return float(cpu), float(wall)


def main() -> None:
    args = parse_args()
    target = Target.host()
    spec = load_functions()["tabular"]
    with tempfile.TemporaryDirectory(prefix="ernie-bench-layers-") as tmp:
        work = Path(tmp)
        built = build_function(spec, target, work / "zips", log=print)
        unpacked = harness.unpack(built, work / "slim")
        slim, function = unpacked.opt_python.parent, unpacked.function
        plain = work / "plain" / "python"
        plain_install(spec, target, plain)
        no_bytecode = work / "no-bytecode" / "python"
        shutil.copytree(slim / "python", no_bytecode, ignore=shutil.ignore_patterns("__pycache__"))

        slim_bytes, plain_bytes = built.unzipped_bytes - built.code.unzipped_bytes, tree_bytes(plain)
        print(f"unzipped: slimmed layers {slim_bytes / 2**20:.1f} MiB, plain pip --target {plain_bytes / 2**20:.1f} MiB "
              f"(Lambda's limit {UNZIPPED_LIMIT / 2**20:.0f} MiB with the function)")

        sides = {"slim": slim / "python", "plain": plain, "slim-no-bytecode": no_bytecode}
        for path in sides.values():  # one unmeasured start each: the files into the page cache, as on Lambda
            cold_start_ms(path, function)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, path in sides.items():
                times[name].append(cold_start_ms(path, function))
        medians = {name: statistics.median(cpu for cpu, _ in values) for name, values in times.items()}
        for name, values in times.items():
            print(f"cold start to first prediction, {name}: median {medians[name]:.0f} ms CPU, "
                  f"{statistics.median(wall for _, wall in values):.0f} ms wall "
                  f"(CPU runs: {', '.join(f'{cpu:.0f}' for cpu, _ in values)})")

    print(machine.describe("none (sizes, and the CPU time of imports and a first prediction)"))
    print(f"size_ratio={slim_bytes / plain_bytes:.3f} cold_import_ms={medians['slim']:.0f} "
          f"cold_import_ratio={medians['slim'] / medians['plain']:.3f}")


if __name__ == "__main__":
    main()
