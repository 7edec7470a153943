"""Encoded token caches and the batches a language model trains and evaluates on.

A corpus is tokenized once into a flat binary file of token ids (uint16 when the vocabulary has
fewer than 65536 tokens, else uint32) named by a hash of the text and of ``tokenizer.json``: a
second run on the same corpus with the same tokenizer maps the file instead of encoding again.

Training batches are random windows whose positions depend only on ``(seed, step)``, so a run
resumed at step k draws exactly the batches an uninterrupted run drew (DESIGN.md §6).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.errors import DataError

__all__ = ["cache_key", "check_length", "encode_to_cache", "eval_batches", "open_tokens"]

_CACHE_VERSION = b"tensorsmith-tokens-v1"
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def cache_key(text: str, tokenizer: TextTokenizer) -> str:
    """Hex SHA-256 of the tokenizer's JSON and the text: what names a token cache file."""
    digest = hashlib.sha256(_CACHE_VERSION)
    tok = tokenizer.to_json().encode("utf-8")
    digest.update(len(tok).to_bytes(8, "little"))
    digest.update(tok)
    digest.update(text.encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()


def encode_to_cache(text: str, tokenizer: TextTokenizer, cache_dir: Path) -> Path:
    """Return the path of the token file of ``text``, encoding it only when it is not cached."""
    if not text:
        raise DataError(
            "cannot cache the tokens of an empty text; expected the split to hold text; "
            "check data.source and data.split"
        )
    dtype = "uint16" if tokenizer.vocab_size < 2**16 else "uint32"
    cache_dir = Path(cache_dir)
    path = cache_dir / f"tokens-{cache_key(text, tokenizer)[:32]}.{dtype}.bin"
    if path.is_file():
        return path
    ids = tokenizer.encode_array(text, _DTYPES[dtype])
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a crash never leaves a half-written cache behind.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tokens-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(ids.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_tokens(path: Path) -> np.memmap:
    """Map a token file written by :func:`encode_to_cache` (read-only)."""
    path = Path(path)
    dtype = path.suffixes[-2].lstrip(".") if len(path.suffixes) >= 2 else ""
    if dtype not in _DTYPES:
        raise DataError(
            f"'{path.name}' is not a token cache file; expected a name ending in .uint16.bin or "
            ".uint32.bin; use the path that encode_to_cache returned"
        )
    if not path.is_file():
        raise DataError(
            f"token cache '{path}' not found; expected the file encode_to_cache wrote; "
            "encode the corpus again (delete the cache folder if it was moved)"
        )
    size = path.stat().st_size
    itemsize = np.dtype(_DTYPES[dtype]).itemsize
    if size == 0 or size % itemsize:
        raise DataError(
            f"token cache '{path}' is damaged ({size} bytes, expected a positive multiple of "
            f"{itemsize}); delete it and it will be encoded again"
        )
    return np.memmap(path, dtype=_DTYPES[dtype], mode="r")


def check_length(n_tokens: int, block_size: int, batch_size: int, split: str) -> None:
    if block_size < 1 or batch_size < 1:
        raise DataError(
            f"block_size {block_size} and batch_size {batch_size} must be positive; "
            "set both to at least 1"
        )
    if block_size + 1 > n_tokens:
        raise DataError(
            f"block_size {block_size} needs {block_size + 1} tokens per window but the {split} "
            f"split has {n_tokens} tokens; use a smaller block_size (at most {n_tokens - 1}), "
            "or more text, or a larger data.split.valid for the valid split"
        )


def _to_xy(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) windows → inputs x and next-token targets y, each (B, T) int64."""
    w = windows.astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(w[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(w[:, 1:]))
    return x, y


def eval_batches(
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    max_batches: int | None = None,
    split: str = "valid",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic (x, y) batches of non-overlapping windows that cover ``tokens`` in order.

    Window i starts at ``i * block_size``, so every token after the first is a target exactly
    once (a tail shorter than a window is left out). With ``max_batches``, evenly spaced windows
    stand in for the whole split rather than only its beginning. The last batch may be smaller.
    """
    check_length(len(tokens), block_size, batch_size, split)
    if max_batches is not None and max_batches < 1:
        raise DataError(f"max_batches {max_batches} must be at least 1, or None for all windows")
    n_windows = (len(tokens) - 1) // block_size
    starts = np.arange(n_windows) * block_size
    if max_batches is not None and n_windows > max_batches * batch_size:
        keep = np.linspace(0, n_windows - 1, num=max_batches * batch_size).round().astype(int)
        starts = starts[keep]
    offsets = np.arange(block_size + 1)
    for i in range(0, len(starts), batch_size):
        idx = starts[i : i + batch_size, None] + offsets  # (B, T+1)
        yield _to_xy(np.asarray(tokens[idx]))
