#!/usr/bin/env bash
# Downloads h200-wheels.txt's packages, built for the lent GPU machine (x86-64, CPython 3.12), into .whl/ at the
# repository root (git-ignored), where run_all.sh installs them from. Run it here, where PyPI answers; the GPU
# machine reaches no registry. Then: the device tool's run with carry [".whl"] and
# `bash benchmarks/gpu/run_all.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
grep -v '^\s*\(#\|$\)' benchmarks/gpu/h200-wheels.txt | while read -r requirement; do
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$requirement"
done
du -sh .whl
