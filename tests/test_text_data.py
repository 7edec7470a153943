"""The language-modeling data layer: corpus loading and splits, tokenizers, token cache, batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tensorsmith.data.loading import StepFeed, Windows
from tensorsmith.data.text import END_OF_TEXT, DataWarning, Document, load_corpus, split_corpus
from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.data.tokens import check_length, encode_to_cache, eval_batches, open_tokens
from tensorsmith.errors import DataError, RecipeError


class WindowSampler:
    """Training windows through the data layer's feed: batch ``i`` of a seeded step feed."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        check_length(len(tokens), block_size, batch_size, "train")
        self.feed = StepFeed(Windows(tokens, block_size), batch_size, seed, block_size)

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        return next(self.feed.stream(step))


SHAKESPEARE = Path(__file__).parent / "data" / "shakespeare"


@pytest.fixture(scope="module")
def shakespeare() -> list[Document]:
    return load_corpus("*.txt", SHAKESPEARE)


@pytest.fixture(scope="module")
def bpe(shakespeare: list[Document]) -> TextTokenizer:
    train, _ = split_corpus(shakespeare, 0.1, by="tail", seed=0)
    return TextTokenizer.train("bpe", [train], vocab_size=400)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- loading
def test_glob_loads_documents_sorted_by_name(tmp_path: Path) -> None:
    write(tmp_path / "data" / "b.txt", "second")
    write(tmp_path / "data" / "a.txt", "first\r\nline")
    docs = load_corpus("data/*.txt", tmp_path)
    assert [d.name for d in docs] == ["data/a.txt", "data/b.txt"]
    assert docs[0].text == "first\nline"


def test_single_file_directory_and_absolute_glob(tmp_path: Path) -> None:
    write(tmp_path / "c" / "x.txt", "x")
    write(tmp_path / "c" / "sub" / "y.txt", "y")
    assert [d.text for d in load_corpus("c/x.txt", tmp_path)] == ["x"]
    assert [d.text for d in load_corpus("c", tmp_path)] == ["y", "x"]  # c/sub/y.txt < c/x.txt
    assert len(load_corpus(str(tmp_path / "c" / "*.txt"), Path("/nowhere"))) == 1


def test_real_shakespeare(shakespeare: list[Document]) -> None:
    assert [d.name for d in shakespeare] == ["passionate_pilgrim.txt", "phoenix_and_the_turtle.txt"]
    assert "Phoenix" in shakespeare[1].text


