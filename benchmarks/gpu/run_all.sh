#!/usr/bin/env bash
# Every GPU figure ernie quotes, measured in one pass on one GPU (issue 19), in well under 8 minutes on an H200:
#
#   1. the machine: GPU, driver, CUDA, NCCL, torch and library versions      -> versions.json
#   2. BERT-large, seq 128, bf16, largest micro-batch, compiled (bert_large.py) -> bert_large.json, last line mfu=
#   3. bert-torch, bert-tf and bert-jax at the base preset through `ernie run --local`, so result.json and the
#      report carry real GPU samples/s and MFU                                 -> results.tar.gz, report.tar.gz
#   4. DDP over NCCL for a few steps (ddp_step.py: two ranks on the one GPU where NCCL allows it, else one)
#   5. fairseq's Transformer on the synthetic recipe, words/s
#
# Each part runs under its own deadline, cut to what is left of the run's budget (RUN_ALL_BUDGET_S: 480 s on the
# GPU), and is recorded whether it passes or fails; the rest go on. Everything
# lands under $OUT (default: results/gpu-DATE) as at most eight files, flat (the device tool's limits):
# summary.txt (one line per part, then its figures; bert-tf says "skipped" where TensorFlow is missing),
# versions.json, bert_large.json, ddp.json, logs.tar.gz, results.tar.gz, report.tar.gz. The exit code is the number
# of parts that failed.
#
#   bash benchmarks/gpu/run_all.sh            # on the GPU machine
#   bash benchmarks/gpu/run_all.sh --dry-run  # the same script on the CPU at tiny sizes (CI: tests/integration/test_gpu_script.py)
#
# On the lent H200 nothing can be downloaded: the packages its image lacks travel as wheels in .whl/
# (benchmarks/gpu/README.md says how) and are installed to /tmp/site here before anything runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1
[[ $# -le 1 && ( $# -eq 0 || $dry_run -eq 1 ) ]] || { echo "usage: $0 [--dry-run]" >&2; exit 2; }

OUT=${OUT:-$repo/results/gpu-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/logs"
summary=$OUT/summary.txt
: > "$summary"

# The carried wheels are for that machine's Python (3.12): the dry run uses this machine's environment as it is.
if ((!dry_run)) && compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed" >&2; exit 100; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python=${PYTHON:-$(command -v python3)}
[[ -x "$repo/.venv/bin/python" && -z "${PYTHON:-}" ]] && python=$repo/.venv/bin/python
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
ernie=("$python" -m ernie)
results=$work/results

if ((dry_run)); then
    bert_preset=tiny bert_steps=6 bert_batch=8 ddp_args=(--dry-run --steps 2 --micro-batch 4) ddp_procs=2
    # Eager in the dry run: torch.compile of BERT on a CPU takes minutes of CI for nothing the GPU run needs.
    large_args=(--dry-run --no-compile)
    translation_sets=(--set max_update=6 --set synthetic_pairs=200 --set max_tokens=512 --set log_interval=2)
else
    bert_preset=base bert_steps=120 bert_batch=256 ddp_args=(--steps 10 --micro-batch 64) ddp_procs=2
    large_args=() translation_sets=(--set max_update=300 --set synthetic_pairs=20000 --set log_interval=50)
fi

# The whole run's seconds, from the script's start: each part's deadline is cut to what is left, so the figures
# and logs are packed before the device call's own limit (its timeout_s, 540 in README.md) kills everything.
budget=${RUN_ALL_BUDGET_S:-$( ((dry_run)) && echo 1700 || echo 480)}
failed=0
# part NAME SECONDS CMD...: run CMD under a deadline, its output in logs/NAME.log; one line in the summary.
part() {
    local name=$1 limit=$2; shift 2
    local log=$work/logs/$name.log start=$SECONDS code left=$((budget - SECONDS))
    if ((left < 30)); then
        echo "$name: FAILED (not started: ${left} s of the run's ${budget} s were left)" >> "$summary"
        failed=$((failed + 1))
        return 124
    fi
    ((limit > left)) && limit=$left
    echo "== $name: $*" | tee -a "$work/logs/all.log"
    timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$log" 2>&1
    code=$?
    tail -n 3 "$log"
    if ((code == 0)); then
        echo "$name: ok in $((SECONDS - start)) s" >> "$summary"
    else
        echo "$name: FAILED ($( ((code == 124)) && echo "over its ${limit} s" || echo "exit $code")) in $((SECONDS - start)) s" \
            >> "$summary"
        failed=$((failed + 1))
    fi
    return $code
}

part versions 60 "$python" - "$OUT/versions.json" <<'EOF'
import importlib.metadata as md, json, platform, shutil, subprocess, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "gpu": None, "driver": None, "nccl": None}
for name in ("transformers", "jax", "jaxlib", "keras", "keras-hub", "tensorflow", "fairseq", "ve-fairseq",
             "mlperf-logging", "sacrebleu", "triton"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                nccl=".".join(map(str, torch.cuda.nccl.version())))
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["driver"] = smi.stdout.strip() or None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
EOF

part bert_large 240 "$python" benchmarks/gpu/bert_large.py "${large_args[@]}" --out "$OUT/bert_large.json"

for workload in bert-torch bert-tf bert-jax; do
    # The lent machine's image has no TensorFlow, and its wheel is too large to carry: said so, not failed.
    # Looked up, not imported: importing TensorFlow takes seconds, and its part imports it again.
    if [[ $workload == bert-tf ]] \
            && ! "$python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)' 2>/dev/null; then
        echo "bert-tf: skipped (no tensorflow for $python; its wheel is too large to carry)" >> "$summary"
        continue
    fi
    part "$workload" 300 "${ernie[@]}" run --local "$workload" --results "$results" \
        --set preset=$bert_preset --set max_steps=$bert_steps --set global_batch=$bert_batch \
        --set eval_every=$bert_steps --set checkpoint_every=$bert_steps --set log_every=$((bert_steps / 3))
done

# NCCL refuses two ranks on one device in the releases seen so far: then a world of one, said so in ddp.json.
# One host: gloo's connections over loopback (by default it takes the address the host name resolves to, which a
# machine with extra interfaces may not route to itself: the dry run then hung at the first collective).
((dry_run)) && export GLOO_SOCKET_IFNAME=lo
if ! part ddp 180 "$python" benchmarks/gpu/ddp_step.py --procs $ddp_procs "${ddp_args[@]}"; then
    if ((!dry_run)) && grep -q "Duplicate GPU" "$work/logs/ddp.log"; then
        failed=$((failed - 1))
        echo "ddp: NCCL refused two ranks on one GPU (Duplicate GPU detected): a world of one instead" >> "$summary"
        part ddp1 180 "$python" benchmarks/gpu/ddp_step.py --procs 1 "${ddp_args[@]}"
        cp "$work/logs/ddp1.log" "$work/logs/ddp.log.world1"
    fi
fi
grep -h '^{"backend"' "$work/logs/ddp.log" "$work/logs/ddp.log.world1" 2>/dev/null | tail -n 1 > "$OUT/ddp.json"

part translation 300 "${ernie[@]}" run --local translation --results "$results" --set recipe=synthetic \
    "${translation_sets[@]}"

part report 120 "${ernie[@]}" report --all --results "$results" --out "$work/report"

# The figures, read back from what the parts wrote.
"$python" - "$OUT" "$results" >> "$summary" <<'EOF'
import json, sys
from pathlib import Path
out, results = Path(sys.argv[1]), Path(sys.argv[2])
large = out / "bert_large.json"
if large.is_file():
    f = json.loads(large.read_text())
    print(f"bert_large: {f['samples_per_s']} samples/s, micro-batch {f['micro_batch']}, {f['precision']}, "
          f"compiled {f['compiled']}, mfu={f['mfu'] if f['mfu'] is None else round(f['mfu'], 3)}")
ddp = out / "ddp.json"
if ddp.is_file() and ddp.read_text().strip():
    d = json.loads(ddp.read_text())
    print(f"ddp: {d['backend']} world {d['world']}, weights identical {d['weights_identical']}, "
          f"all-reduce {d['all_reduce_sum_ok']}, {d['steps']} steps in {d['seconds']} s")
for result in sorted(results.glob("*/*/result.json")) if results.is_dir() else []:
    r = json.loads(result.read_text())
    figures = {k: r.get(k) for k in ("samples_per_s", "words_per_s", "mfu", "device_name", "precision") if r.get(k) is not None}
    print(f"{r.get('workload', result.parent.parent.name)}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
EOF

tar -C "$work" -czf "$OUT/logs.tar.gz" logs
[[ -d "$results" ]] && tar -C "$work" -czf "$OUT/results.tar.gz" results
[[ -d "$work/report" ]] && tar -C "$work" -czf "$OUT/report.tar.gz" report
echo "---"
cat "$summary"
echo "parts failed: $failed (everything is in $OUT)"
exit $failed
