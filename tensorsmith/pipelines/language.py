"""Language modeling: corpus → tokenizer → token cache → GPT pretraining → perplexity → store."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from tensorsmith.data.text import load_corpus, split_corpus
from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.data.tokens import WindowSampler, encode_to_cache, eval_batches, open_tokens
from tensorsmith.errors import DataError, RecipeError
from tensorsmith.evaluation.metrics import lm_metrics, validate_metrics
from tensorsmith.evaluation.plots import plot_learning_curves
from tensorsmith.evaluation.report import print_metrics
from tensorsmith.models import build_model
from tensorsmith.models.gpt import GPT
from tensorsmith.pipelines.common import (
    StoredModel,
    load_resume,
    make_callbacks,
    pick_device,
    run_info,
    write_artifact,
)
from tensorsmith.recipe import Recipe, recipe_to_yaml
from tensorsmith.training.mfu import peak_flops
from tensorsmith.training.trainer import Trainer

__all__ = ["GenerationNotes", "LanguageModel", "train_language"]


@dataclass
class GenerationNotes:
    """What generation changed about the request, said to the user (never silently)."""

    messages: list[str] = field(default_factory=list)


def _mean_loss(
    model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> float:
    total, count = 0.0, 0
    for x, y in batches:
        logits = model(x.to(device))
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += y.numel()
    return total / max(count, 1)


# A cached generation step multiplies one position by each weight matrix: up to this width the
# work is too small to split, and handing it between threads costs more than it saves
# (measured: 6x vs 1.1x cache speed-up for the 384-wide benchmark model, 1 vs 2 threads).
SINGLE_THREAD_WIDTH = 512


def _single_threaded(tokens: Iterator[int], enabled: bool) -> Iterator[int]:
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


class LanguageModel(StoredModel):
    """A trained GPT with its tokenizer: ``generate``, ``stream``, ``evaluate``."""

    module: GPT

    def __init__(
        self,
        path: Path,
        recipe: Recipe,
        module: GPT,
        tokenizer: TextTokenizer,
        run: dict[str, Any],
        metrics: dict[str, Any],
    ) -> None:
        super().__init__(path, recipe, module, run, metrics)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path) -> LanguageModel:
        recipe, module, run, metrics = cls._read(path)
        assert isinstance(module, GPT)
        tokenizer = TextTokenizer.load(path / "tokenizer.json")
        return cls(path, recipe, module, tokenizer, run, metrics)

    def evaluate(self, text: str, max_batches: int | None = None) -> dict[str, float]:
        """Loss (nats per token) and perplexity of ``text`` under the model."""
        tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        block = self.module.config.block_size
        batches = eval_batches(
            tokens, block, self.recipe.train.batch_size_int, max_batches, split="evaluation"
        )
        with torch.no_grad():
            return lm_metrics(_mean_loss(self.module, batches, torch.device("cpu")))

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
        notes: GenerationNotes | None = None,
    ) -> Iterator[str]:
        """The new text piece by piece; ends at ``max_new_tokens`` or a stop string.

        Arguments are checked and ``notes`` filled before the first piece is asked for.
        """
        if max_new_tokens < 0:
            raise RecipeError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise RecipeError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 1:
            raise RecipeError(f"top_k must be >= 1, got {top_k}")
        if temperature < 0:
            raise RecipeError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        notes = notes if notes is not None else GenerationNotes()
        unknown = self.tokenizer.unknown_chars(prompt)
        if unknown:
            shown = ", ".join(repr(c) for c in sorted(unknown)[:10])
            notes.messages.append(
                f"prompt characters not in the vocabulary were mapped to the unknown token: {shown}"
            )
        ids = self.tokenizer.encode(prompt) if prompt else []
        if not ids:
            ids = [self.tokenizer.eot_id]  # an empty prompt starts a new document
        block = self.module.config.block_size
        if len(ids) > block:
            notes.messages.append(
                f"the prompt is {len(ids)} tokens, longer than the context of "
                f"{block}; it was left-truncated to its last {block} tokens"
            )
            ids = ids[-block:]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self._pieces(ids, max_new_tokens, temperature, top_k, top_p, generator, stop)

    def _pieces(
        self,
        ids: list[int],
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        stop: list[str] | None,
    ) -> Iterator[str]:
        if max_new_tokens == 0:
            return
        idx = torch.tensor([ids], dtype=torch.long)
        out_ids: list[int] = []
        emitted = ""
        stops = [s for s in (stop or []) if s]
        tokens = self.module.generate_tokens(
            idx, max_new_tokens, temperature, top_k, top_p, generator
        )
        for token in _single_threaded(tokens, self.module.config.n_embd <= SINGLE_THREAD_WIDTH):
            out_ids.append(token)
            text = self.tokenizer.decode(out_ids)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence of byte-level BPE: wait for the rest
            for s in stops:
                cut = text.find(s)
                if cut >= 0:
                    if cut > len(emitted):
                        yield text[len(emitted) : cut]
                    return
            held = max((len(s) - 1 for s in stops), default=0)  # a stop string may be starting
            safe = len(text) - held
            if safe > len(emitted):
                yield text[len(emitted) : safe]
                emitted = text[:safe]
        text = self.tokenizer.decode(out_ids)
        if len(text) > len(emitted):
            yield text[len(emitted) :]

    def generate(self, prompt: str, max_new_tokens: int = 200, **kwargs: Any) -> str:
        """The new text as one string (see :meth:`stream` for the options)."""
        return "".join(self.stream(prompt, max_new_tokens, **kwargs))


def _corpus(recipe: Recipe, console: Console) -> tuple[str, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = load_corpus(recipe.data.source, recipe.base_dir, recipe.data.text_column)
    for w in caught:
        console.print(f"warning: {w.message}")
    valid = float(recipe.data.split.valid)
    if valid <= 0:
        raise RecipeError(
            "data.split.valid must be > 0 for language modeling: the valid text "
            "measures loss and perplexity"
        )
    return split_corpus(docs, valid, recipe.data.valid_by, recipe.data.split.seed)


def train_language(
    recipe: Recipe, root: Path, resume: bool, console: Console, started: float
) -> LanguageModel:
    validate_metrics(recipe.task, recipe.evaluate.metrics)
    checkpoint = load_resume(root, recipe, resume)
    spec, train = recipe.model, recipe.train
    if train.max_steps is None:
        raise RecipeError("language modeling trains in steps: set train.max_steps")
    train_text, valid_text = _corpus(recipe, console)
    kind = recipe.data.tokenizer.kind
    tokenizer = TextTokenizer.train(kind, [train_text], recipe.data.tokenizer.vocab_size)
    cache = root / ".cache" / "tokens"
    train_tokens = open_tokens(encode_to_cache(train_text, tokenizer, cache))
    valid_tokens = open_tokens(encode_to_cache(valid_text, tokenizer, cache))
    block, batch = spec.block_size, train.batch_size_int
    sampler = WindowSampler(train_tokens, block, batch, train.seed)
    next(eval_batches(valid_tokens, block, batch, 1))  # block_size longer than the valid text?
    dims = {"vocab_size": tokenizer.vocab_size}
    torch.manual_seed(train.seed)
    module = build_model(spec, dims)
    assert isinstance(module, GPT)
    device = pick_device()
    dev = torch.device(device)
    eval_limit = train.eval_batches

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss = _mean_loss(model, eval_batches(valid_tokens, block, batch, eval_limit), dev)
        return {"valid_loss": loss, "valid_perplexity": math.exp(min(loss, 700.0))}

    def loss_of(model: nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits = model(b[0])  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[1].reshape(-1))

    meta = {"recipe": recipe_to_yaml(recipe), "dims": dims}
    peak = peak_flops(device, "bf16" if train.precision == "bf16" else "fp32", root / ".cache")
    flops_per_token = module.flops_per_token()
    callbacks = make_callbacks(
        recipe, root, int(train.max_steps), "step", "tokens", meta, console, flops_per_token, peak
    )
    trainer = Trainer(train, callbacks, device=device, tokens_per_sample=block)
    console.print(
        f"{recipe.name}: {module.num_parameters():,} parameters, vocabulary "
        f"{tokenizer.vocab_size} ({kind}), {len(train_tokens):,} train and "
        f"{len(valid_tokens):,} valid tokens"
    )
    fit = trainer.fit(
        module,
        sampler,
        loss_of,
        evaluate,
        module.optim_groups(train.optimizer.weight_decay),
        checkpoint,
    )
    module = module.cpu().eval()
    with torch.no_grad():
        full = _mean_loss(module, eval_batches(valid_tokens, block, batch, None), dev)
    metrics = {"valid": lm_metrics(full, recipe.evaluate.metrics)}
    model = LanguageModel(Path("."), recipe, module, tokenizer, {}, metrics)
    samples = [
        model.generate("", 200, temperature=0.8, top_k=40, seed=i)
        for i in range(recipe.evaluate.samples)
    ]
    tokens_per_second = fit.samples * block / fit.train_seconds if fit.train_seconds else 0.0
    achieved = tokens_per_second * flops_per_token
    extra = {
        "dims": dims,
        "key_metric": "perplexity",
        "tokens_per_second": tokens_per_second,
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "mfu": achieved / peak if peak else None,
        "precision": train.precision,
        "tokens": {"train": len(train_tokens), "valid": len(valid_tokens)},
        "gate": None,
    }
    run = run_info(
        recipe,
        fit,
        time.perf_counter() - started,
        device,
        module.num_parameters(),
        float(flops_per_token * block),
        extra,
    )
    files = {
        "tokenizer.json": tokenizer.to_json(),
        "metrics.json": metrics,
        "preprocess.json": {
            "tokenizer": "tokenizer.json",
            "kind": kind,
            "vocab_size": tokenizer.vocab_size,
            "block_size": block,
        },
    }
    version, path = write_artifact(
        root,
        recipe,
        module,
        files,
        fit.history,
        run,
        (lambda folder: plot_learning_curves(fit.history, folder / "learning_curves.png"))
        if recipe.evaluate.plots
        else None,
        lambda v: _card(recipe, v, run, metrics, samples),
    )
    model.path, model.run = path, run
    print_metrics(metrics, console, title=f"{recipe.name}@{version}")
    mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "n/a"
    console.print(
        f"{tokens_per_second:,.0f} tokens/s, MFU {mfu} of {peak / 1e12:.2f} TFLOP/s "
        f"({train.precision}); saved {path}"
    )
    return model


def _card(
    recipe: Recipe, version: int, run: dict[str, Any], metrics: dict[str, Any], samples: list[str]
) -> str:
    cfg = recipe.model
    valid = metrics["valid"]
    lines = [
        f"# {recipe.name} (version {version})",
        "",
        f"- task: language modeling, GPT with {cfg.n_layer} layers, {cfg.n_head} heads, width "
        f"{cfg.n_embd}, context {cfg.block_size} ({run['parameters']:,} parameters)",
        f"- tokenizer: {recipe.data.tokenizer.kind}, vocabulary {run['dims']['vocab_size']}",
        f"- data: {recipe.data.source}; {run['tokens']['train']:,} train tokens, "
        f"{run['tokens']['valid']:,} valid tokens",
        f"- trained {run['steps']} steps in {run['train_seconds']:.1f} s, "
        f"{run['tokens_per_second']:,.0f} tokens/s ({recipe.train.precision})",
        "",
        "## Metrics (valid text)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in valid.items()),
        "",
        "## Samples (temperature 0.8, top-k 40)",
        "",
    ]
    for i, s in enumerate(samples, 1):
        lines += [f"### sample {i}", "", "```", s.replace("```", "'''"), "```", ""]
    lines += [
        "## Use",
        "",
        "```",
        f'tensorsmith generate {recipe.name}@{version} --prompt "..." --stream',
        "```",
        "",
    ]
    return "\n".join(lines)


def check_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"text file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
