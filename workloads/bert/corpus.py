"""Real English text without a download: the docstrings of Python's standard library, as documents.

Each importable public standard-library module gives one document (its docstring, then those of its
public classes and functions), one sentence per line, documents separated by a blank line: the layout
of the Wikipedia extracts BERT is trained on, and what prep_data.py reads. Deterministic for a given
Python version.

    python corpus.py --out corpus.txt [--max-documents 200]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

# Modules with side effects on import (a browser, printed text, GUI or test machinery), or no docs.
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip", "venv"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def _sentences(docstring: str) -> list[str]:
    """Paragraphs joined from wrapped lines, split into sentences; code-like lines dropped."""
    out = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = [line.strip() for line in paragraph.splitlines()]
        if any(line.startswith((">>>", "...", "$")) for line in lines):
            continue  # doctest examples and shell sessions are not prose
        text = " ".join(line for line in lines if line)
        out.extend(s for s in _SENTENCE_END.split(text) if len(s.split()) >= 3)
    return out


def _module_docs(name: str) -> list[str]:
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # deprecated aliases (typing.io) warn when touched
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module that does not import here (no GUI, no C library) is skipped
            return []
        docs = [inspect.cleandoc(module.__doc__ or "")]
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.cleandoc(obj.__doc__ or ""))  # own docs only, never inherited copies
    return [d for d in docs if d]


def documents(max_documents: int | None = None) -> Iterator[list[str]]:
    """Documents (lists of sentences) from the standard library's docstrings, in module-name order."""
    seen: set[str] = set()
    count = 0
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP:
            continue
        sentences = []
        for doc in _module_docs(name):
            for sentence in _sentences(doc):
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
        if len(sentences) >= 2:
            yield sentences
            count += 1
            if max_documents is not None and count >= max_documents:
                return


def write_corpus(out: str | Path, max_documents: int | None = None) -> int:
    """Write the corpus to `out`; return the number of documents."""
    docs = list(documents(max_documents))
    Path(out).write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return len(docs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="text file to write")
    parser.add_argument("--max-documents", type=int, default=None, help="stop after this many documents")
    args = parser.parse_args(argv)
    if args.max_documents is not None and args.max_documents < 2:
        parser.error(f"--max-documents must be at least 2 (NSP needs two documents), got {args.max_documents}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = write_corpus(args.out, args.max_documents)
    print(f"wrote {n} documents to {args.out}")


if __name__ == "__main__":
    main()
