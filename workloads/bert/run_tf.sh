#!/usr/bin/env bash
# The bert-tf workload's command (tf.workload.toml): prepare the data when this host lacks it, then train.
#
#   bash run_tf.sh --text stdlib|synthetic|FILE|DIR --seq-len 128 --max-predictions 20 -- [train_tf.py flags]
#
# The data directories are run_torch.sh's (same names, same deterministic prep), so both workloads read
# the same bytes. train_tf.py chooses its own placement (tf_strategy.py): no launcher is needed, the same
# command runs on every worker.
set -euo pipefail
cd "$(dirname "$0")"

text=stdlib seq_len=128 max_predictions=20
while [[ $# -gt 0 ]]; do
    case "$1" in
        --text) text="$2"; shift 2 ;;
        --seq-len) seq_len="$2"; shift 2 ;;
        --max-predictions) max_predictions="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "run_tf.sh: unknown option $1 (expected --text, --seq-len, --max-predictions, then -- and trainer flags)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python}
case "$text" in
    synthetic) data_dir="data/synthetic-s${seq_len}-p${max_predictions}" ;;
    stdlib) data_dir="data/stdlib-s${seq_len}-p${max_predictions}" ;;
    *) data_dir="data/$(basename "$text")-s${seq_len}-p${max_predictions}" ;;
esac
if [[ ! -f "$data_dir/meta.json" ]]; then
    if [[ "$text" == synthetic ]]; then
        "$python" prep_data.py --synthetic --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
    else
        source_text="$text"
        if [[ "$text" == stdlib ]]; then
            source_text=data/stdlib.txt
            "$python" corpus.py --out "$source_text"
        fi
        "$python" prep_data.py --input "$source_text" --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
    fi
fi

exec "$python" train_tf.py --data-dir "$data_dir" "$@"
