"""Tiny trained models and a real uvicorn server on 127.0.0.1, for the serving tests.

``tiny_store`` trains three small models into a store (a house-price MLP on the Windsor data, a
char-level GPT on the poems, a text classifier on happy/gloomy words); ``running_server`` starts
uvicorn in a thread on a free port and stops it gracefully.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from rich.console import Console

import tensorsmith
from tensorsmith.serving.app import create_app
from tensorsmith.serving.config import ServeConfig
from tests import tiny
from tests.conftest import EXAMPLES

POEMS = Path(__file__).parent / "data" / "shakespeare"
HOUSES = ["lotsize", "bedrooms", "bathrms", "stories", "airco"]
HOUSE = {"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "airco": "no"}


def _train(recipe: dict[str, Any], folder: Path, store: Path) -> None:
    path = folder / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    tensorsmith.train(path, store=store, console=Console(file=io.StringIO()))


def tiny_store(folder: Path) -> Path:
    """``houses`` (regression), ``poet`` (language model), ``moods`` (text classification),
    ``shapes`` (image classification), ``waves`` (a forecast from windows of a series)."""
    store = folder / "store"
    shutil.copy(EXAMPLES / "windsor_housing" / "windsor_housing.csv", folder / "houses.csv")
    houses = {
        "name": "houses",
        "task": "regression",
        "data": {"source": "houses.csv", "target": "price", "features": HOUSES},
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 3, "batch_size": 64},
    }
    shutil.copytree(POEMS, folder / "corpus")
    poet = {
        "name": "poet",
        "task": "language-modeling",
        "data": {"source": "corpus/*.txt", "tokenizer": {"kind": "char"}, "split": {"valid": 0.1}},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16},
        "train": {"max_steps": 10, "batch_size": 4, "eval_every": 10, "eval_batches": 2},
        "evaluate": {"samples": 0},
    }
    moods = {
        "name": "moods",
        "task": "text-classification",
        "data": {
            "source": str(tiny.texts_csv(folder / "texts.csv")),
            "target": "y",
            "max_length": 16,
            "tokenizer": {"kind": "wordpiece", "vocab_size": 80},
        },
        "model": {"arch": "rnn", "hidden_size": 8, "pooling": "mean"},
        "train": {"epochs": 3, "batch_size": 8},
    }
    shapes = {
        "name": "shapes",
        "task": "image-classification",
        "data": {"source": str(tiny.image_folder(folder / "images"))},
        "model": {"arch": "cnn", "channels": [4], "head": []},
        "train": {"epochs": 2, "batch_size": 4},
        "evaluate": {"plots": False},
    }
    waves = {
        "name": "waves",
        "task": "sequence-regression",
        "data": {
            "source": str(tiny.series_csv(folder / "series.csv")),
            "time": "t",
            "target": "y",
            "lookback": 5,
        },
        "model": {"arch": "rnn", "cell": "gru", "hidden_size": 4},
        "train": {"epochs": 2, "batch_size": 8},
        "evaluate": {"plots": False},
    }
    for recipe in (houses, poet, moods, shapes, waves):
        _train(recipe, folder, store)
    return store


_SHARED: dict[str, Path] = {}


def shared_store(factory: Any) -> Path:
    """One ``tiny_store`` per test session, shared by the serving test modules (read only)."""
    if "store" not in _SHARED:
        _SHARED["store"] = tiny_store(factory.mktemp("serving"))
    return _SHARED["store"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving ``create_app(config)`` in a thread; ``url`` is its base address."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.app = create_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=config.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{config.port}"

    def start(self, ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while httpx.get(f"{self.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def running_server(store: Path, models: list[str], **settings: Any) -> Iterator[LiveServer]:
    config = ServeConfig(models=models, store=str(store), port=free_port(), **settings)
    server = LiveServer(config).start()
    try:
        yield server
    finally:
        server.stop()
