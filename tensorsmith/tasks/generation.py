"""Text generation for language models: sampling options checked, text streamed piece by piece.

Token ids come from the model's ``generate_tokens`` (a KV cache per layer); this module turns
them into text as it grows, holds back what might be the start of a stop string, and waits out
incomplete UTF-8 sequences of byte-level BPE. Decoding is incremental: each new token decodes a
short tail of the text, not the whole continuation, so tokens per second stay flat with length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.errors import RecipeError

__all__ = ["GenerationNotes", "TextStream", "check_options", "single_threaded", "text_pieces"]

# A cached generation step multiplies one position by each weight matrix: up to this width the
# work is too small to split, and handing it between threads costs more than it saves
# (measured: 6x vs 1.1x cache speed-up for the 384-wide benchmark model, 1 vs 2 threads).
SINGLE_THREAD_WIDTH = 512
# tokens decoded again with each new one: enough context for a tokenizer's decoder to join
# pieces correctly (byte-level BPE needs at most 4 bytes of a character)
DECODE_TAIL = 8


@dataclass
class GenerationNotes:
    """What generation changed about the request, said to the user (never silently)."""

    messages: list[str] = field(default_factory=list)


def check_options(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Sampling options in range, or a RecipeError naming the option."""
    if max_new_tokens < 0:
        raise RecipeError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if top_p is not None and not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise RecipeError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise RecipeError(f"top_k must be >= 1, got {top_k}")
    if not math.isfinite(temperature) or temperature < 0:
        raise RecipeError(f"temperature must be a number >= 0 (0 = greedy), got {temperature}")


def single_threaded(tokens: Iterator[int], enabled: bool) -> Iterator[int]:
    """Draw each token with one torch thread; the caller's thread count holds between tokens."""
    if not enabled:
        yield from tokens
        return
    while True:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            token = next(tokens, None)
        finally:
            torch.set_num_threads(threads)
        if token is None:
            return
        yield token


class _Decoder:
    """New text for each new token id, decoding a window of the last few ids, not all of them."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # the window: ids[start:]
        self.done = 0  # characters of the window's text already returned

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids[self.start :])
        if text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence of byte-level BPE: wait for the rest
        new = text[self.done :]
        if len(self.ids) - self.start > 2 * DECODE_TAIL:
            self.start = len(self.ids) - DECODE_TAIL
            self.done = len(self.tokenizer.decode(self.ids[self.start :]))
        else:
            self.done = len(text)
        return new

    def flush(self) -> str:
        return self.tokenizer.decode(self.ids[self.start :])[self.done :]


class TextStream:
    """Text as tokens are pushed in, one at a time, ending at the first stop string (which is
    not returned). What might be the start of a stop string is held back until it is not.

    Push-based, so a scheduler that decodes many requests in one step can feed each its token;
    ``text_pieces`` pulls a token iterator through it.
    """

    def __init__(self, tokenizer: TextTokenizer, stop: list[str] | None) -> None:
        self.decoder = _Decoder(tokenizer)
        self.stops = [s for s in (stop or []) if s]
        self.held = max((len(s) - 1 for s in self.stops), default=0)
        self.pending = ""  # decoded, not yet returned: at most `held` characters between tokens
        self.stopped = False

    def add(self, token: int) -> str:
        """The new text this token completes ("" when none yet); sets ``stopped`` at a stop."""
        self.pending += self.decoder.add(token)
        cut = _first_stop(self.pending, self.stops)
        if cut is not None:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        if len(self.pending) > self.held:
            keep = len(self.pending) - self.held
            out, self.pending = self.pending[:keep], self.pending[keep:]
            return out
        return ""

    def finish(self) -> str:
        """What is left after the last token."""
        if self.stopped:
            return ""
        self.pending += self.decoder.flush()
        out, self.pending = self.pending[: _first_stop(self.pending, self.stops)], ""
        return out


def text_pieces(
    tokenizer: TextTokenizer, tokens: Iterator[int], stop: list[str] | None
) -> Iterator[str]:
    """New text as the tokens come, ending at the first stop string (which is not yielded)."""
    stream = TextStream(tokenizer, stop)
    for token in tokens:
        piece = stream.add(token)
        if piece:
            yield piece
        if stream.stopped:
            return
    last = stream.finish()
    if last:
        yield last


def _first_stop(text: str, stops: list[str]) -> int | None:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(cuts) if cuts else None


def generation_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``stream`` accepts, with their defaults."""
    return {
        "max_new_tokens": 200,
        "temperature": 0.8,
        "top_k": None,
        "top_p": None,
        "seed": None,
        "stop": None,
        "notes": None,
        **options,
    }
