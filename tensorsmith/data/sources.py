"""Reading tables: CSV, TSV, Parquet and JSONL, with errors a person can act on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tensorsmith.errors import DataError, did_you_mean

__all__ = ["TABLE_SUFFIXES", "check_columns", "read_table"]

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table by its suffix. Empty files, non-tables and unknown formats raise DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist; check data.source or --data")
    if p.is_dir():
        raise DataError(f"{p} is a directory; a table (CSV, TSV, Parquet or JSONL) is expected")
    kind = TABLE_SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot read {p.name}: unknown file type '{p.suffix}'; expected one of "
            f"{', '.join(sorted(TABLE_SUFFIXES))}"
        )
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty; it needs a header row and at least one data row")
    try:
        if kind == "csv":
            df = pd.read_csv(p, skipinitialspace=True)
        elif kind == "tsv":
            df = pd.read_csv(p, sep="\t")
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_json(p, lines=True)
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
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if c.startswith("Unnamed: ")]
    if kind in ("csv", "tsv") and len(unnamed) == len(df.columns):
        raise DataError(f"{p.name} does not look like a table: its header row has no names")
    return df


def check_columns(df: pd.DataFrame, wanted: list[str], where: str, file: str) -> None:
    """Fail with the missing names, the columns there are and the nearest match."""
    missing = [c for c in wanted if c not in df.columns]
    if not missing:
        return
    columns = ", ".join(map(str, df.columns))
    hint = did_you_mean(missing[0], [str(c) for c in df.columns])
    names = ", ".join(f"'{m}'" for m in missing)
    noun = "column" if len(missing) == 1 else "columns"
    raise DataError(f"{noun} {names} ({where}) not in {file}; columns are: {columns}{hint}")
