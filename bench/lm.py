"""Language-model benchmark: quality, training throughput, MFU and generation speed.

Character-level Shakespeare (every play and poem of examples/shakespeare_gpt/plays joined, the
last 10% of the characters as validation). Our figures come from tensorsmith's own Trainer,
GPT, token cache and window sampler; the baseline is a straightforward fp32 PyTorch GPT with a
plain loop, run in the same process on the same batches.

    python bench/lm.py                    # everything (about 10 minutes on 2 cores)
    python bench/lm.py --skip-quality     # throughput, MFU and generation only
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import tensorsmith
from tensorsmith.data.loading import StepFeed, Windows
from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.models.gpt import GPT, GPTConfig
from tensorsmith.recipe import parse_recipe
from tensorsmith.tasks.generation import single_threaded, text_pieces
from tensorsmith.training.hardware import cpu_name
from tensorsmith.training.mfu import measure_matmul_flops
from tensorsmith.training.state import Callback, TrainControl, TrainState
from tensorsmith.training.trainer import Trainer

PLAYS = Path(__file__).resolve().parent.parent / "examples" / "shakespeare_gpt" / "plays"
CONFIGS = {
    "tiny": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch": 12},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch": 64},
}


# ----------------------------------------------------------------------------- the baseline


class _Block(nn.Module):
    """A straightforward pre-LN GPT block, as one would write it from the paper."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class BaselineGPT(nn.Module):
    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.Sequential(*(_Block(d, n_head) for _ in range(n_layer)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        return self.head(self.ln(self.blocks(self.wte(idx) + self.wpe(pos))))


def baseline_tokens_per_second(
    vocab: int, cfg: dict[str, int], feed: StepFeed, steps: int, warmup: int
) -> float:
    torch.manual_seed(0)
    model = BaselineGPT(vocab, cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    start = 0.0
    batches = feed.stream(0)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * cfg["batch"] * cfg["block_size"] / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- ours


class StepClock(Callback):
    """Times each optimizer step, so warm-up (and compilation) can be left out."""

    wants_steps = True

    def on_fit_start(self, state: TrainState, control: TrainControl) -> None:
        self.times: list[float] = [time.perf_counter()]

    def on_step_end(self, state: TrainState, control: TrainControl, loss: torch.Tensor) -> None:
        self.times.append(time.perf_counter())


def ours_tokens_per_second(
    vocab: int,
    cfg: dict[str, int],
    feed: StepFeed,
    steps: int,
    warmup: int,
    precision: str,
    compile_: bool,
    bias: bool,
) -> float:
    recipe = parse_recipe(
        {
            "name": "bench",
            "task": "language-modeling",
            "data": {"source": "unused"},
            "model": {
                "arch": "gpt",
                "bias": bias,
                **{k: v for k, v in cfg.items() if k != "batch"},
            },
            "train": {
                "max_steps": warmup + steps,
                "batch_size": cfg["batch"],
                "precision": precision,
                "compile": compile_,
                "eval_every": warmup + steps,
            },
        }
    )
    torch.manual_seed(0)
    model = GPT.from_spec(recipe.model, {"vocab_size": vocab})
    clock = StepClock()

    def loss_of(m: nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits = m(b[0])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[1].reshape(-1))

    trainer = Trainer(recipe.train, [clock])
    trainer.fit(model, feed, loss_of, None, model.optim_groups(0.1))
    elapsed = clock.times[-1] - clock.times[warmup]
    return steps * cfg["batch"] * cfg["block_size"] / elapsed


# ----------------------------------------------------------------------------- generation


def gpt(vocab: int, cfg: dict[str, int], bias: bool = True) -> GPT:
    shape = {k: cfg[k] for k in ("block_size", "n_layer", "n_head", "n_embd")}
    return GPT(GPTConfig(vocab_size=vocab, bias=bias, **shape))


def generation(vocab: int) -> tuple[float, float, bool]:
    """One thread: a cached step is a handful of (1 × 384) products, too small to split."""
    torch.set_num_threads(1)
    cfg = CONFIGS["small"]
    torch.manual_seed(0)
    model = gpt(vocab, cfg).eval()
    prompt = torch.randint(0, vocab, (1, 8))
    times, outs = [], []
    for use_cache in (True, False):
        start = time.perf_counter()
        outs.append(list(model.generate_tokens(prompt, 256, greedy=True, use_cache=use_cache)))
        times.append(time.perf_counter() - start)
    return times[0], times[1], outs[0] == outs[1]


def generation_length(tok: TextTokenizer) -> list[tuple[int, float]]:
    """Tokens per second of text generation (sampling, decoding, stop-string scan) by length,
    through the same path as `tensorsmith generate`: it must stay flat as the text grows."""
    cfg = CONFIGS["tiny"]
    torch.manual_seed(0)
    model = gpt(tok.vocab_size, cfg).eval()
    prompt = torch.tensor([tok.encode("ROMEO.")])
    rates = []
    for n in (500, 2000, 8000):
        tokens = model.generate_tokens(prompt, n, 0.8, 40, None, torch.Generator().manual_seed(0))
        start = time.perf_counter()
        text = "".join(text_pieces(tok, single_threaded(tokens, True), ["<never>"]))
        rates.append((n, n / (time.perf_counter() - start)))
        assert text
    return rates


# ----------------------------------------------------------------------------- main


def corpus(folder: Path) -> Path:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(PLAYS.glob("*.txt")))
    path = folder / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="language-model benchmark")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--tiny-steps", type=int, default=200)
    parser.add_argument("--small-steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument(
        "--generation-only", action="store_true", help="only the generation measurements"
    )
    args = parser.parse_args()
    if args.generation_only:
        report_generation(char_tokenizer())
        return
    threads = torch.get_num_threads()
    peaks = {p: measure_matmul_flops(p) for p in ("fp32", "bf16")}
    print(f"CPU: {cpu_name()}")
    print(
        f"matmul peak ({threads} threads): fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = corpus(Path(tmp))
        text = path.read_text(encoding="utf-8")
        cut = len(text) - len(text) // 10
        tok = TextTokenizer.train("char", [text[:cut]])
        ids = torch.tensor(tok.encode(text[:cut]), dtype=torch.int16).numpy()
        vocab = tok.vocab_size
        if not args.skip_quality:
            recipe = {
                "name": "bench-tiny",
                "task": "language-modeling",
                "data": {
                    "source": str(path),
                    "tokenizer": {"kind": "char"},
                    "split": {"valid": 0.1},
                    "valid_by": "tail",
                },
                "model": {
                    "arch": "gpt",
                    "n_layer": 4,
                    "n_head": 4,
                    "n_embd": 128,
                    "block_size": 64,
                    "dropout": 0.0,
                    "bias": False,
                },
                "train": {
                    "max_steps": 2000,
                    "batch_size": 12,
                    "optimizer": {"name": "adamw", "lr": 1e-3},
                    "schedule": {"name": "cosine", "warmup_steps": 100, "min_lr": 1e-4},
                    "eval_every": 500,
                },
                "evaluate": {"samples": 1},
            }
            model = tensorsmith.train(
                recipe, store=Path(tmp) / "store", console=Console(file=io.StringIO())
            )
            loss = model.metrics["valid"]["loss"]
            print(
                f"quality: tiny, 2,000 steps: valid loss {loss:.3f} (goal ≤ 1.90), "
                f"{model.run['train_seconds']:.0f} s incl. evaluations"
            )
        rows = []
        for name, steps in (("tiny", args.tiny_steps), ("small", args.small_steps)):
            cfg = CONFIGS[name]
            feed = StepFeed(Windows(ids, cfg["block_size"]), cfg["batch"], 0, cfg["block_size"])
            warm = 5
            base = baseline_tokens_per_second(vocab, cfg, feed, max(steps // 3, 5), 2)
            # fp32 suits tiny's small matrices; small's are big enough for bf16 on AMX.
            # Biases (Linear and LayerNorm) are optional in our GPT; without them a step is
            # about 10% faster here, and quality is no worse (nanoGPT makes the same choice).
            if name == "tiny":
                variants = [("fp32", False, True), ("fp32", False, False), ("bf16", False, False)]
            else:
                variants = [("bf16", False, True), ("bf16", False, False)]
            if args.compile:
                variants.append((variants[0][0], True, False))
            for precision, compile_, bias in variants:
                flops = gpt(vocab, cfg, bias).flops_per_token()
                ours = ours_tokens_per_second(
                    vocab, cfg, feed, steps, warm, precision, compile_, bias
                )
                label = f"{precision}, fused AdamW" + (", torch.compile" if compile_ else "")
                label += "" if bias else ", no bias"
                rows.append(
                    (
                        name,
                        label,
                        ours,
                        base,
                        ours * flops / peaks["fp32"],
                        ours * flops / peaks["bf16"],
                    )
                )
                print(
                    f"  {name} {label}: {ours:,.0f} tok/s (baseline fp32 {base:,.0f})", flush=True
                )
    print()
    print(
        "| config | ours: precision | ours tok/s | baseline fp32 tok/s | ratio | "
        "MFU vs fp32 peak | MFU vs bf16 peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, precision, ours, base, mfu32, mfu16 in rows:
        print(
            f"| {name} | {precision} | {ours:,.0f} | {base:,.0f} | "
            f"{ours / base:.2f}x | {mfu32:.1%} | {mfu16:.1%} |"
        )
    report_generation(tok)


def char_tokenizer() -> TextTokenizer:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(PLAYS.glob("*.txt")))
    return TextTokenizer.train("char", [text[: len(text) - len(text) // 10]])


def report_generation(tok: TextTokenizer) -> None:
    vocab = tok.vocab_size
    cached, full, same = generation(vocab)
    print(
        f"\ngeneration, small model, 256 new tokens (greedy, 1 thread): KV cache {cached:.2f} s, "
        f"full recompute "
        f"{full:.2f} s, speed-up {full / cached:.1f}x (goal ≥ 5x), identical "
        f"tokens: {same}"
    )
    rates = generation_length(tok)
    shown = ", ".join(f"{n:,} tokens {rate:,.0f} tok/s" for n, rate in rates)
    print(
        f"generation speed by length, tiny model, sampling + decoding + stop scan (1 thread): "
        f"{shown}; {rates[-1][0]:,} vs {rates[0][0]:,}: {rates[-1][1] / rates[0][1]:.2f}x "
        "(goal ≥ 0.8x)"
    )


if __name__ == "__main__":
    main()
