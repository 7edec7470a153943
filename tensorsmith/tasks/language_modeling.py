"""``task: language-modeling``: a corpus, a tokenizer trained on its train text, next-token loss.

The corpus is split into train and valid text, the tokenizer is trained on the train text only
and saved as ``tokenizer.json``, each text is encoded once into a memory-mapped token file (a
cache keyed by content), and training draws random windows of ``block_size + 1`` tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from tensorsmith.data.fingerprint import digest_text
from tensorsmith.data.loading import StepFeed, Windows
from tensorsmith.data.text import load_corpus, resolve_sources, split_corpus
from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.data.tokens import check_length, encode_to_cache, eval_batches, open_tokens
from tensorsmith.errors import DataError
from tensorsmith.recipe import CorpusData, GPTSpec, LanguageModelingRecipe, Recipe, StepTrain
from tensorsmith.tasks.base import Batch, LossOf, Outputs, Prepared, Task, Workload
from tensorsmith.tasks.files import read_json_file
from tensorsmith.tasks.generation import (
    SINGLE_THREAD_WIDTH,
    GenerationNotes,
    check_options,
    generation_options,
    single_threaded,
    text_pieces,
)

__all__ = ["LanguageModelingTask", "TokenSplit"]

SAMPLE_BYTES = 1 << 20  # the planner encodes this much of a corpus to learn tokens per byte
WHOLE_BYTES = 64 << 20  # a corpus up to this size is read whole: its tokenizer as in training


class TokenSplit:
    """Token ids of an evaluation text, in non-overlapping windows of ``block_size``."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, name: str) -> None:
        check_length(len(tokens), block_size, batch_size, name)
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size

    def batches(self, limit: int | None = None) -> Iterable[Batch]:
        return eval_batches(self.tokens, self.block_size, self.batch_size, limit)


def _token_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) next tokens, in nats per token."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction
    )


