"""Text corpora for language modeling: load documents, then split them into train and valid text.

A *source* is a glob of text files (``data/*.txt``), one text file, a directory of text files, or
a table (CSV, TSV, JSONL, Parquet) whose ``text_column`` holds one document per row. Relative
sources resolve against ``base_dir`` (the recipe's folder, DESIGN.md §3).

Documents are joined with :data:`END_OF_TEXT`, the string of the tokenizer's end-of-text special
token. Every tokenizer in :mod:`tensorsmith.data.tokenizer` registers it as a special token, so
the separator always encodes to the single id ``eot_id`` and never to the characters of its
spelling: the model sees one token between two documents.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tensorsmith.errors import DataError, did_you_mean, listing

__all__ = [
    "END_OF_TEXT",
    "DataWarning",
    "Document",
    "load_corpus",
    "resolve_sources",
    "split_corpus",
]

END_OF_TEXT = "<|endoftext|>"
"""Separator between documents; the tokenizers map it to their end-of-text token."""

_GLOB_CHARS = frozenset("*?[")
_SNIFF_BYTES = 8192


class DataWarning(UserWarning):
    """Something in the data was left out; the run goes on without it."""


@dataclass(frozen=True)
class Document:
    """One document of a corpus: ``name`` says where it came from (file, or ``file#row``)."""

    name: str
    text: str


def load_corpus(source: str, base_dir: Path, text_column: str | None = None) -> list[Document]:
    """Read every document of ``source``, sorted by file name (rows of a table keep their order).

    Files that are binary or not UTF-8 are skipped and named in a :class:`DataWarning`. Raises
    :class:`DataError` when nothing matches, when every file was skipped, or when no text is left.
    """
    from tensorsmith.data.tables import TABLE_FORMATS

    paths = resolve_sources(source, base_dir)
    docs: list[Document] = []
    skipped: list[str] = []
    for path in paths:
        name = _display_name(path, base_dir)
        if path.suffix.lower() in TABLE_FORMATS:
            rows = _read_table(path, name, text_column, skipped)
            docs.extend(Document(f"{name}#{i}", text) for i, text in rows)
            continue
        text, problem = _read_text(path)
        if problem is not None:
            skipped.append(f"{name} ({problem})")
        else:
            docs.append(Document(name, text))

    if skipped and len(skipped) == len(paths):
        raise DataError(
            f"no readable text in {source!r}: every file was skipped: {listing(skipped, 10)}; "
            "expected UTF-8 text files; convert the files to UTF-8 text or point data.source "
            "at text files"
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} of {len(paths)} files of {source!r} that are not UTF-8 "
            f"text: {listing(skipped, 10)}; convert them to UTF-8 or leave them out of the source",
            DataWarning,
            stacklevel=2,
        )
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        names = ", ".join(_display_name(p, base_dir) for p in paths[:10])
        more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
        raise DataError(
            f"the corpus {source!r} is empty: {names}{more} contain no text; "
            "expected at least one non-empty document; add text to the files or fix data.source"
        )
    return docs


def split_corpus(
    docs: Sequence[Document],
    valid_fraction: float,
    by: Literal["document", "tail"],
    seed: int,
) -> tuple[str, str]:
    """Split documents into ``(train_text, valid_text)``, documents joined by :data:`END_OF_TEXT`.

    ``by="tail"`` holds out the last ``valid_fraction`` of each document's characters.
    ``by="document"`` holds out whole documents, chosen by ``seed``, with at least one document
    on each side when there is more than one. Each side keeps the documents in name order.
    """
    if not docs:
        raise DataError(
            "cannot split an empty corpus; expected at least one document; check data.source"
        )
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(
            f"valid fraction {valid_fraction} is out of range; expected 0 <= valid < 1; "
            "set data.split.valid to a fraction such as 0.1"
        )
    if by == "tail":
        train_parts, valid_parts = [], []
        for doc in docs:
            cut = len(doc.text) - round(len(doc.text) * valid_fraction)
            train_parts.append(doc.text[:cut])
            valid_parts.append(doc.text[cut:])
    elif by == "document":
        valid_idx = _held_out_documents(docs, valid_fraction, seed)
        train_parts = [d.text for i, d in enumerate(docs) if i not in valid_idx]
        valid_parts = [d.text for i, d in enumerate(docs) if i in valid_idx]
    else:
        raise DataError(
            f"unknown split mode {by!r}{did_you_mean(by, ['document', 'tail'])}; "
            "choices: document, tail"
        )
    train = END_OF_TEXT.join(p for p in train_parts if p)
    valid = END_OF_TEXT.join(p for p in valid_parts if p)
    if not train:
        raise DataError(
            f"the train split is empty after holding out {valid_fraction} of the text by {by}; "
            "expected some text to train on; lower data.split.valid or add text"
        )
    if valid_fraction > 0 and not valid:
        raise DataError(
            f"the valid split is empty: {valid_fraction} of {sum(len(d.text) for d in docs)} "
            "characters rounds to nothing; raise data.split.valid or add text"
        )
    return train, valid


