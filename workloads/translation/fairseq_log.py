"""Read what fairseq prints: train_inner / train / valid lines of fairseq-train (--log-format simple)
and the S-/T-/H-/D- lines of fairseq-generate.

    2026-11-28 07:54:27 | INFO | train_inner | epoch 002:      2 / 8 loss=6.286, ..., wps=15114.9, ups=8.07, wpb=1885.7, bsz=236.8, num_updates=10, ...
    2026-11-28 07:54:28 | INFO | train | epoch 002 | loss 5.895 | ... | wps 13807.7 | ... | num_updates 16 | ...
    2026-11-28 07:54:28 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 5.714 | ... | bleu 12.3 | num_updates 16 | ...
    H-189	-0.31	▁fil gor gor ...          (generate: id, score, hypothesis pieces)
    D-189	-0.31	filgorgor ...             (the same after --post-process: detokenised)

The run's launcher reads the train lines live (progress, MLPerf events) and the tests read recorded logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_PREFIX = r"^\S+ \S+ \| \w+ \| "
_INNER = re.compile(_PREFIX + r"train_inner \| epoch (\d+):\s+\d+ / \d+ (.*)$")
_SUMMARY = re.compile(_PREFIX + r"(train|valid) \| epoch (\d+) \| (.*)$")
_SPEED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in [\d.]+s \(([\d.]+) sentences/s")
_PARAMS = re.compile(r"num\. (?:shared )?model params: ([\d,]+)")
_GENERATED = re.compile(r"^([STHDP])-(\d+)\t(.*)$")
# fairseq 0.12's own progress messages (fairseq_cli/train.py, fairseq/trainer.py), in the order they come:
# "training on" once the model and trainer are built (before the training data is read), then per epoch
# "begin training epoch", "begin validation" and "end of epoch" (validation runs before the epoch ends).
_MILESTONES = (
    ("training_on", re.compile(_PREFIX + r"\S+ \| training on \d+ devices")),
    ("epoch_begin", re.compile(_PREFIX + r"\S+ \| begin training epoch (\d+)$")),
    ("validation_begin", re.compile(_PREFIX + r"\S+ \| begin validation on ")),
    ("epoch_end", re.compile(_PREFIX + r"\S+ \| end of epoch (\d+) ")),
)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class TrainInner:
    """One `train_inner` line: stats over the last --log-interval updates."""

    epoch: int
    stats: dict[str, float | str]

    @property
    def num_updates(self) -> int:
        return int(self.stats["num_updates"])


@dataclass(frozen=True)
class Summary:
    """One end-of-epoch `train` or `valid` line."""

    kind: str
    epoch: int
    stats: dict[str, float | str]

    @property
    def num_updates(self) -> int:
        return int(self.stats["num_updates"])


def parse_train_line(line: str) -> TrainInner | Summary | None:
    """The train_inner, train or valid record on this line of fairseq-train's output, else None."""
    line = line.rstrip("\n")
    if m := _INNER.match(line):
        pairs = (item.split("=", 1) for item in m.group(2).split(", "))
        return TrainInner(int(m.group(1)), {k.strip(): _number(v) for k, v in pairs})
    if m := _SUMMARY.match(line):
        stats: dict[str, float | str] = {}
        for item in m.group(3).split(" | "):
            key, _, value = item.partition(" ")
            if value and not item.startswith("valid on"):
                stats[key] = _number(value)
        return Summary(m.group(1), int(m.group(2)), stats)
    return None


@dataclass(frozen=True)
class Milestone:
    """One of fairseq-train's progress messages: where initialisation ends and epochs begin and end."""

    kind: str
    """training_on | epoch_begin | validation_begin | epoch_end"""
    epoch: int | None = None


def parse_milestone(line: str) -> Milestone | None:
    """The progress message on this line of fairseq-train's output, else None."""
    line = line.rstrip("\n")
    for kind, pattern in _MILESTONES:
        if m := pattern.match(line):
            return Milestone(kind, int(m.group(1)) if m.groups() else None)
    return None


def parse_params(line: str) -> int | None:
    """The model's parameter count from fairseq-train's `num. shared model params: N` line."""
    m = _PARAMS.search(line)
    return int(m.group(1).replace(",", "")) if m else None


