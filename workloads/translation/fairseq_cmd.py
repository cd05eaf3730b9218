"""fairseq's command-line tools as this workload runs them: `python fairseq_cmd.py TOOL [flags]`.

    python fairseq_cmd.py preprocess ...       # = fairseq-preprocess ...
    python fairseq_cmd.py generate ...         # = fairseq-generate ...
    python fairseq_cmd.py train ... --target-bleu 25.0   # = fairseq-train ... plus MLPerf's stop rule
    python fairseq_cmd.py train ... --bleu-args '{"lowercase": true, "tokenize": "intl"}'

What differs from the console scripts, none of it touching fairseq's code:

* `--target-bleu` for train. fairseq 0.12 has no such flag (MLPerf's reference fork added one to its
  train.py). With `--eval-bleu --best-checkpoint-metric bleu` fairseq hands each epoch's validation
  BLEU (sacrebleu over detokenised beam output, summed over all workers) to
  `fairseq_cli.train.should_stop_early` on every rank, so wrapping that one function stops every
  rank at the same update, after that epoch's checkpoint is saved.
* `--bleu-args JSON` for train: sacrebleu.metrics.BLEU settings (the recipe's `bleu_args`) for fairseq's
  validation BLEU, which calls `sacrebleu.corpus_bleu(hyps, [refs])` with sacrebleu's defaults (cased,
  13a) per batch and sums the counts. MLPerf's stop rule is uncased with international tokenisation, so
  that call gets these settings in this process; the counting and summing stay fairseq's.
* `--tpu` runs on current torch_xla: xla_compat.py maps the torch_xla (and numpy) calls fairseq 0.12 makes
  that were removed since onto their replacements, in this process, before fairseq is imported, and has
  validation BLEU decode on the host CPU.
* TensorFlow is kept out. fairseq imports torch.utils.tensorboard at start-up (only for
  --tensorboard-logdir, unused here), which imports all of TensorFlow whenever it is installed
  beside torch: seconds of start-up for every process, for nothing.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys

TOOLS = ("preprocess", "train", "generate")


def _pop_flag(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    if name not in argv:
        return None, argv
    i = argv.index(name)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def _pop_target_bleu(argv: list[str]) -> tuple[float | None, list[str]]:
    value, rest = _pop_flag(argv, "--target-bleu")
    return (None if value is None else float(value)), rest


def score_validation_bleu_with(bleu_args: dict) -> None:
    """Make fairseq's validation BLEU (sacrebleu.corpus_bleu with sacrebleu's defaults) use `bleu_args`."""
    import sacrebleu

    corpus_bleu = sacrebleu.corpus_bleu

    def with_recipe_settings(hypotheses, references, **kwargs):  # noqa: ANN001, ANN202 - sacrebleu's signature
        return corpus_bleu(hypotheses, references, **{**bleu_args, **kwargs})

    sacrebleu.corpus_bleu = with_recipe_settings


def _stop_at_target(train, target: float) -> None:  # noqa: ANN001 - the fairseq_cli.train module
    patience_rule = train.should_stop_early
    logger = logging.getLogger("fairseq_cmd")

    def should_stop_early(cfg, valid_bleu):  # noqa: ANN001 - fairseq's signature
        if valid_bleu is not None and valid_bleu >= target:
            logger.info(f"target BLEU reached: {valid_bleu:.2f} >= {target:.2f}")
            return True
        return patience_rule(cfg, valid_bleu)

    # fairseq keeps its patience counter as attributes of whatever function this name holds.
    train.should_stop_early = should_stop_early


def keep_tensorflow_out() -> None:
    """Make `import tensorflow` fail in this process, so importing fairseq skips it (see above)."""
    sys.modules.setdefault("tensorflow", None)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        sys.exit(f"usage: python fairseq_cmd.py {{{','.join(TOOLS)}}} [fairseq flags]")
    tool = sys.argv.pop(1)
    target, sys.argv[1:] = _pop_target_bleu(sys.argv[1:])
    bleu_args, sys.argv[1:] = _pop_flag(sys.argv[1:], "--bleu-args")
    if (target is not None or bleu_args is not None) and tool != "train":
        sys.exit("--target-bleu and --bleu-args apply to train only")
    keep_tensorflow_out()
    if "--tpu" in sys.argv:
        import xla_compat  # fairseq 0.12's TPU calls on current torch_xla, before fairseq imports torch_xla

        logging.getLogger("fairseq_cmd").warning("torch_xla compatibility: %s", "; ".join(xla_compat.install()))
    if bleu_args:
        score_validation_bleu_with(json.loads(bleu_args))
    module = importlib.import_module(f"fairseq_cli.{tool}")
    if target is not None:
        _stop_at_target(module, target)
    module.cli_main()


if __name__ == "__main__":
    main()