def test_glob_without_match_names_the_glob(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_corpus("data/*.txt", tmp_path)
    assert "'data/*.txt'" in str(err.value)
    assert str(tmp_path / "data" / "*.txt") in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found"):
        load_corpus("nope.txt", tmp_path)


def test_empty_corpus(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "")
    write(tmp_path / "b.txt", "  \n")
    with pytest.raises(DataError, match=r"empty.*a\.txt, b\.txt"):
        load_corpus("*.txt", tmp_path)


def test_binary_and_non_utf8_files_are_skipped_and_named(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "hello")
    write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(tmp_path / "latin1.txt", "café".encode("latin-1"))
    with pytest.warns(DataWarning) as record:
        docs = load_corpus("*.txt", tmp_path)
    assert [d.name for d in docs] == ["good.txt"]
    message = str(record[0].message)
    assert "image.txt (binary)" in message and "latin1.txt (not UTF-8" in message


def test_all_files_binary_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.bin", bytes(range(256)))
    write(tmp_path / "b.bin", b"\xff\xfe\x00")
    with pytest.raises(DataError, match=r"every file was skipped: a\.bin \(binary\), b\.bin"):
        load_corpus("*.bin", tmp_path)


def test_tables_one_document_per_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "body": ["one", "", "three"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.tsv", "t.jsonl", "t.parquet"):
        docs = load_corpus(name, tmp_path, text_column="body")
        assert [(d.name, d.text) for d in docs] == [(f"{name}#0", "one"), (f"{name}#2", "three")]
    with pytest.raises(DataError, match=r"'bdy' is not in t\.csv; did you mean 'body'"):
        load_corpus("t.csv", tmp_path, text_column="bdy")


# --------------------------------------------------------------------------- splitting
def test_split_by_tail(shakespeare: list[Document]) -> None:
    train, valid = split_corpus(shakespeare, 0.25, by="tail", seed=0)
    a, b = (d.text for d in shakespeare)
    cut_a, cut_b = len(a) - round(len(a) * 0.25), len(b) - round(len(b) * 0.25)
    assert train == a[:cut_a] + END_OF_TEXT + b[:cut_b]
    assert valid == a[cut_a:] + END_OF_TEXT + b[cut_b:]


def test_split_by_document_is_seeded_and_keeps_both_sides() -> None:
    docs = [Document(f"d{i}", f"text {i}") for i in range(10)]
    train, valid = split_corpus(docs, 0.3, by="document", seed=1)
    assert len(valid.split(END_OF_TEXT)) == 3 and len(train.split(END_OF_TEXT)) == 7
    assert split_corpus(docs, 0.3, by="document", seed=1) == (train, valid)
    assert split_corpus(docs, 0.3, by="document", seed=2) != (train, valid)
    assert set(train.split(END_OF_TEXT)) | set(valid.split(END_OF_TEXT)) == {d.text for d in docs}
    # A tiny fraction still holds out one document; a huge one still trains on one.
    assert len(split_corpus(docs, 0.01, "document", 0)[1].split(END_OF_TEXT)) == 1
    assert len(split_corpus(docs, 0.99, "document", 0)[0].split(END_OF_TEXT)) == 1


def test_split_errors() -> None:
    with pytest.raises(DataError, match=r"one document.*split by tail"):
        split_corpus([Document("a", "abc")], 0.1, by="document", seed=0)
    with pytest.raises(DataError, match=r"out of range"):
        split_corpus([Document("a", "abc")], 1.0, by="tail", seed=0)


# --------------------------------------------------------------------------- tokenizers
def test_char_round_trip_on_shakespeare(shakespeare: list[Document], tmp_path: Path) -> None:
    text = END_OF_TEXT.join(d.text for d in shakespeare)
    tok = TextTokenizer.train("char", [text])
    chars = set(text.replace(END_OF_TEXT, ""))
    assert tok.vocab_size == len(chars) + 2 and tok.kind == "char"
    ids = tok.encode(text)
    assert len(ids) == len(text) - len(END_OF_TEXT) + 1  # one token per char, one for the EOT
    assert ids.count(tok.eot_id) == 1
    assert tok.decode(ids) == text
    spaced = "  two  spaces\n\n\n and, more? "
    assert tok.decode(tok.encode(spaced)) == spaced
    loaded = TextTokenizer.load(tok.save(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file() and loaded.kind == "char"
    assert loaded.encode(text) == ids and loaded.to_json() == tok.to_json()


def test_char_unknown_characters_map_to_unk() -> None:
    tok = TextTokenizer.train("char", ["abc abc"])
    assert tok.unk_id is not None
    assert tok.unknown_chars("abz€ a" + END_OF_TEXT) == {"z", "€"}
    ids = tok.encode("az€")
    assert ids[1:] == [tok.unk_id, tok.unk_id]
    assert tok.decode(ids) == "a<|unk|><|unk|>"


def test_bpe_round_trip_and_vocab_size(
    bpe: TextTokenizer, shakespeare: list[Document], tmp_path: Path
) -> None:
    assert bpe.vocab_size == 400 and bpe.kind == "bpe" and bpe.unk_id is None
    text = END_OF_TEXT.join(d.text for d in shakespeare)
    ids = bpe.encode(text)
    assert len(ids) < 0.6 * len(text) and ids.count(bpe.eot_id) == 1
    assert bpe.decode(ids) == text
    odd = "naïve café 😀 \x00\t  end\n"
    assert bpe.decode(bpe.encode(odd)) == odd and bpe.unknown_chars(odd) == set()
    # Encoding in parallel chunks gives the ids of encoding the text whole.
    assert ids == list(bpe.tokenizer.encode(text).ids)
    assert TextTokenizer.load(bpe.save(tmp_path / "t.json")).encode(text) == ids


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError, match=r"unknown tokenizer 'bp' at data.tokenizer.kind; did you mean 'bpe'"
    ):
        TextTokenizer.train("bp", ["abc"])
    with pytest.raises(DataError, match=r"vocab_size 100 is too small"):
        TextTokenizer.train("bpe", ["abc"], vocab_size=100)
    with pytest.raises(DataError, match=r"not found"):
        TextTokenizer.load(tmp_path / "missing.json")
    write(tmp_path / "bad.json", "{not json")
    with pytest.raises(DataError, match=r"cannot read tokenizer"):
        TextTokenizer.load(tmp_path / "bad.json")


def test_tokenizer_file_is_plain_json(bpe: TextTokenizer, tmp_path: Path) -> None:
    data = json.loads(bpe.save(tmp_path).read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE"
    assert [t["content"] for t in data["added_tokens"]] == [END_OF_TEXT]


# --------------------------------------------------------------------------- token cache
def test_cache_is_written_once_and_reused(
    bpe: TextTokenizer, shakespeare: list[Document], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = shakespeare[0].text
    path = encode_to_cache(text, bpe, tmp_path)
    tokens = open_tokens(path)
    assert tokens.dtype == np.uint16 and tokens.tolist() == bpe.encode(text)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind

    calls: list[str] = []

    def counting_encode(self: TextTokenizer, text: str) -> list[int]:
        calls.append(text)
        return []

    monkeypatch.setattr(TextTokenizer, "encode", counting_encode)
    reloaded = TextTokenizer.load(bpe.save(tmp_path / "tok" / "tokenizer.json"))
    assert encode_to_cache(text, reloaded, tmp_path) == path
    assert calls == []


def test_cache_key_changes_with_text_or_tokenizer(
    bpe: TextTokenizer, shakespeare: list[Document], tmp_path: Path
) -> None:
    text = shakespeare[1].text
    base = encode_to_cache(text, bpe, tmp_path)
    assert encode_to_cache(text + ".", bpe, tmp_path) != base
    other = TextTokenizer.train("bpe", [text], vocab_size=300)
    assert encode_to_cache(text, other, tmp_path) != base
    char = TextTokenizer.train("char", [text])
    assert encode_to_cache(text, char, tmp_path) != base
    assert len(list(tmp_path.glob("*.bin"))) == 4


def test_large_vocab_uses_uint32(tmp_path: Path) -> None:
    text = "".join(chr(c) for c in range(0x20000, 0x20000 + 66_000))  # > 65536 distinct chars
    tok = TextTokenizer.train("char", [text[:66_000]])
    assert tok.vocab_size > 2**16
    tokens = open_tokens(encode_to_cache(text[:1000], tok, tmp_path))
    assert tokens.dtype == np.uint32 and tok.decode(tokens.tolist()) == text[:1000]


def test_open_tokens_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a token cache file"):
        open_tokens(tmp_path / "x.bin")
    with pytest.raises(DataError, match=r"not found"):
        open_tokens(tmp_path / "tokens-abc.uint16.bin")
    with pytest.raises(DataError, match=r"empty text"):
        encode_to_cache("", TextTokenizer.train("char", ["a"]), tmp_path)


# --------------------------------------------------------------------------- batches
def test_window_sampler_shapes_and_shift() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = WindowSampler(tokens, block_size=16, batch_size=4, seed=0).batch(0)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # consecutive ids: each window is a contiguous slice


def test_window_sampler_depends_only_on_seed_and_step() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    run = WindowSampler(tokens, 8, 4, seed=7)
    uninterrupted = [run.batch(step) for step in range(6)]
    resumed = WindowSampler(tokens, 8, 4, seed=7)  # a new process resuming at step 3
    for step in (5, 3, 4):
        x, y = resumed.batch(step)
        assert torch.equal(x, uninterrupted[step][0]) and torch.equal(y, uninterrupted[step][1])
    assert not torch.equal(uninterrupted[0][0], uninterrupted[1][0])
    assert not torch.equal(WindowSampler(tokens, 8, 4, seed=8).batch(0)[0], uninterrupted[0][0])


def test_window_sampler_reaches_last_token() -> None:
    tokens = np.arange(10, dtype=np.uint16)
    x, y = WindowSampler(tokens, block_size=9, batch_size=3, seed=0).batch(0)
    assert x[0].tolist() == list(range(9)) and y[0].tolist() == list(range(1, 10))


def test_eval_batches_cover_tokens_in_order(tmp_path: Path) -> None:
    tokens = np.arange(101, dtype=np.uint16)
    batches = list(eval_batches(tokens, block_size=10, batch_size=3))
    assert [x.shape[0] for x, _ in batches] == [3, 3, 3, 1]
    ys = torch.cat([y for _, y in batches]).flatten().tolist()
    assert ys == list(range(1, 101))  # every target exactly once, in order
    capped = list(eval_batches(tokens, 10, 3, max_batches=1))
    assert len(capped) == 1 and capped[0][0][:, 0].tolist() == [0, 40, 90]
    assert [x.tolist() for x, _ in eval_batches(tokens, 10, 3)] == [x.tolist() for x, _ in batches]


def test_block_size_too_long(tmp_path: Path) -> None:
    tokens = np.arange(50, dtype=np.uint16)
    with pytest.raises(DataError, match=r"block_size 64 .*valid split has 50 tokens.*smaller"):
        list(eval_batches(tokens, 64, 2))
    with pytest.raises(DataError, match=r"block_size 50 .*train split has 50 tokens"):
        WindowSampler(tokens, 50, 2, seed=0)


def test_end_to_end_on_memmap(shakespeare: list[Document], tmp_path: Path) -> None:
    train, valid = split_corpus(shakespeare, 0.1, by="tail", seed=0)
    tok = TextTokenizer.train("char", [train])
    tokens = open_tokens(encode_to_cache(train, tok, tmp_path / "cache"))
    x, y = WindowSampler(tokens, 32, 2, seed=0).batch(10)
    assert tok.decode(x[0].tolist())[1:] == tok.decode(y[0].tolist())[:-1]
    valid_tokens = open_tokens(encode_to_cache(valid, tok, tmp_path / "cache"))
    assert sum(x.numel() for x, _ in eval_batches(valid_tokens, 32, 4)) <= len(valid_tokens)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_a_long_text_encodes_to_the_same_ids_a_chunk_at_a_time(kind: str) -> None:
    """encode_array (what the token cache uses: one chunk's records alive at once) gives the
    very ids of encode, across chunk boundaries and end-of-text markers."""
    rng = np.random.default_rng(0)
    words = ["thou", "art", "the", "king", "\n", "ROMEO.", "Juliet,", "  ", "o'er"]
    text = " ".join(rng.choice(words, 40_000))  # about 160 k characters: several chunks
    text = text[:70_000] + END_OF_TEXT + text[70_000:]
    tokenizer = TextTokenizer.train(kind, [text], 400)
    ids = tokenizer.encode_array(text, np.uint16)
    assert ids.dtype == np.uint16
    assert ids.tolist() == tokenizer.encode(text)
