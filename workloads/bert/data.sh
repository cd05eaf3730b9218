# shellcheck shell=bash
# Sourced by run_torch.sh and run_tf.sh: one rule for where prepared data lives and how it is made, so both
# workloads read the same bytes. The prep is deterministic, so every host prepares them on its own.
#
# --text stdlib uses corpus.py (real English text, no download); synthetic uses random tokens; anything
# else is a text file or a directory of *.txt (e.g. Wikipedia extracts copied from the stack's bucket).
# $ERNIE_BERT_DATA moves the data directory (default: data/ here); $PYTHON picks the interpreter.
# --threads N (a launch option, not data) gives every framework N compute threads, so runs that compare
# frameworks can run with the same number (0: each framework's default, one per core).

python=${PYTHON:-python}
text=stdlib seq_len=128 max_predictions=20 threads=0

# parse_data_options SCRIPT ARGS...: reads --text/--seq-len/--max-predictions/--threads up to `--`; sets
# $consumed, the number of arguments the caller shifts away before passing the rest to its trainer, and
# exports the thread settings (export_threads).
parse_data_options() {
    local script=$1
    shift
    consumed=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --text) text="$2"; shift 2; consumed=$((consumed + 2)) ;;
            --seq-len) seq_len="$2"; shift 2; consumed=$((consumed + 2)) ;;
            --max-predictions) max_predictions="$2"; shift 2; consumed=$((consumed + 2)) ;;
            --threads) threads="$2"; shift 2; consumed=$((consumed + 2)) ;;
            --) consumed=$((consumed + 1)); export_threads "$script"; return ;;
            *) echo "$script: unknown option $1 (expected --text, --seq-len, --max-predictions, --threads, then -- and trainer flags)" >&2
               exit 2 ;;
        esac
    done
    export_threads "$script"
}

# export_threads SCRIPT: with --threads N > 0, N intra-op threads for PyTorch (OpenMP, MKL) and TensorFlow,
# and one inter-op thread for TensorFlow (its graph runs one step at a time); JAX's XLA CPU backend has a
# switch, not a count: --threads 1 turns its Eigen thread pool off. torchrun keeps an OMP_NUM_THREADS it
# finds. The trainers record what they ran with in result.json ("settings").
export_threads() {
    if ! [[ "$threads" =~ ^[0-9]+$ ]]; then
        echo "$1: --threads must be a whole number (0: the frameworks' defaults), got '$threads'" >&2
        exit 2
    fi
    [[ "$threads" -gt 0 ]] || return 0
    export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
        TF_NUM_INTRAOP_THREADS="$threads" TF_NUM_INTEROP_THREADS=1
    if [[ "$threads" -eq 1 ]]; then
        export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    fi
}

# data_flags TRAINER_ARGS...: sets $data_flags, the --data-dir to put before the trainer's flags: none when
# they name their own --data-dir (data already on the host, such as MLPerf's shards: nothing is prepared),
# else ensure_data's.
# shellcheck disable=SC2034  # data_flags is the caller's to read
data_flags() {
    local arg
    for arg in "$@"; do
        if [[ "$arg" == --data-dir || "$arg" == --data-dir=* ]]; then
            data_flags=()
            return
        fi
    done
    ensure_data
    data_flags=(--data-dir "$data_dir")
}

# ensure_data: sets $data_dir, preparing it first when this host lacks it (meta.json is written last).
ensure_data() {
    local data_root=${ERNIE_BERT_DATA:-data}  # prepared data stays on the host between runs
    case "$text" in
        synthetic|stdlib) data_dir="$data_root/$text-s${seq_len}-p${max_predictions}" ;;
        *) data_dir="$data_root/$(basename "$text")-s${seq_len}-p${max_predictions}" ;;
    esac
    [[ -f "$data_dir/meta.json" ]] && return
    if [[ "$text" == synthetic ]]; then
        "$python" prep_data.py --synthetic --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
        return
    fi
    local source_text="$text"
    if [[ "$text" == stdlib ]]; then
        source_text="$data_root/stdlib.txt"
        "$python" corpus.py --out "$source_text"
    fi
    "$python" prep_data.py --input "$source_text" --out "$data_dir" --seq-len "$seq_len" --max-predictions "$max_predictions"
}
