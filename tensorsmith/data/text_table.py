"""Tables with a text column, for text classification and regression.

A CSV or TSV that is not valid UTF-8 is read with the undecodable bytes replaced by U+FFFD, and
the rows that held them are named; rows whose text is empty are left out and named. Both are
reported as notes (what happened, where, and what the run did about it) rather than errors,
unless nothing is left.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from tensorsmith.data.preprocess import row_list
from tensorsmith.data.tables import check_columns, read_table, table_format
from tensorsmith.errors import DataError

__all__ = ["clean_texts", "read_text_table"]


def read_text_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A table and notes on how it was read (bytes that are not UTF-8)."""
    if not path.is_file() or table_format(path) not in ("csv", "tsv"):
        return read_table(path), []
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return read_table(path), []
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    text = raw.decode("utf-8", errors="replace")
    sep = "\t" if table_format(path) == "tsv" else ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, skipinitialspace=sep == ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc2:
        raise DataError(f"{path.name} is not a readable table: {exc2}") from None
    df.columns = [str(c).strip() for c in df.columns]
    bad = df.astype(str).apply(lambda col: col.str.contains("\ufffd", regex=False)).any(axis=1)
    note = (
        f"{path.name} is not valid UTF-8 ({where}); undecodable bytes were replaced by U+FFFD "
        f"in rows {row_list(bad)} (counting data rows from 1): save the file as UTF-8 to keep "
        "those characters"
    )
    return df, [note]


def clean_texts(df: pd.DataFrame, column: str, file: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows with text (as strings), and a note naming the rows left out for empty text."""
    check_columns(df, [column], "data.text_column", file)
    texts = df[column]
    empty = texts.isna() | texts.astype(str).str.strip().eq("")
    if empty.all():
        raise DataError(
            f"column '{column}' (data.text_column) of {file} holds no text: all {len(df)} rows "
            "are empty; point data.text_column at the column with the text"
        )
    notes = []
    if empty.any():
        notes.append(
            f"{int(empty.sum())} rows of {file} have an empty '{column}' (rows {row_list(empty)}); "
            "they were left out"
        )
    kept = df[~empty].copy()
    kept[column] = kept[column].astype(str)
    return kept, notes
