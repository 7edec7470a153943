"""Content fingerprints of the data a model was trained on, and what changed since.

A model records the SHA-256 of every file it read and a digest of each split (the row indices
of a table, the text of a corpus split). ``evaluate`` and ``--resume`` compare them with the files
as they are now and refuse, naming the file, when the data changed: re-splitting a changed file
would move rows between train and test and report a "test" score of rows the model trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["digest_text", "digest_values", "file_digest", "fingerprint", "what_changed"]

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_values(values: Iterable[Any]) -> str:
    """Hex SHA-256 of a sequence of values (a split's row indices)."""
    h = hashlib.sha256()
    for value in values:
        h.update(str(value).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def fingerprint(files: Iterable[Path], splits: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"files": {path: {"sha256", "bytes"}}, "splits": {name: digest}}`` for data.json."""
    entries = {}
    for path in sorted({Path(p).resolve() for p in files}):
        entries[str(path)] = {"sha256": file_digest(path), "bytes": path.stat().st_size}
    return {"files": entries, "splits": dict(splits or {})}


def what_changed(recorded: Mapping[str, Any], files: Iterable[Path]) -> list[str]:
    """What differs between a recorded fingerprint and the files a recipe reads now."""
    then: Mapping[str, Any] = recorded.get("files", {})
    now = {str(Path(p).resolve()) for p in files if Path(p).is_file()}
    problems = []
    for name in sorted(set(then) - now):
        gone = not Path(name).exists()
        problems.append(f"{name} {'is gone' if gone else 'no longer matches data.source'}")
    problems += [f"{name} is new (it matches data.source now)" for name in sorted(now - set(then))]
    for name in sorted(now & set(then)):
        entry = then[name]
        path = Path(name)
        if path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
            problems.append(f"{name} changed (its content differs from the trained-on file)")
    return problems
