"""``tensorsmith serve`` as a user runs it: a real process, a name that does not resolve, the
production alias, and a graceful shutdown that finishes the request in flight."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

import tensorsmith
from tensorsmith.store.aliases import set_alias
from tests.conftest import run_cli_process
from tests.serving_helpers import HOUSE, free_port, running_server, shared_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_store(tmp_path_factory)


def test_an_unknown_model_fails_before_serving(store: Path) -> None:
    code, _, err = run_cli_process("serve", "housse", "--port", str(free_port()), store=store)
    assert code == 2
    assert "housse" in err and "houses" in err  # did you mean


def test_a_name_serves_its_production_alias_else_its_latest(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    recipe = store.parent / "houses.yaml"
    tensorsmith.train(recipe, ["train.epochs=1"], store=copy, console=Console(file=io.StringIO()))
    with running_server(copy, ["houses", "poet@1"]) as live:
        assert httpx.get(f"{live.url}/v1/models/houses").json()["version"] == 2
    set_alias(copy / "houses", "production", 1)
    with running_server(copy, ["houses"]) as live:
        assert httpx.get(f"{live.url}/v1/models/houses").json()["version"] == 1
    with running_server(copy, ["houses@2"]) as live:
        assert httpx.get(f"{live.url}/v1/models/houses").json()["version"] == 2


def test_serve_runs_and_a_shutdown_finishes_the_request_in_flight(store: Path) -> None:
    port = free_port()
    env = {**os.environ, "TENSORSMITH_STORE": str(store), "TENSORSMITH_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorsmith.cli", "serve", "houses", "poet", "--port", str(port)],
        env=env,
        cwd=store.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        assert httpx.get(f"{url}/v1/models").status_code == 401  # the key from the env
        lines: list[str] = []
        first = threading.Event()

        def stream() -> None:
            body = {"model": "poet", "prompt": "A", "max_tokens": 300, "stream": True}
            with httpx.stream(
                "POST",
                f"{url}/v1/completions",
                json=body,
                headers={"Authorization": "Bearer k"},
                timeout=60,
            ) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(30)
        proc.send_signal(signal.SIGTERM)  # while the completion is being written
        reader.join(60)
        # uvicorn finishes the request, then re-raises SIGTERM to end as the signal asks
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    tokens = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert len(tokens) > 0


def test_workers_share_the_cores(store: Path) -> None:
    """--workers 2: two processes, each with cores / 2 torch threads (at least one)."""
    port = free_port()
    env = {**os.environ, "TENSORSMITH_STORE": str(store)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorsmith.cli", "serve", "houses", "--workers", "2",
         "--port", str(port)],
        env=env, cwd=store.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_ready(url, proc)
        cores = len(os.sched_getaffinity(0))
        assert ready["workers"] == 2 and ready["threads"] == max(1, cores // 2)
        r = httpx.post(f"{url}/v1/models/houses/predict", json={"rows": [HOUSE]})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
        try:
            r = httpx.get(f"{url}/readyz")
            if r.status_code == 200:
                return dict(r.json())
        except httpx.TransportError:
            pass
        time.sleep(0.1)