def _held_out_documents(docs: Sequence[Document], fraction: float, seed: int) -> set[int]:
    n = len(docs)
    if fraction == 0.0:
        return set()
    if n == 1:
        raise DataError(
            f"cannot hold out whole documents: the corpus has one document ({docs[0].name!r}); "
            "expected at least two; split by tail instead, or add documents"
        )
    n_valid = min(max(round(n * fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return {int(i) for i in order[:n_valid]}


def resolve_sources(source: str, base_dir: Path) -> list[Path]:
    """Return the files that ``source`` names, sorted; DataError when it names none."""
    # abspath normalizes '..' without touching the disk, so it keeps a glob's wildcards intact.
    pattern = Path(os.path.abspath(Path(base_dir) / Path(source).expanduser()))
    if _is_glob(source):
        matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise DataError(
                f"no files match the glob {source!r} (resolved to '{pattern}'); "
                "expected at least one text file; check the pattern, which is relative to "
                "the recipe's folder"
            )
        return files
    if pattern.is_dir():
        files = sorted(
            p
            for p in pattern.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(pattern).parts)
        )
        if not files:
            raise DataError(
                f"the directory {source!r} ('{pattern}') holds no files; expected text files; "
                "add files or point data.source at a glob such as 'data/*.txt'"
            )
        return files
    if not pattern.is_file():
        raise DataError(
            f"file {source!r} not found (resolved to '{pattern}'); expected a text file, a table "
            "or a glob; check the path, which is relative to the recipe's folder"
        )
    return [pattern]


def _is_glob(source: str) -> bool:
    return any(c in _GLOB_CHARS for c in source)


def _display_name(path: Path, base_dir: Path) -> str:
    try:
        return path.resolve().relative_to(Path(base_dir).resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _read_text(path: Path) -> tuple[str, str | None]:
    """Return ``(text, None)``, or ``("", why)`` when the file is binary or not UTF-8."""
    raw = path.read_bytes()
    if b"\x00" in raw[:_SNIFF_BYTES]:
        return "", "binary"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    # One newline convention, so a corpus written on Windows does not teach the model '\r'.
    return text.replace("\r\n", "\n"), None


def _read_table(
    path: Path, name: str, text_column: str | None, skipped: list[str]
) -> list[tuple[int, str]]:
    """Return ``(row, text)`` for every non-empty cell of the text column of one table."""
    from tensorsmith.data.tables import read_table

    try:
        frame = read_table(path, as_text=True)
    except DataError as exc:
        if "codec" in str(exc) or "UTF-8" in str(exc) or "utf-8" in str(exc):
            skipped.append(f"{name} (not UTF-8)")
            return []
        raise
    columns = [str(c) for c in frame.columns]
    column = text_column if text_column is not None else ("text" if "text" in columns else None)
    if column is None or column not in columns:
        what = f"column {column!r} is not in" if column else "no text column given for"
        raise DataError(
            f"{what} {name}{did_you_mean(column or '', columns)}; columns are: "
            f"{listing(columns)}; set data.text_column to the column that holds the text"
        )
    rows: list[tuple[int, str]] = []
    for i, value in enumerate(frame[column].tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        text = str(value)
        if text.strip():
            rows.append((i, text))
    return rows
