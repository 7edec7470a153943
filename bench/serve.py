"""Serving: throughput, latency and memory of ``tensorsmith serve`` under load from another process.

The server runs as ``tensorsmith serve`` (one worker, cores / workers torch threads) on
127.0.0.1; this process is the load (asyncio + httpx, N concurrent clients).

- Windsor housing MLP (examples/windsor_housing/mlp.yaml): 32 concurrent clients, 10,000
  requests of one row. Errors, requests/s, p50/p99 latency; the server's resident memory after
  the first 1,000 requests and after all 10,000 (a leak would grow it).
- genre transformer (examples/shakespeare_genre/transformer.yaml): 64 concurrent clients, one
  passage per request; the same server with batching (default --max-batch-size 32) and with
  --max-batch-size 1, measured in the same run.
- Shakespeare GPT, small configuration of bench/lm.py (6 layers, 6 heads, width 384, context
  256): 16 concurrent streams of 128 tokens against one stream alone; aggregate tokens/s and
  time to first token. Weights come from a short training run: speed does not depend on them.

Models are trained into ``--store`` when they are not there yet (reused on the next run).

    python bench/serve.py [--store DIR] [--requests 10000] [--genre-requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console

import tensorsmith
from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOUSE = {"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "airco": "no",
         "driveway": "yes", "recroom": "no", "fullbase": "yes", "gashw": "no",
         "garagepl": 1, "prefarea": "no"}  # fmt: skip
SMALL_GPT = [
    "name=shakespeare-gpt-small", "model.n_layer=6", "model.n_head=6", "model.n_embd=384",
    "model.block_size=256", "train.max_steps=10", "train.batch_size=4", "train.eval_every=10",
    "train.eval_batches=2", "train.checkpoint_every=10", "evaluate.samples=0",
]  # fmt: skip
MODELS: dict[str, tuple[Path, list[str]]] = {
    "windsor-housing-mlp": (EXAMPLES / "windsor_housing" / "mlp.yaml", []),
    "shakespeare-genre-transformer": (
        EXAMPLES / "shakespeare_genre" / "transformer.yaml",
        ["train.epochs=1"],
    ),
    "shakespeare-gpt-small": (EXAMPLES / "shakespeare_gpt" / "recipe.yaml", SMALL_GPT),
}


def ensure_models(store: Path) -> None:
    for name, (recipe, overrides) in MODELS.items():
        if not (store / name).is_dir():
            print(f"training {name} …", flush=True)
            tensorsmith.train(recipe, overrides, store=store, console=Console(file=io.StringIO()))


# ----------------------------------------------------------------------------- the server


class Served:
    """``tensorsmith serve MODELS --port P [flags]`` as a child process."""

    def __init__(self, store: Path, models: list[str], threads: int, *flags: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TENSORSMITH_STORE": str(store)}
        cmd = [sys.executable, "-m", "tensorsmith.cli", "serve", *models,
               "--port", str(self.port), "--threads", str(threads), *flags]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {' '.join(cmd)}")
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------- load


async def load(
    url: str, path: str, body: Callable[[int], dict[str, Any]], n: int, clients: int
) -> dict[str, float]:
    """``n`` POSTs from ``clients`` concurrent clients: requests/s, p50/p99 (ms), errors."""
    latencies: list[float] = []
    errors = 0
    said: list[str] = []  # the first errors, as the server answered them
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal errors
            for i in counter:
                start = time.perf_counter()
                try:
                    r = await client.post(path, json=body(i))
                    ok = r.status_code == 200
                    why = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                if not ok and len(said) < 3:
                    said.append(why)
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    latencies.sort()
    for why in said:
        print(f"  error: {why}", flush=True)
    return {
        "requests": n,
        "errors": errors,
        "seconds": seconds,
        "rps": n / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def stream(client: httpx.AsyncClient, seed: int, tokens: int) -> tuple[float, int, float]:
    """One streamed completion: (time to first token, tokens, seconds)."""
    body = {"model": "shakespeare-gpt-small", "prompt": "ROMEO.\n", "max_tokens": tokens,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    first, count = 0.0, 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if not first:
                first = time.perf_counter() - start
            if '"usage"' in line and '"completion_tokens"' in line:
                count = int(line.split('"completion_tokens": ')[1].split(",")[0])
    return first, count, time.perf_counter() - start


async def streams(url: str, n: int, tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        done = await asyncio.gather(*(stream(client, i, tokens) for i in range(n)))
        wall = time.perf_counter() - start
    total = sum(d[1] for d in done)
    return {
        "streams": n,
        "tokens": total,
        "tokens_per_s": total / wall,
        "ttft_ms": 1000 * statistics.median(d[0] for d in done),
        "ttft_max_ms": 1000 * max(d[0] for d in done),
    }


# ----------------------------------------------------------------------------- runs


def windsor(store: Path, n: int, threads: int) -> dict[str, Any]:
    server = Served(store, ["windsor-housing-mlp"], threads)
    try:
        path = "/v1/models/windsor-housing-mlp/predict"

        def row(i: int) -> dict[str, Any]:
            return {"rows": [{**HOUSE, "lotsize": 3000 + i % 5000}]}

        first = asyncio.run(load(server.url, path, row, 1000, 32))
        after_first = server.rss_mib()
        rest = asyncio.run(load(server.url, path, row, n - 1000, 32))
        after_all = server.rss_mib()
    finally:
        server.stop()
    seconds = first["seconds"] + rest["seconds"]
    both = [first, rest]
    return {
        "requests": n,
        "errors": first["errors"] + rest["errors"],
        "rps": n / seconds,
        "p50_ms": max(r["p50_ms"] for r in both),
        "p99_ms": max(r["p99_ms"] for r in both),
        "rss_1000": after_first,
        "rss_all": after_all,
    }


def genre(store: Path, n: int, threads: int) -> dict[str, dict[str, float]]:
    passages = pd.read_csv(EXAMPLES / "shakespeare_genre" / "passages.csv")["text"].tolist()
    path = "/v1/models/shakespeare-genre-transformer/predict"
    out = {}
    for label, flags in (("batched", []), ("batch 1", ["--max-batch-size", "1"])):
        server = Served(store, ["shakespeare-genre-transformer"], threads, *flags)
        try:
            asyncio.run(load(server.url, path, lambda i: {"texts": [passages[i]]}, 128, 64))
            out[label] = asyncio.run(
                load(server.url, path, lambda i: {"texts": [passages[i % len(passages)]]}, n, 64)
            )
        finally:
            server.stop()
    return out


def gpt(store: Path, tokens: int, n: int, threads: int) -> dict[str, dict[str, float]]:
    server = Served(store, ["shakespeare-gpt-small"], threads)
    try:
        asyncio.run(streams(server.url, 1, 8))  # warm
        single = [asyncio.run(streams(server.url, 1, tokens)) for _ in range(3)]
        many = [asyncio.run(streams(server.url, n, tokens)) for _ in range(2)]
    finally:
        server.stop()
    middle = statistics.median(r["tokens_per_s"] for r in single)
    return {
        "1 stream": min(single, key=lambda r: abs(r["tokens_per_s"] - middle)),
        f"{n} streams": max(many, key=lambda r: r["tokens_per_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--genre-requests", type=int, default=1500)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="the server's torch threads (1: on 2 cores shared with the load and other jobs, "
        "2 intra-op threads oversubscribe them)",
    )  # fmt: skip
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ensure_models(store)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"server --threads {args.threads}; store {store}\n", flush=True)  # fmt: skip

    w = windsor(store, args.requests, args.threads)
    print("## Windsor housing MLP: 32 clients, one row per request")
    after = f"after {w['requests']:,}"
    print(f"| requests | errors | requests/s | p50 | p99 | RSS after 1,000 | {after} |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {w['requests']:,} | {w['errors']} | {w['rps']:.0f} | {w['p50_ms']:.1f} ms | "
        f"{w['p99_ms']:.1f} ms | {w['rss_1000']:.0f} MiB | {w['rss_all']:.0f} MiB "
        f"({(w['rss_all'] / w['rss_1000'] - 1):+.1%}) |\n",
        flush=True,
    )

    g = genre(store, args.genre_requests, args.threads)
    print("## genre transformer: 64 clients, one passage per request")
    print("| server | requests | errors | requests/s | p50 | p99 |")
    print("|---|---|---|---|---|---|")
    for label, r in g.items():
        print(
            f"| {label} | {r['requests']:,} | {r['errors']} | {r['rps']:.1f} | "
            f"{r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms |"
        )
    print(f"batching / batch 1: {g['batched']['rps'] / g['batch 1']['rps']:.2f}x\n", flush=True)

    s = gpt(store, args.tokens, args.streams, args.threads)
    print(f"## Shakespeare GPT small: streams of {args.tokens} tokens")
    print("| streams | tokens | aggregate tokens/s | time to first token (median / max) |")
    print("|---|---|---|---|")
    for r in s.values():
        print(
            f"| {r['streams']} | {r['tokens']} | {r['tokens_per_s']:.0f} | "
            f"{r['ttft_ms']:.0f} / {r['ttft_max_ms']:.0f} ms |"
        )
    one, many = s["1 stream"], s[f"{args.streams} streams"]
    print(f"{args.streams} streams / 1 stream: {many['tokens_per_s'] / one['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
