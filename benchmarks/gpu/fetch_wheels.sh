#!/usr/bin/env bash
# Downloads h200-wheels.txt's packages, built for the lent GPU machine (x86-64, CPython 3.12), into .whl/ at the
# repository root (git-ignored), where run_all.sh installs them from. Run it here, where PyPI answers; the GPU
# machine reaches no registry. Then: the device tool's run with carry [".whl"] and
# `bash benchmarks/gpu/run_all.sh`.
#
# A package PyPI has only as source (antlr4-python3-runtime 4.9.3) is built into a wheel here, and kept only if
# that wheel is pure Python (py3-none-any): a compiled one would be for this machine, not that one.
set -uo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
failed=()
while read -r requirement; do
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$requirement" 2>/dev/null && continue
    build=$(mktemp -d)
    if python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$build" "$requirement" \
            && compgen -G "$build/*-none-any.whl" > /dev/null; then
        mv "$build"/*-none-any.whl .whl/
    else
        failed+=("$requirement")
    fi
    rm -rf "$build"
done < <(grep -v '^\s*\(#\|$\)' benchmarks/gpu/h200-wheels.txt)
du -sh .whl
if ((${#failed[@]})); then
    echo "no wheel for Python 3.12 on x86-64: ${failed[*]}" >&2
    exit 1
fi
