#!/usr/bin/env bash
# The bert-torch workload's command (torch.workload.toml): prepare the data when this host lacks it, then
# train under torchrun on every local GPU (one process on a CPU host), across hosts when ernie says so.
#
#   bash run_torch.sh --text stdlib|FILE|DIR --seq-len 128 --max-predictions 20 -- [train_torch.py flags]
#
# --text stdlib uses corpus.py (real English text, no download); synthetic uses random tokens; anything
# else is a text file or a directory of *.txt (e.g. Wikipedia extracts copied from the stack's bucket).
# The prep is deterministic, so every host prepares the same bytes on its own. $ERNIE_BERT_DATA moves
# the data directory (default: data/ here); $PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")"

text=stdlib seq_len=128 max_predictions=20
while [[ $# -gt 0 ]]; do
    case "$1" in
        --text) text="$2"; shift 2 ;;
        --seq-len) seq_len="$2"; shift 2 ;;
        --max-predictions) max_predictions="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "run_torch.sh: unknown option $1 (expected --text, --seq-len, --max-predictions, then -- and trainer flags)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python}
data_root=${ERNIE_BERT_DATA:-data}  # prepared data stays on the host between runs
case "$text" in
    synthetic|stdlib) data_dir="$data_root/$text-s${seq_len}-p${max_predictions}" ;;
    *) data_dir="$data_root/$(basename "$text")-s${seq_len}-p${max_predictions}" ;;
esac
if [[ ! -f "$data_dir/meta.json" ]]; then
    if [[ "$text" == synthetic ]]; then
        "$python" prep_data.py --synthetic --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
    else
        source_text="$text"
        if [[ "$text" == stdlib ]]; then
            source_text="$data_root/stdlib.txt"
            "$python" corpus.py --out "$source_text"
        fi
        "$python" prep_data.py --input "$source_text" --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
    fi
fi

nproc=$("$python" -c 'import torch; print(torch.cuda.device_count() or 1)')
if [[ "${ERNIE_NUM_WORKERS:-1}" -gt 1 ]]; then
    launch=(--nnodes "$ERNIE_NUM_WORKERS" --node-rank "$ERNIE_WORKER_INDEX"
            --master-addr "$ERNIE_COORDINATOR_ADDRESS" --master-port "${ERNIE_MASTER_PORT:-29500}")
else
    launch=(--standalone)
fi
exec "$python" -m torch.distributed.run "${launch[@]}" --nproc-per-node "$nproc" \
    train_torch.py --data-dir "$data_dir" "$@"
