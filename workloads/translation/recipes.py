"""The translation recipes: data, model and the published fairseq-train hyper-parameters, in one table.

`iwslt14-de-en` and `wmt-en-de` are fairseq's own recipes (examples/translation/README.md and
examples/scaling_nmt/README.md). `wmt-en-de-mlperf` is MLPerf Training v0.6's Transformer as its
submissions ran it (trained on WMT17 en-de, uncased BLEU >= 25.0 on newstest2014, the reference's
tokenisation); it alone is logged as MLPerf's `transformer`, every other recipe under a name of its own
(`Recipe.benchmark`), so a report never sets it beside MLPerf's rows. `synthetic` is a tiny model on a
corpus the workload makes itself (synthetic.py), so tests and the local demo run in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# MLPerf's name for its Transformer translation benchmark (mlperf_logging.mllog.constants.TRANSFORMER);
# written here so that recipes.py imports nothing of mlperf-logging.
MLPERF_TRANSFORMER = "transformer"

# Adam and the inverse-sqrt schedule with label smoothing: every published fairseq Transformer recipe.
_ADAM_INVERSE_SQRT = (
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr-scheduler", "inverse_sqrt", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
)


@dataclass(frozen=True)
class Recipe:
    """One translation task and how fairseq trains it."""

    name: str
    source_lang: str
    target_lang: str
    arch: str
    train_flags: tuple[str, ...]
    """fairseq-train flags besides data, arch and batch size: the published hyper-parameters."""
    max_tokens: int
    """Tokens per GPU per batch in the published recipe."""
    bpe_vocab_size: int
    """Joint sentencepiece BPE vocabulary over source and target."""
    target_bleu: float
    """Default stop criterion: sacrebleu BLEU on the detokenised validation output."""
    max_epoch: int
    beam: int
    lenpen: float = 1.0
    max_len: tuple[float, int] = (1.2, 10)
    """Hypotheses stop at a x source length + b tokens (fairseq's IWSLT evaluation setting): without
    it a barely trained model decodes 200 tokens of every sentence."""
    cpu_threads: int = 0
    """OpenMP threads per fairseq process on CPU hosts; 0: torch's default, one per core."""
    bleu_subset: str = "valid"
    """The split whose BLEU, computed after every epoch, decides when the target is reached."""
    bleu_args: dict = field(default_factory=dict)
    """sacrebleu.metrics.BLEU settings for every BLEU of the run (validation and test): {} is sacrebleu's
    default (cased, 13a), the WMT convention; MLPerf's is uncased with mteval-v14's international tokens."""
    accelerators: tuple[str, ...] = ("cpu", "gpu", "tpu")
    """Where the recipe may run: a Transformer big takes days on CPUs, so its recipes refuse them."""
    mlperf: bool = False
    """Run as MLPerf's Transformer benchmark: logged as `transformer`, MLPerf's keys and units."""
    max_train_pieces: int | None = None
    """Training pairs with a side longer than this many BPE pieces (end of sentence included) are dropped
    when the data is prepared (MLPerf's max_sequence_length, method `discard`); None keeps every pair."""

    @property
    def benchmark(self) -> str:
        """The name the run is logged under: MLPerf's benchmark only for the MLPerf recipe."""
        return MLPERF_TRANSFORMER if self.mlperf else f"translation-{self.name}"

    def flag(self, name: str) -> str | None:
        """The value train_flags give `name` (e.g. "--lr"), or None when they do not set it."""
        flags = list(self.train_flags)
        return flags[flags.index(name) + 1] if name in flags else None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "synthetic", "src", "tgt", "transformer",
            (
                "--encoder-layers", "2", "--decoder-layers", "2",
                "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
                "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256",
                "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
                "--share-all-embeddings", "--dropout", "0.1",
                # A higher peak and a short warm-up: the corpus is a few thousand pairs.
                "--lr", "3e-3", "--warmup-updates", "30", "--warmup-init-lr", "1e-07",
                *_ADAM_INVERSE_SQRT,
            ),
            # Measured here: validation BLEU ~24 after 8 epochs (208 updates) of 2,000 pairs.
            # One thread: a 64-wide model's matrices are too small to split across cores, and the
            # threads' spinning slows every other process on a shared machine (benchmarks/translation_cpu.py).
            max_tokens=512, bpe_vocab_size=400, target_bleu=30.0, max_epoch=20, beam=4, cpu_threads=1,
        ),
        Recipe(
            # fairseq examples/translation: 34.4 (tokenised) BLEU on one GPU; corpora.py lowercases it.
            "iwslt14-de-en", "de", "en", "transformer_iwslt_de_en",
            (
                "--share-decoder-input-output-embed", "--dropout", "0.3", "--weight-decay", "0.0001",
                "--lr", "5e-4", "--warmup-updates", "4000",
                *_ADAM_INVERSE_SQRT,
            ),
            # fairseq's README reports tokenised BLEU; sacrebleu on detokenised text reads lower, so the
            # default target sits below the published figure.
            max_tokens=4096, bpe_vocab_size=10000, target_bleu=32.0, max_epoch=60, beam=5,
        ),
        Recipe(
            # fairseq examples/scaling_nmt (Ott et al. 2018) and MLPerf Transformer: big model, fp16.
            "wmt-en-de", "en", "de", "transformer_vaswani_wmt_en_de_big",
            (
                "--share-all-embeddings", "--dropout", "0.3", "--weight-decay", "0.0",
                "--lr", "5e-4", "--warmup-updates", "4000", "--warmup-init-lr", "1e-07",
                *_ADAM_INVERSE_SQRT,
            ),
            # MLPerf's reference decodes with beam 4 and length penalty 0.6 and checks its target on
            # newstest2014 (the test split) after every epoch.
            max_tokens=3584, bpe_vocab_size=32000, target_bleu=25.0, max_epoch=30, beam=4, lenpen=0.6,
            bleu_subset="test",
        ),
        Recipe(
            # MLPerf Training v0.6 Transformer as NVIDIA's fairseq submission ran it on one DGX-1
            # (mlcommons/training_results_v0.6, NVIDIA/benchmarks/transformer/implementations/pytorch:
            # run_training.sh with config_DGX1.sh, whose EXTRA_PARAMS override the betas to (0.9, 0.98)):
            # transformer_wmt_en_de_big_t2t (pre-norm), 10,240 tokens per GPU on 8 GPUs, fp16.
            "wmt-en-de-mlperf", "en", "de", "transformer_wmt_en_de_big_t2t",
            (
                "--share-all-embeddings", "--dropout", "0.1", "--weight-decay", "0.0",
                "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-09", "--clip-norm", "0.0",
                "--lr-scheduler", "inverse_sqrt", "--lr", "1.976e-3", "--warmup-updates", "1000",
                "--warmup-init-lr", "0.0",
                "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                # The model decodes newstest2014's long sentences too; training pairs over 64 pieces are
                # dropped when the data is prepared (max_train_pieces), as the submission's 64 positions did.
                "--max-source-positions", "256", "--max-target-positions", "256",
            ),
            # The submission decodes with beam 4, length penalty 0.6, max length 1 x source + 50, and scores
            # newstest2014 after every epoch, uncased, tokenised as mteval-v14 --international-tokenization.
            max_tokens=10240, bpe_vocab_size=32768, target_bleu=25.0, max_epoch=30, beam=4, lenpen=0.6,
            max_len=(1.0, 50), bleu_subset="test", bleu_args={"lowercase": True, "tokenize": "intl"},
            mlperf=True, max_train_pieces=64, accelerators=("gpu", "tpu"),
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a ValueError that lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None
