"""Reading and writing tables (CSV, TSV, Parquet, JSONL) for every verb, with errors a person
can act on."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from tensorsmith.errors import DataError, did_you_mean, listing, shorten

__all__ = ["TABLE_FORMATS", "check_columns", "read_table", "table_format", "write_table"]

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def table_format(path: Path, verb: str = "read") -> str:
    """csv, tsv, parquet or jsonl, by the file's suffix; DataError for anything else."""
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot {verb} {path.name}: unknown table type '{path.suffix}'; expected one of "
            f"{', '.join(sorted(TABLE_FORMATS))}"
        )
    return kind


def read_table(path: str | Path, as_text: bool = False) -> pd.DataFrame:
    """Read a table by its suffix. Empty files, non-tables and unknown formats raise DataError.

    ``as_text`` keeps every cell a string (a corpus column), with empty cells as "".
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist; check data.source or --data")
    if p.is_dir():
        raise DataError(f"{p} is a directory; a table (CSV, TSV, Parquet or JSONL) is expected")
    kind = table_format(p)
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty; it needs a header row and at least one data row")
    try:
        text: dict[str, Any] = {"dtype": str, "keep_default_na": False} if as_text else {}
        if kind == "csv":
            df = pd.read_csv(p, skipinitialspace=True, **text)
        elif kind == "tsv":
            df = pd.read_csv(p, sep="\t", **text)
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_json(p, lines=True, dtype=not as_text)
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        ValueError,
        OSError,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{p.name} is not a readable {kind.upper()} table: {first}") from None
    except Exception as exc:  # pyarrow raises its own error types for a file that is not parquet
        raise DataError(f"{p.name} is not a readable {kind.upper()} table: {exc}") from None
    if df.empty or len(df.columns) == 0:
        raise DataError(f"data file {p} has no data rows; it needs a header and at least one row")
    names = _header(p, kind) if kind in ("csv", "tsv") else [str(c) for c in df.columns]
    _check_names(names, p.name)
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if c.startswith("Unnamed: ")]
    if kind in ("csv", "tsv") and len(unnamed) == len(df.columns):
        raise DataError(f"{p.name} does not look like a table: its header row has no names")
    _check_cells(df, p.name)
    return df


def _header(path: Path, kind: str) -> list[str]:
    """The header row as written: pandas renames a repeated name ``a`` to ``a.1``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f, delimiter="\t" if kind == "tsv" else ","), [])
    except (UnicodeDecodeError, csv.Error):
        return []


def _check_names(names: list[str], file: str) -> None:
    stripped = [n.strip() for n in names]
    repeated = sorted({n for n in stripped if n and stripped.count(n) > 1})
    if repeated:
        shown = ", ".join(f"'{shorten(n, 40)}'" for n in repeated[:10])
        raise DataError(
            f"{file} has columns with the same name: {shown}; every column needs its own name "
            "(a second copy would be read as another feature): rename or drop the copies"
        )


def _check_cells(df: pd.DataFrame, file: str) -> None:
    """One value per cell: nested JSON objects or lists are refused, naming column and row."""
    for column in df.columns:
        if df[column].dtype != object:
            continue
        nested = df[column].map(lambda v: isinstance(v, dict | list))
        if nested.any():
            row = int(nested.to_numpy().argmax()) + 1
            value = shorten(repr(df[column].iloc[row - 1]), 60)
            raise DataError(
                f"column '{column}' of {file} holds nested values (row {row}: {value}); a table "
                "needs one value per cell: flatten it first (for example pandas.json_normalize)"
            )


def check_columns(df: pd.DataFrame, wanted: list[str], where: str, file: str) -> None:
    """Fail with the missing names, the columns there are and the nearest match."""
    missing = [c for c in wanted if c not in df.columns]
    if not missing:
        return
    columns = listing(df.columns)
    hint = did_you_mean(missing[0], [str(c) for c in df.columns])
    names = listing(f"'{shorten(m, 40)}'" for m in missing)
    noun = "column" if len(missing) == 1 else "columns"
    raise DataError(f"{noun} {names} ({where}) not in {file}; columns are: {columns}{hint}")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the format its suffix names (CSV, TSV, Parquet, JSONL)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p} is a directory; give a file name such as predictions.csv")
    kind = table_format(p, "write")
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        df.to_parquet(p, index=False)
    elif kind == "jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_csv(p, sep="\t" if kind == "tsv" else ",", index=False)
    return p
