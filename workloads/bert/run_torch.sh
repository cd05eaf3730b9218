#!/usr/bin/env bash
# The bert-torch workload's command (torch.workload.toml): prepare the data when this host lacks it
# (data.sh; nothing is prepared when the trainer's flags name a --data-dir), then train under torchrun on
# every local GPU (one process on a CPU host), across hosts when ernie says so.
#
#   bash run_torch.sh --text stdlib|synthetic|FILE|DIR --seq-len 128 --max-predictions 20 -- [train_torch.py flags]
set -euo pipefail
cd "$(dirname "$0")"
source ./data.sh
parse_data_options run_torch.sh "$@"
shift "$consumed"
data_flags "$@"

nproc=$("$python" -c 'import torch; print(torch.cuda.device_count() or 1)')
if [[ "${ERNIE_NUM_WORKERS:-1}" -gt 1 ]]; then
    launch=(--nnodes "$ERNIE_NUM_WORKERS" --node-rank "$ERNIE_WORKER_INDEX"
            --master-addr "$ERNIE_COORDINATOR_ADDRESS" --master-port "${ERNIE_MASTER_PORT:-29500}")
else
    launch=(--standalone)
fi
exec "$python" -m torch.distributed.run "${launch[@]}" --nproc-per-node "$nproc" \
    train_torch.py "${data_flags[@]}" "$@"
