#!/usr/bin/env bash
# The Keras trainer's command, for bert-tf (tf.workload.toml) and bert-jax (jax.workload.toml, which passes
# --backend jax): prepare the data when this host lacks it (data.sh, shared with run_torch.sh, so every
# workload reads the same bytes; nothing is prepared when the trainer's flags name a --data-dir), then
# train. train_tf.py chooses its own placement (tf_strategy.py, jax_placement.py): no launcher is needed,
# the same command runs on every worker.
#
#   bash run_tf.sh --text stdlib|synthetic|FILE|DIR --seq-len 128 --max-predictions 20 -- [train_tf.py flags]
set -euo pipefail
cd "$(dirname "$0")"
source ./data.sh
parse_data_options run_tf.sh "$@"
shift "$consumed"
data_flags "$@"

# bert-jax on a TPU VM: ernie's setup installs one requirements file on every host (requirements-jax.txt);
# a host with TPU devices also needs libtpu, at the version jax[tpu] pins: installed once per venv.
if [[ " $* " == *" --backend jax "* ]] && { compgen -G '/dev/accel[0-9]*' || compgen -G '/dev/vfio/[0-9]*'; } >/dev/null \
        && ! "$python" -c 'import libtpu' 2>/dev/null; then
    "$python" -m pip install -q -r requirements-jax-tpu.txt
fi

exec "$python" train_tf.py "${data_flags[@]}" "$@"