@dataclass
class TrainLog:
    """Every record of one fairseq-train run, in order."""

    inner: list[TrainInner] = field(default_factory=list)
    train: list[Summary] = field(default_factory=list)
    valid: list[Summary] = field(default_factory=list)
    params: int | None = None

    def add(self, line: str) -> TrainInner | Summary | Milestone | None:
        record = parse_train_line(line)
        if isinstance(record, TrainInner):
            self.inner.append(record)
        elif isinstance(record, Summary):
            (self.train if record.kind == "train" else self.valid).append(record)
        elif milestone := parse_milestone(line):
            return milestone
        elif self.params is None:
            self.params = parse_params(line)
        return record


def parse_train_log(lines: Iterable[str]) -> TrainLog:
    log = TrainLog()
    for line in lines:
        log.add(line)
    return log


@dataclass(frozen=True)
class Throughput:
    """fairseq's words/s (target tokens/s) over the timed region of a run."""

    words_per_s: float
    sentences_per_s: float
    timed_updates: int
    step_times_ms: list[float]
    sentences_per_update: float
    """Sentences an update really held (fairseq's bsz: every device, every accumulated batch), timed updates."""


def throughput(inner: list[TrainInner]) -> Throughput | None:
    """Total words over total time of the timed region, not a mean of rates.

    Each train_inner line covers the updates since the one before. Its meters are not reset when an
    epoch ends, so the first line of an epoch also holds the previous epoch's validation and
    checkpointing; the very first line holds warm-up. The timed region is every other line; a run too
    short to have one falls back to all lines but the first, then to all. Time comes from wpb/wps
    (both printed to 0.1), not from ups, which fairseq rounds to two decimals.
    """
    intervals = []
    previous: TrainInner | None = None
    for record in inner:
        updates = record.num_updates - (previous.num_updates if previous else 0)
        if updates > 0 and float(record.stats["wps"]) > 0:
            clean = previous is not None and previous.epoch == record.epoch
            intervals.append((clean, updates, record.stats))
        previous = record
    timed = [i for i in intervals if i[0]] or intervals[1:] or intervals
    if not timed:
        return None
    words = sum(n * float(s["wpb"]) for _, n, s in timed)
    seconds = sum(n * float(s["wpb"]) / float(s["wps"]) for _, n, s in timed)
    sentences = sum(n * float(s["bsz"]) for _, n, s in timed)
    return Throughput(
        words_per_s=words / seconds, sentences_per_s=sentences / seconds,
        timed_updates=sum(n for _, n, _ in timed),
        step_times_ms=[1000.0 * float(s["wpb"]) / float(s["wps"]) for _, _, s in timed],
        sentences_per_update=sentences / sum(n for _, n, _ in timed),
    )


@dataclass(frozen=True)
class Generated:
    """fairseq-generate's output for one test sentence."""

    source: str
    reference: str
    hypothesis: str
    """Detokenised (the D- line when --post-process ran, else the H- line)."""
    score: float


def parse_generate(lines: Iterable[str]) -> list[Generated]:
    """Every translated sentence, in the test set's original order (fairseq prints them by length)."""
    rows: dict[int, dict[str, str]] = {}
    for line in lines:
        if m := _GENERATED.match(line.rstrip("\n")):
            rows.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3)
    out = []
    for _, row in sorted(rows.items()):
        if "H" not in row:
            continue
        score, _, hyp = row.get("D", row["H"]).partition("\t")
        out.append(Generated(row.get("S", ""), row.get("T", ""), hyp, float(score)))
    return out


@dataclass(frozen=True)
class GenerateSpeed:
    """fairseq-generate's closing `Translated N sentences (T tokens) in Xs (R sentences/s, ...)` line."""

    sentences: int
    tokens: int
    seconds: float
    """Generation time, model loading excluded: sentences / rate (the rate carries more digits than X)."""


def parse_generate_speed(lines: Iterable[str]) -> GenerateSpeed | None:
    for line in lines:
        if m := _SPEED.search(line):
            sentences, tokens = int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
            rate = float(m.group(3))
            return GenerateSpeed(sentences, tokens, sentences / rate if rate else float("inf"))
    return None
