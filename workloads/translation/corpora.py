"""Download and extract the real corpora into plain parallel text: raw/{train,valid,test}.{lang}.

IWSLT'14 de-en follows fairseq's examples/translation/prepare-iwslt14.sh (TED talks; every 23rd
training line held out for validation; test = dev2010 + dev2012 + tst2010-2012; lowercased).
WMT en-de follows prepare-wmt14en2de.sh with the WMT17 training data MLPerf's Transformer uses
(Europarl v7, Common Crawl, News Commentary v12); validation is newstest2013, test newstest2014.
Tokenisation is left to sentencepiece (prepare.py), which works on raw text, so detokenising the
output is exact and sacrebleu scores real text.
"""

from __future__ import annotations

import html
import re
import shutil
import tarfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IWSLT14_URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
WMT_URLS = (
    "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz",
    "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz",
    "http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz",
    "http://data.statmt.org/wmt17/translation-task/dev.tgz",
    "http://statmt.org/wmt14/test-full.tgz",
)
WMT_TRAIN = ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v12.de-en")
MAX_WORDS = 175  # prepare-*.sh drop pairs longer than this (clean-corpus-n.perl 1 175)
MAX_RATIO = 1.5  # ... or whose lengths differ by more than this factor

_SEG = re.compile(r"<seg[^>]*>\s*(.*?)\s*</seg>")


@dataclass(frozen=True)
class Split:
    """One split's source and target lines, aligned."""

    source: list[str]
    target: list[str]


def download(url: str, dest_dir: Path, *, mirror: str | None = None, attempts: int = 3) -> Path:
    """Fetch `url` into dest_dir once and reuse it after; with `mirror` (a directory or a base URL),
    take the file of the same name from there instead (hosts without internet, pinned copies)."""
    name = url.rsplit("/", 1)[-1]
    dest = dest_dir / name
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    if mirror and Path(mirror).is_dir():
        if not (Path(mirror) / name).is_file():
            raise FileNotFoundError(f"--mirror {mirror} holds no {name} (the file {url} names)")
        shutil.copyfile(Path(mirror) / name, dest)
        return dest
    source = f"{mirror.rstrip('/')}/{name}" if mirror else url
    partial = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(attempts):
        try:
            urllib.request.urlretrieve(source, partial)
            partial.rename(dest)
            return dest
        except OSError as err:
            error = err
            time.sleep(2**attempt if attempt + 1 < attempts else 0)
    raise OSError(f"could not download {source}: {error}; pass --mirror DIR_OR_URL holding {name}") from error


def extract(archive: Path) -> Path:
    """Unpack `archive` beside itself once (a marker file says it finished); return the directory."""
    dest = archive.parent / archive.name.split(".")[0]
    done = dest / ".extracted"
    if not done.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        done.touch()
    return dest


def read_lines(root: Path, name: str) -> list[str]:
    """Lines of the file called `name` anywhere under root (archives nest their folders differently)."""
    found = sorted(root.rglob(name))
    if not found:
        raise FileNotFoundError(f"no file named {name} under {root}: is the download complete?")
    return found[0].read_text(encoding="utf-8").splitlines()


def segments(lines: Iterable[str]) -> list[str]:
    """The text of each <seg> element of an IWSLT .xml or WMT .sgm file, entities unescaped."""
    return [html.unescape(m.group(1)) for line in lines if (m := _SEG.search(line))]


def ted_transcript(lines: Iterable[str]) -> list[str]:
    """The text lines of IWSLT's train.tags files: every line but the talk's metadata tags."""
    return [line.strip() for line in lines if not line.lstrip().startswith("<")]


def clean(source: list[str], target: list[str]) -> Iterator[tuple[str, str]]:
    """Pairs with both sides non-empty, at most MAX_WORDS words, and a length ratio within MAX_RATIO."""
    for s, t in zip(source, target, strict=True):
        ns, nt = len(s.split()), len(t.split())
        if 0 < ns <= MAX_WORDS and 0 < nt <= MAX_WORDS and max(ns, nt) <= MAX_RATIO * min(ns, nt) + 1:
            yield s, t


def iwslt14(downloads: Path, *, mirror: str | None = None) -> dict[str, Split]:
    """IWSLT'14 German-English as prepare-iwslt14.sh splits it (source de, target en), lowercased."""
    root = extract(download(IWSLT14_URL, downloads, mirror=mirror))
    de = ted_transcript(read_lines(root, "train.tags.de-en.de"))
    en = ted_transcript(read_lines(root, "train.tags.de-en.en"))
    if len(de) != len(en):
        raise ValueError(f"{root}: train.tags has {len(de)} German and {len(en)} English lines")
    pairs = [(s.lower(), t.lower()) for s, t in clean(de, en)]
    valid = [p for i, p in enumerate(pairs, 1) if i % 23 == 0]
    train = [p for i, p in enumerate(pairs, 1) if i % 23 != 0]
    test_sets = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
                 "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")
    test_de: list[str] = []
    test_en: list[str] = []
    for name in test_sets:
        test_de += segments(read_lines(root, f"{name}.de-en.de.xml"))
        test_en += segments(read_lines(root, f"{name}.de-en.en.xml"))
    return {
        "train": Split([s for s, _ in train], [t for _, t in train]),
        "valid": Split([s for s, _ in valid], [t for _, t in valid]),
        "test": Split([s.lower() for s in test_de], [t.lower() for t in test_en]),
    }


def wmt_en_de(downloads: Path, *, mirror: str | None = None) -> dict[str, Split]:
    """WMT17 English-German training data, newstest2013 validation, newstest2014 test (source en)."""
    roots = [extract(download(url, downloads, mirror=mirror)) for url in WMT_URLS]

    def lines(name: str) -> list[str]:
        for root in roots:
            if any(root.rglob(name)):
                return read_lines(root, name)
        raise FileNotFoundError(f"none of {', '.join(str(r) for r in roots)} holds {name}: is the download complete?")

    en: list[str] = []
    de: list[str] = []
    for corpus in WMT_TRAIN:
        pairs = list(clean(lines(f"{corpus}.en"), lines(f"{corpus}.de")))
        en += [s for s, _ in pairs]
        de += [t for _, t in pairs]
    return {
        "train": Split(en, de),
        "valid": Split(lines("newstest2013.en"), lines("newstest2013.de")),
        "test": Split(segments(lines("newstest2014-deen-src.en.sgm")), segments(lines("newstest2014-deen-ref.de.sgm"))),
    }


# MLPerf v0.6 trains on the same WMT17 data and scores newstest2014, as wmt-en-de does.
CORPORA = {"iwslt14-de-en": iwslt14, "wmt-en-de": wmt_en_de, "wmt-en-de-mlperf": wmt_en_de}


def write_raw(splits: dict[str, Split], raw_dir: Path, source_lang: str, target_lang: str) -> dict[str, int]:
    """Write raw/{split}.{lang}; return the number of pairs per split."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split, pair in splits.items():
        if len(pair.source) != len(pair.target):
            raise ValueError(f"{split}: {len(pair.source)} source lines but {len(pair.target)} target lines")
        (raw_dir / f"{split}.{source_lang}").write_text("".join(line + "\n" for line in pair.source))
        (raw_dir / f"{split}.{target_lang}").write_text("".join(line + "\n" for line in pair.target))
    return {split: len(pair.source) for split, pair in splits.items()}
