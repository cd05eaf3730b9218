#!/usr/bin/env bash
# The bert-tf workload's command (tf.workload.toml): prepare the data when this host lacks it (data.sh,
# shared with run_torch.sh, so both workloads read the same bytes), then train. train_tf.py chooses its own
# placement (tf_strategy.py): no launcher is needed, the same command runs on every worker.
#
#   bash run_tf.sh --text stdlib|synthetic|FILE|DIR --seq-len 128 --max-predictions 20 -- [train_tf.py flags]
set -euo pipefail
cd "$(dirname "$0")"
source ./data.sh
parse_data_options run_tf.sh "$@"
shift "$consumed"
ensure_data

exec "$python" train_tf.py --data-dir "$data_dir" "$@"
