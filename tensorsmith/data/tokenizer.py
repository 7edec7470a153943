"""Tokenizers for language modeling and for text classification, built with Hugging Face
``tokenizers``.

Three kinds, each saved as one ``tokenizer.json`` that :meth:`Tokenizer.from_file` reads without
executing code (DESIGN.md §4):

- ``char`` — one token per character seen in training, plus ``<|endoftext|>`` and ``<|unk|>``.
  It is a ``BPE`` model with an empty merge list, a vocabulary of single characters and no
  pre-tokenizer: every character of the input is looked up on its own (unseen ones become
  ``<|unk|>``), and the ``Fuse`` decoder joins tokens with nothing between them, so spaces and
  newlines round-trip exactly. (A ``WordLevel`` model behind a split-every-character regex does
  the same job about ten times slower.)
- ``bpe`` — byte-level BPE (GPT-2 style) trained on the train text only; every string
  round-trips, so it has no unknown token.
- ``wordpiece`` — BERT's sub-word pieces (``##`` continues a word) over words and punctuation,
  trained on the train text only; for classification, where text need not round-trip.

A tokenizer for classification or regression (:meth:`TextTokenizer.for_sequences`) also lower-
cases when asked, and truncates and pads every text to ``max_length`` with a ``<|pad|>`` token:
those settings are part of its ``tokenizer.json``.

A Hugging Face checkpoint's own ``tokenizer.json`` (:meth:`TextTokenizer.from_checkpoint`, BERT's
WordPiece with ``[CLS]``/``[SEP]``/``[PAD]``) is read as it is and set to truncate and pad to
``max_length`` with its own pad token; it has no end-of-text token.

Trained tokenizers register :data:`~tensorsmith.data.text.END_OF_TEXT` as a special token: the
document separator that :func:`~tensorsmith.data.text.split_corpus` writes encodes to ``eot_id``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tensorsmith.data.text import END_OF_TEXT
from tensorsmith.errors import DataError
from tensorsmith.registry import Registry

__all__ = ["PAD", "TOKENIZERS", "UNKNOWN", "TextTokenizer", "TokenizerKind"]

TokenizerKind = Literal["char", "bpe", "wordpiece"]
UNKNOWN = "<|unk|>"
PAD = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"

# Chunks for encode_batch end where a line of one non-blank line meets the next ('x\nY'). The
# byte-level pre-tokenizer (GPT-2 regex) always splits there and never joins across, so encoding
# chunk by chunk gives exactly the ids of encoding the whole text, in parallel.
_CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")
_CHUNK_CHARS = 1 << 16
_BYTE_ALPHABET = 256
_PAD_TOKENS = ("[PAD]", "<pad>", PAD)  # BERT's, RoBERTa's and T5's, ours


class TextTokenizer:
    """A trained tokenizer: ``encode``/``decode`` text, ``save``/``load`` one ``tokenizer.json``."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    # ----------------------------------------------------------------------------- building
    @classmethod
    def train(cls, kind: str, texts: Iterable[str], vocab_size: int | None = None) -> TextTokenizer:
        """Train a ``char`` or ``bpe`` tokenizer on ``texts`` (the train split only).

        ``vocab_size`` is the target size for ``bpe`` (at least 257: 256 bytes and the
        end-of-text token); ``char`` takes every character it sees and ignores it.
        """
        pieces = [p for text in texts for p in text.split(END_OF_TEXT) if p]
        if not pieces:
            raise DataError(
                "cannot train a tokenizer on empty text; expected the train split to hold text; "
                "check data.source and data.split"
            )
        return cls(TOKENIZERS.get(kind)(pieces, vocab_size))

    @classmethod
    def for_sequences(
        cls,
        kind: str,
        texts: Sequence[str],
        vocab_size: int,
        max_length: int,
        lowercase: bool = True,
    ) -> TextTokenizer:
        """A tokenizer for classification or regression, trained on ``texts`` (the train split):
        lower-casing when asked, truncating and padding every text to ``max_length``."""
        trained = cls.train(kind, [t.lower() for t in texts] if lowercase else texts, vocab_size)
        tok = trained.tokenizer
        if lowercase:
            base = tok.normalizer
            tok.normalizer = (
                normalizers.Lowercase()
                if base is None
                else normalizers.Sequence([base, normalizers.Lowercase()])
            )
        tok.add_special_tokens([PAD])
        tok.enable_truncation(max_length)
        tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=max_length)
        return cls(tok)

    @classmethod
    def from_checkpoint(cls, path: Path, max_length: int) -> TextTokenizer:
        """A Hugging Face checkpoint's own ``tokenizer.json`` (BERT's WordPiece with ``[CLS]``
        … ``[SEP]``, or any other), for classification or regression: truncating every text to
        ``max_length`` tokens (its special tokens included) and padding it on the right with the
        checkpoint's pad token, so that the attention mask is the tokens before the padding."""
        tok = cls._read(path, "the checkpoint's own tokenizer.json")
        padding = tok.padding or {}
        pad = padding.get("pad_token")
        if pad is None or tok.token_to_id(pad) is None:
            pad = next((p for p in _PAD_TOKENS if tok.token_to_id(p) is not None), None)
        if pad is None:
            raise DataError(
                f"the tokenizer '{path}' has no pad token (none of {', '.join(_PAD_TOKENS)} and "
                "no padding setting); expected one to pad texts to data.max_length; use a "
                "checkpoint whose tokenizer.json has a pad token"
            )
        tok.enable_truncation(max_length)
        tok.enable_padding(
            direction="right", pad_id=tok.token_to_id(pad), pad_token=pad, length=max_length
        )
        return cls(tok)

    def with_max_length(self, max_length: int) -> TextTokenizer:
        """A copy that truncates and pads to ``max_length`` with the same pad token (a
        fine-tune that reads its parent's tokenizer at its own ``data.max_length``)."""
        tok = Tokenizer.from_str(self.to_json())
        padding = tok.padding
        if padding is None:
            raise DataError(
                "the tokenizer does not pad; expected a tokenizer for classification or "
                "regression (TextTokenizer.for_sequences or from_checkpoint)"
            )
        tok.enable_truncation(max_length)
        tok.enable_padding(
            direction="right",
            pad_id=padding["pad_id"],
            pad_token=padding["pad_token"],
            length=max_length,
        )
        return TextTokenizer(tok)

    @staticmethod
    def _read(path: Path, expected: str) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(
                f"tokenizer file '{path}' not found; expected {expected}; train the model again "
                "or fix the path"
            )
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise DataError(
                f"cannot read tokenizer '{path}': {exc}; expected a Hugging Face tokenizer.json; "
                "replace the file with one written by TextTokenizer.save"
            ) from exc

    @classmethod
    def load(cls, path: Path, documents: bool = True) -> TextTokenizer:
        """Read a ``tokenizer.json`` (or a directory that holds one). ``documents``: it must
        have the end-of-text token that separates documents (language models); a tokenizer
        for classification may come from a checkpoint that has none (BERT's)."""
        tokenizer = cls._read(path, f"a {TOKENIZER_FILE} written by TextTokenizer.save")
        loaded = cls(tokenizer)
        if documents and tokenizer.token_to_id(END_OF_TEXT) is None:
            raise DataError(
                f"tokenizer '{path}' has no {END_OF_TEXT} token; expected one to separate "
                "documents; train the tokenizer with tensorsmith"
            )
        return loaded

    def save(self, path: Path) -> Path:
        """Write ``tokenizer.json`` to ``path`` (a file, or a directory to hold it)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def to_json(self) -> str:
        """The content of ``tokenizer.json``: what the token cache key hashes."""
        return str(self.tokenizer.to_str())

    # ----------------------------------------------------------------------------- properties
    @property
    def kind(self) -> TokenizerKind:
        decoder = json.loads(self.to_json()).get("decoder") or {}
        kinds: dict[str, TokenizerKind] = {"ByteLevel": "bpe", "WordPiece": "wordpiece"}
        return kinds.get(str(decoder.get("type")), "char")

    @property
    def max_length(self) -> int | None:
        """The length every text is truncated and padded to (a tokenizer for sequences)."""
        truncation = self.tokenizer.truncation
        return None if truncation is None else int(truncation["max_length"])

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def eot_id(self) -> int:
        eot = self.tokenizer.token_to_id(END_OF_TEXT)
        assert eot is not None, "load() and train() guarantee the end-of-text token"
        return int(eot)

    @property
    def unk_id(self) -> int | None:
        unk = self.tokenizer.token_to_id(UNKNOWN)
        return None if unk is None else int(unk)

    # ----------------------------------------------------------------------------- use
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ``<|endoftext|>`` in the text becomes ``eot_id``."""
        chunks = list(_chunks(text))
        if len(chunks) == 1:
            return list(self.tokenizer.encode(chunks[0]).ids)
        return [i for enc in self.tokenizer.encode_batch(chunks) for i in enc.ids]

    def encode_array(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        """Token ids of a long text as one array, encoded a chunk at a time: only one chunk's
        per-token records (strings, offsets …) are alive at once, not a whole corpus's. On the
        4.5 MB plays, encoding them all in one batch peaked 0.45 GB higher and was no faster."""
        parts = [np.zeros(0, dtype=dtype)]
        parts += [np.asarray(self.tokenizer.encode(c).ids, dtype=dtype) for c in _chunks(text)]
        return np.concatenate(parts)

    def encode_padded(
        self, texts: Sequence[str], group: int = 256
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids (N, max_length) int32 padded with ``<|pad|>``, the (N,) lengths, and (N,)
        whether each text was longer than ``max_length`` tokens (and so truncated). Encoded
        ``group`` texts at a time: a truncated text's encoding keeps its overflow, and a whole
        table's of them at once peaked at 0.5 GB for 4,000 passages."""
        texts = list(texts)
        parts = [self._padded(texts[i : i + group]) for i in range(0, max(len(texts), 1), group)]
        ids, lengths, truncated = (np.concatenate(p) for p in zip(*parts, strict=True))
        return ids, lengths, truncated

    def _padded(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(encodings), -1)
        lengths = np.array([sum(e.attention_mask) for e in encodings], dtype=np.int64)
        truncated = np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return ids, lengths, truncated

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; the end-of-text token is written out unless ``skip_special_tokens``."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of ``text`` that the vocabulary lacks (always empty for byte-level BPE)."""
        if self.unk_id is None:
            return set()
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        return {c for c in set(text.replace(END_OF_TEXT, "")) if c not in vocab}

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _char_tokenizer(pieces: list[str], vocab_size: int | None = None) -> Tokenizer:
    chars = sorted(set().union(*(set(p) for p in pieces)))
    specials = [END_OF_TEXT, UNKNOWN]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNKNOWN, fuse_unk=False))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _bpe_tokenizer(pieces: list[str], vocab_size: int | None) -> Tokenizer:
    if vocab_size is None or vocab_size <= _BYTE_ALPHABET:
        raise DataError(
            f"bpe vocab_size {vocab_size} is too small; expected more than {_BYTE_ALPHABET} "
            "(256 bytes plus the end-of-text token and merges); set a vocab_size such as 4096"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    chunks = [c for p in pieces for c in _chunks(p)]
    tokenizer.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    tokenizer.add_special_tokens([END_OF_TEXT])
    return tokenizer


_CONTINUES = 0x100000  # private-use plane 16: where a word's later characters are trained
_LAST_MAPPED = 0xFFFF  # characters beyond the basic plane are not mapped (see below)


def _continuation(word: str) -> str:
    """``word`` with every character after the first moved to the private-use plane."""
    return word[0] + "".join(
        chr(_CONTINUES + ord(c)) if ord(c) <= _LAST_MAPPED else c for c in word[1:]
    )


def _piece(token: str) -> str:
    """A trained BPE token back in WordPiece's spelling: continuation characters as ``##…``."""
    if token and ord(token[0]) >= _CONTINUES:
        return "##" + "".join(chr(ord(c) - _CONTINUES) for c in token)
    return "".join(chr(ord(c) - _CONTINUES) if ord(c) >= _CONTINUES else c for c in token)


def _wordpiece_tokenizer(pieces: list[str], vocab_size: int | None) -> Tokenizer:
    """BERT's WordPiece, trained deterministically.

    Hugging Face's ``WordPieceTrainer`` trains BPE with a ``##`` continuation prefix, but it
    numbers the ``##x`` pieces in hash-map order, so ties between equally frequent merges break
    differently from one run to the next (and a resumed run would get another vocabulary). Here
    the same training runs on words whose later characters are private-use code points
    (U+100000 + code): every character then gets its id in code-point order, the merges are the
    same every run, and the tokens are spelled back with ``##`` into a WordPiece vocabulary.
    Every character seen gets both a word-initial and a ``##`` piece, so no word of known
    characters becomes unknown.
    """
    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    words = pre_tokenizers.BertPreTokenizer()  # words and punctuation

    def mapped(text: str) -> str:
        norm = normalizer.normalize_str(text)
        return " ".join(_continuation(w) for w, _ in words.pre_tokenize_str(norm))

    bpe = Tokenizer(models.BPE(unk_token=UNKNOWN))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size or 8000, special_tokens=[END_OF_TEXT, UNKNOWN], show_progress=False
    )
    bpe.train_from_iterator((mapped(p) for p in pieces), trainer=trainer, length=len(pieces))
    trained = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    spelled = [_piece(token) for token, _ in trained]
    chars = sorted(
        {c for t in spelled for c in t.removeprefix("##") if t not in (END_OF_TEXT, UNKNOWN)}
    )
    spelled += [p for c in chars for p in (c, f"##{c}")]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(spelled))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNKNOWN))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = words
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens([END_OF_TEXT, UNKNOWN])
    return tokenizer


# kind → builder(train pieces, vocab_size)
TOKENIZERS: Registry[Callable[[list[str], int | None], Tokenizer]] = Registry(
    "tokenizer", "data.tokenizer.kind"
)
TOKENIZERS.register("char", _char_tokenizer)
TOKENIZERS.register("bpe", _bpe_tokenizer)
TOKENIZERS.register("wordpiece", _wordpiece_tokenizer)


def _chunks(text: str, size: int = _CHUNK_CHARS) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``size`` characters at safe boundaries."""
    start, n = 0, len(text)
    while True:
        match = _CHUNK_BOUNDARY.search(text, start + size) if start + size < n else None
        if match is None:
            yield text[start:]
            return
        yield text[start : match.start()]
        start = match.start()