class LanguageModelingTask(Task):
    name = "language-modeling"
    metric_names = LanguageModelingRecipe.metric_names
    key_metric = LanguageModelingRecipe.key_metric
    loop_metrics = ("perplexity",)
    verbs = ("generate",)

    def __init__(self, recipe: Recipe, tokenizer: TextTokenizer | None = None) -> None:
        super().__init__(recipe)
        self.tokenizer_ = tokenizer
        self.cache: Path | None = None
        self._warnings: list[str] = []

    @property
    def data_spec(self) -> CorpusData:
        assert isinstance(self.recipe.data, CorpusData)
        return self.recipe.data

    @property
    def train_spec(self) -> StepTrain:
        assert isinstance(self.recipe.train, StepTrain)
        return self.recipe.train

    @property
    def tokenizer(self) -> TextTokenizer:
        if self.tokenizer_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.tokenizer_

    @property
    def block_size(self) -> int:
        return int(self.recipe.model.block_size)  # type: ignore[attr-defined]

    @classmethod
    def from_checkpoint(cls, recipe: Recipe, folder: Path) -> LanguageModelingTask:
        """A task fitted by a Hugging Face checkpoint: its own tokenizer.json."""
        return cls(recipe, TextTokenizer.load(folder / "tokenizer.json"))

    @property
    def scores_are_logits(self) -> bool:
        return True  # (B, T, V) next-token logits

    @property
    def eval_limit(self) -> int | None:
        return self.train_spec.eval_batches

    # ------------------------------------------------------------------ data

    def data_files(self) -> list[Path]:
        return resolve_sources(self.data_spec.source, self.recipe.base_dir)

    def read_splits(self) -> dict[str, str]:
        spec = self.data_spec
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            docs = load_corpus(spec.source, self.recipe.base_dir, spec.text_column)
        self._warnings = [str(w.message) for w in caught]
        train, valid = split_corpus(docs, spec.split.valid, spec.valid_by, spec.split.seed)
        return {"train": train, "valid": valid}

    def prepare(self, cache: Path, console: Console) -> Prepared:
        self.cache = cache / "tokens"
        texts = self.read_splits()
        spec = self.data_spec
        if isinstance(self.parent_, LanguageModelingTask):  # a fine-tune reads as its parent
            self.tokenizer_ = self.parent_.tokenizer
            unknown = self.tokenizer.unknown_chars(texts["train"])
            if unknown:
                shown = ", ".join(repr(c) for c in sorted(unknown)[:10])
                self._warnings.append(
                    f"characters the parent's tokenizer never saw become its unknown token: {shown}"
                )
        else:
            self.tokenizer_ = TextTokenizer.train(
                spec.tokenizer.kind, [texts["train"]], spec.tokenizer.vocab_size
            )
        train_tokens = self._tokens(texts["train"])
        batch = self.train_spec.batch_size
        check_length(len(train_tokens), self.block_size, batch, "train")
        feed = StepFeed(
            Windows(train_tokens, self.block_size), batch, self.train_spec.seed, self.block_size
        )
        valid = self.eval_split(texts["valid"])
        sizes = {"train": len(train_tokens), "valid": len(valid.tokens)}
        notes = [f"warning: {w}" for w in self._warnings]
        kind = "the parent's" if self.parent_ is not None else spec.tokenizer.kind
        notes.append(
            f"vocabulary {self.tokenizer.vocab_size} ({kind}), "
            f"{sizes['train']:,} train and {sizes['valid']:,} valid tokens"
        )
        dims = {"vocab_size": self.tokenizer.vocab_size}
        digests = {k: digest_text(v) for k, v in texts.items()}
        return Prepared(feed, {"valid": valid}, dims, sizes, "tokens", notes, digests)

    def workload(self, cache: Path, console: Console, tokens: int | None = None) -> Workload:
        """Sized from the corpus's bytes: the tokenizer gives the vocabulary and, on a MiB of
        text, tokens per byte. A corpus up to 64 MiB is read and split as training reads it, so
        its tokenizer (and so the model) is the one training builds; a larger one is sampled
        (its first MiB) and its vocabulary estimated. Training batches are windows of random
        token ids: a step's cost does not depend on which ids they are. ``tokens`` (a training
        budget) stands in for a corpus that does not exist."""
        spec, block, batch = self.data_spec, self.block_size, self.train_spec.batch_size
        try:
            paths = resolve_sources(spec.source, self.recipe.base_dir)
        except DataError as exc:
            if tokens is None:
                raise DataError(f"{exc}; or plan without data: --tokens N (a budget)") from None
            paths = []
        total = sum(p.stat().st_size for p in paths)
        whole = bool(paths) and total <= WHOLE_BYTES
        sample = self.read_splits()["train"] if whole else _sample_text(paths)
        tokenizer = self._sample_tokenizer(sample)
        train_share = 1.0 if whole else 1 - spec.split.valid
        total = len(sample.encode("utf-8")) if whole else total
        vocab = tokenizer.vocab_size if tokenizer else spec.tokenizer.vocab_size
        if sample and tokenizer:
            head = sample[:SAMPLE_BYTES]
            per_byte = len(tokenizer.encode_array(head)) / len(head.encode("utf-8"))
            train = int(total * per_byte * train_share)
            how = "the train text" if whole else "a sample: the vocabulary is estimated"
            note = f"{total:,} bytes of {how}; {per_byte:.3f} tokens per byte on a MiB of it"
        else:
            train, note = int(tokens or 0), "no corpus: the --tokens budget stands in for it"
        rng = np.random.default_rng(0)
        fake = rng.integers(0, vocab, max(4 * batch * (block + 1), 4096))
        feed = StepFeed(Windows(fake, block), batch, self.train_spec.seed, block)
        dims = {"vocab_size": vocab}
        return Workload(dims, train, "tokens", feed, 0, [note], estimated=True)

    def _sample_tokenizer(self, sample: str) -> TextTokenizer | None:
        spec = self.data_spec.tokenizer
        if isinstance(self.parent_, LanguageModelingTask):
            return self.parent_.tokenizer
        if sample:
            return TextTokenizer.train(spec.kind, [sample], spec.vocab_size)
        if spec.kind == "char":
            raise DataError(
                "a char tokenizer's vocabulary comes from the text, and there is none: plan "
                "with the corpus, or with data.tokenizer.kind: bpe and its vocab_size"
            )
        return None  # the recipe's vocab_size

    def _tokens(self, text: str) -> np.ndarray:
        if self.cache is None:
            return np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        return open_tokens(encode_to_cache(text, self.tokenizer, self.cache))

    def read_file(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"text file {path} does not exist") from None
        except IsADirectoryError:
            raise DataError(f"{path} is a directory; give a UTF-8 text file") from None
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None

    def eval_split(self, raw: str) -> TokenSplit:
        return TokenSplit(self._tokens(raw), self.block_size, self.train_spec.batch_size, "valid")

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "tokenizer.json": self.tokenizer.to_json(),
            "preprocess.json": {
                "tokenizer": "tokenizer.json",
                "kind": self.data_spec.tokenizer.kind,
                "vocab_size": self.tokenizer.vocab_size,
                "block_size": self.block_size,
            },
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> LanguageModelingTask:
        read_json_file(folder / "preprocess.json")
        return cls(recipe, TextTokenizer.load(folder / "tokenizer.json"))

    # ------------------------------------------------------------------ training and evaluation

    def loss(self) -> LossOf:
        return lambda module, batch: _token_loss(module(batch[0]), batch[1])

    def batch_outputs(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss_sum": _token_loss(module(x), y, "sum"), "count": torch.tensor(y.numel())}

    def outputs(self, arrays: dict[str, np.ndarray], loss: float) -> Outputs:
        return Outputs(loss)

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        cfg = self.recipe.model
        sizes = run.get("tokens", {})
        shape = (
            f"- GPT with {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, "
            f"context {cfg.block_size}"
            if isinstance(cfg, GPTSpec)
            else f"- {cfg.config.get('model_type', 'Hugging Face')} decoder from "  # type: ignore[attr-defined]
            f"{cfg.checkpoint}, windows of {self.block_size}"  # type: ignore[attr-defined]
        )
        return [
            shape,
            f"- tokenizer: {self.data_spec.tokenizer.kind}, vocabulary {self.tokenizer.vocab_size}",
            f"- data: {self.data_spec.source}; {sizes.get('train', 0):,} train tokens, "
            f"{sizes.get('valid', 0):,} valid tokens",
        ]

    def loss_label(self) -> str:
        return "cross-entropy, nats per token"

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        n = int(getattr(self.recipe.evaluate, "samples", 0))
        if not n:
            return []
        lines = ["## Samples (temperature 0.8, top-k 40)", ""]
        for i in range(n):
            text = "".join(self.stream(module, "", max_new_tokens=200, top_k=40, seed=i))
            lines += [f"### sample {i + 1}", "", "```", text.replace("```", "'''"), "```", ""]
        return lines

    def usage(self, ref: str) -> str:
        return f'tensorsmith generate {ref} --prompt "..." --stream'

    # ------------------------------------------------------------------ inference

    def stream(self, module: nn.Module, prompt: str, **options: Any) -> Iterator[str]:
        """The new text piece by piece; ends at ``max_new_tokens`` or a stop string.

        Options: ``max_new_tokens`` (200), ``temperature`` (0.8, 0 = greedy), ``top_k``,
        ``top_p``, ``seed``, ``stop`` (strings), ``notes`` (a GenerationNotes to fill). They are
        checked, and ``notes`` filled, before the first piece is asked for.
        """
        opts = generation_options(options)
        check_options(opts["max_new_tokens"], opts["temperature"], opts["top_k"], opts["top_p"])
        notes = opts["notes"] if opts["notes"] is not None else GenerationNotes()
        ids = self.prompt_ids(prompt, notes)
        seed = opts["seed"]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self._pieces(module, ids, opts, generator)

    def input_schema(self) -> dict[str, Any]:
        return {"kind": "prompt", "context": self.block_size}

    def prompt_ids(self, prompt: str, notes: GenerationNotes) -> list[int]:
        """The prompt's token ids (an empty prompt starts a document), left-truncated to the
        context; ``notes`` says what was changed."""
        unknown = self.tokenizer.unknown_chars(prompt)
        if unknown:
            shown = ", ".join(repr(c) for c in sorted(unknown)[:10])
            notes.messages.append(
                f"prompt characters not in the vocabulary were mapped to the unknown token: {shown}"
            )
        ids = self.tokenizer.encode(prompt) if prompt else []
        if not ids:
            ids = [self.tokenizer.eot_id]  # an empty prompt starts a new document
        if len(ids) > self.block_size:
            notes.messages.append(
                f"the prompt is {len(ids)} tokens, longer than the context of "
                f"{self.block_size}; it was left-truncated to its last {self.block_size} tokens"
            )
            ids = ids[-self.block_size :]
        return ids

    def _pieces(
        self,
        module: nn.Module,
        ids: list[int],
        opts: dict[str, Any],
        generator: torch.Generator | None,
    ) -> Iterator[str]:
        if opts["max_new_tokens"] == 0:
            return
        idx = torch.tensor([ids], dtype=torch.long)
        tokens = module.generate_tokens(  # type: ignore[operator]
            idx,
            opts["max_new_tokens"],
            opts["temperature"],
            opts["top_k"],
            opts["top_p"],
            generator,
        )
        narrow = (
            int(getattr(self.recipe.model, "n_embd", SINGLE_THREAD_WIDTH + 1))
            <= SINGLE_THREAD_WIDTH
        )
        yield from text_pieces(self.tokenizer, single_threaded(tokens, narrow), opts["stop"])


def _sample_text(paths: list[Path]) -> str:
    """The first MiB of a corpus's files (whole characters), in file order."""
    pieces, left = [], SAMPLE_BYTES
    for path in paths:
        if left <= 0:
            break
        with path.open("rb") as f:
            raw = f.read(left)
        pieces.append(raw.decode("utf-8", errors="ignore"))
        left -= len(raw)
    return "".join(pieces)
