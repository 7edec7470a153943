"""The server, over real HTTP on 127.0.0.1: every endpoint, the OpenAI client, batching across
requests, continuous batching of completions, and each refusal (401, 413, 422, 503, 504).

Three tiny models are trained once (``serving_helpers.tiny_store``); each test starts the server
it needs (loading takes well under a second) with uvicorn in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tensorsmith
from tensorsmith.serving.config import ServeConfig
from tests.serving_helpers import HOUSE, LiveServer, free_port, running_server, shared_store

MODELS = ["houses", "poet", "moods"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[LiveServer]:
    with running_server(store, MODELS, max_wait_ms=20, max_rows=8) as live:
        yield live


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(\{{(.*?)\}})? (\S+)$", re.M)
    for m in pattern.finditer(text):
        if all(part in (m.group(2) or "") for part in want.split(",") if part):
            return float(m.group(3))
    return 0.0


def sse(lines: list[str]) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


# ----------------------------------------------------------------------------- endpoints


def test_health_and_readiness(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["models"] == MODELS


def test_readiness_is_503_until_loaded_and_says_why_a_load_failed(
    store: Path, tmp_path: Path
) -> None:
    config = ServeConfig(models=MODELS, store=str(store), port=free_port())
    live = LiveServer(config).start(ready=False)
    try:
        seen = [httpx.get(f"{live.url}/readyz")]
        live.wait_ready()
        seen.append(httpx.get(f"{live.url}/readyz"))
    finally:
        live.stop()
    codes = [r.status_code for r in seen]
    assert codes[-1] == 200
    assert all(r.json()["status"] == "loading" for r in seen if r.status_code == 503)
    # a model that cannot load: alive, never ready, and the reason is said
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    config = ServeConfig(models=[str(broken)], store=str(store), port=free_port())
    live = LiveServer(config).start(ready=False)
    try:
        for _ in range(200):
            r = httpx.get(f"{live.url}/readyz")
            if r.json()["status"] == "failed":
                break
        assert r.status_code == 503
        assert "config.json" in r.json()["error"]
        assert httpx.get(f"{live.url}/healthz").status_code == 200
        assert httpx.get(f"{live.url}/v1/models/broken").status_code == 503
    finally:
        live.stop()


def test_models_list_in_openai_shape_with_schema_and_metrics(server: LiveServer) -> None:
    body = httpx.get(f"{server.url}/v1/models").json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == set(MODELS)
    houses = by_id["houses"]
    assert houses["object"] == "model" and houses["owned_by"] == "tensorsmith"
    assert (houses["version"], houses["task"], houses["arch"]) == (1, "regression", "mlp")
    features = {f["name"]: f["type"] for f in houses["input"]["features"]}
    assert features == {
        "lotsize": "number",
        "bedrooms": "number",
        "bathrms": "number",
        "stories": "number",
        "airco": "binary",
    }
    assert "r2" in houses["metrics"]["test"]
    assert by_id["moods"]["input"] == {"kind": "text", "column": "text", "max_length": 16}
    assert by_id["poet"]["input"]["kind"] == "prompt"
    assert by_id["poet"]["endpoint"] == "/v1/completions"
    one = httpx.get(f"{server.url}/v1/models/houses").json()
    assert one["id"] == "houses"
    card = httpx.get(f"{server.url}/v1/models/houses/card")
    assert card.status_code == 200 and "houses" in card.text
    plot = houses["plots"][0]
    png = httpx.get(f"{server.url}/v1/models/houses/plots/{plot}")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    # a plot is one the model listed, never a path
    assert httpx.get(f"{server.url}/v1/models/houses/plots/..%2Fconfig.json").status_code == 404
    assert httpx.get(f"{server.url}/v1/models/nope").status_code == 404


def test_predict_a_table_row_as_the_store_model_does(server: LiveServer, store: Path) -> None:
    r = httpx.post(f"{server.url}/v1/models/houses/predict", json={"rows": [HOUSE, HOUSE]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("houses", 1)
    local = tensorsmith.load("houses", store=store).predict(__import__("pandas").DataFrame([HOUSE]))
    value = float(local["price_predicted"].iloc[0])
    assert [p["prediction"] for p in body["predictions"]] == pytest.approx([value, value])
    assert body["predictions"][0]["values"] == {"price_predicted": pytest.approx(value)}


def test_predict_texts_with_class_probabilities(server: LiveServer) -> None:
    r = httpx.post(
        f"{server.url}/v1/models/moods/predict",
        json={"texts": ["bright sunny glad", "dark cold grim"]},
    )
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert p["prediction"] in ("up", "down")
        assert set(p["probabilities"]) == {"up", "down"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
    rows = httpx.post(f"{server.url}/v1/models/moods/predict", json={"rows": [{"text": "glad"}]})
    assert rows.status_code == 200
    long = httpx.post(f"{server.url}/v1/models/moods/predict", json={"texts": ["glad " * 40]})
    assert "truncated" in long.json()["notes"][0]


def test_metrics_in_prometheus_text(server: LiveServer) -> None:
    httpx.post(f"{server.url}/v1/models/houses/predict", json={"rows": [HOUSE]})
    httpx.post(f"{server.url}/v1/completions", json={"model": "poet", "max_tokens": 3})
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        metric(
            text, "tensorsmith_requests_total", endpoint="/v1/models/{name}/predict", status="200"
        )
        >= 1
    )
    assert metric(text, "tensorsmith_request_seconds_count", endpoint="/v1/completions") >= 1
    assert metric(text, "tensorsmith_batch_size_count", model="houses") >= 1
    assert "tensorsmith_queue_depth" in text
    assert metric(text, "tensorsmith_time_to_first_token_seconds_count", model="poet") >= 1
    assert metric(text, "tensorsmith_tokens_per_second_count", model="poet") >= 1


def test_openapi_and_the_page_are_served(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/v1/completions"):
        assert path in spec["paths"], path
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{server.url}/static/app.js").status_code == 200


def test_predict_images_as_base64_and_as_multipart_files(store: Path) -> None:
    folder = store.parent / "images"
    bar, dot = (folder / "bar" / "0.png").read_bytes(), (folder / "dot" / "0.png").read_bytes()
    with running_server(store, ["shapes"]) as live:
        url = f"{live.url}/v1/models/shapes/predict"
        as_json = httpx.post(
            url, json={"images": [base64.b64encode(b).decode() for b in (bar, dot)]}
        )
        files = [("images", ("a.png", bar, "image/png")), ("images", ("b.png", dot, "image/png"))]
        as_files = httpx.post(url, files=files)
        assert as_json.status_code == as_files.status_code == 200, as_json.text + as_files.text
        assert as_json.json()["predictions"] == as_files.json()["predictions"]
        for p in as_json.json()["predictions"]:
            assert p["prediction"] in ("bar", "dot")
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        not_base64 = httpx.post(url, json={"images": ["%%%"]})
        assert not_base64.status_code == 422 and not_base64.json()["error"]["param"] == "images[0]"
        not_an_image = httpx.post(url, files=[("images", ("x.png", b"text", "image/png"))])
        assert not_an_image.status_code == 200  # said, not failed: the prediction is empty
        assert not_an_image.json()["predictions"][0]["prediction"] is None
        assert "images[0]" in not_an_image.json()["notes"][0]
        assert httpx.get(f"{live.url}/v1/models/shapes").json()["input"]["kind"] == "image"


def test_predict_a_forecast_from_windows_of_a_series(store: Path) -> None:
    series = __import__("pandas").read_csv(store.parent / "series.csv").tail(8)
    rows = series.to_dict(orient="records")
    with running_server(store, ["waves"]) as live:
        model = httpx.get(f"{live.url}/v1/models/waves").json()
        assert model["input"] == {"kind": "windows", "columns": ["t", "y", "x2"], "lookback": 5}
        r = httpx.post(f"{live.url}/v1/models/waves/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 8
    forecasts = [p["values"]["y_forecast_1"] for p in predictions]
    assert forecasts[:4] == [None] * 4 and all(isinstance(f, float) for f in forecasts[4:])


# ----------------------------------------------------------------------------- completions


def test_completion_counts_tokens_and_matches_local_greedy_generation(
    server: LiveServer, store: Path
) -> None:
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "poet", "prompt": "ROMEO.", "max_tokens": 24, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "poet"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    local = tensorsmith.load("poet", store=store).generate("ROMEO.", 24, temperature=0)
    assert choice["text"] == local
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 24, "total_tokens": 30}


def test_concurrent_completions_decode_together_each_as_if_alone(
    server: LiveServer, store: Path
) -> None:
    """Continuous batching: requests of different lengths join and leave the running batch;
    each keeps its own cache, so greedy text equals the text generated alone. 40 tokens run
    past the context of 16, through the full-recompute path."""
    model = tensorsmith.load("poet", store=store)
    asks = [("ROMEO.", 40), ("To be", 7), ("", 25), ("O, what", 16), ("KING", 3)]

    async def burst() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            calls = [
                client.post(
                    "/v1/completions",
                    json={"model": "poet", "prompt": p, "max_tokens": n, "temperature": 0},
                )
                for p, n in asks
            ]
            return [r.json() for r in await asyncio.gather(*calls)]

    before = httpx.get(f"{server.url}/metrics").text
    results = asyncio.run(burst())
    for (prompt, n), result in zip(asks, results, strict=True):
        assert result["choices"][0]["text"] == model.generate(prompt, n, temperature=0), prompt
        assert result["usage"]["completion_tokens"] == n
    after = httpx.get(f"{server.url}/metrics").text
    steps = metric(after, "tensorsmith_decode_batch_size_count", model="poet") - metric(
        before, "tensorsmith_decode_batch_size_count", model="poet"
    )
    tokens = metric(after, "tensorsmith_decode_batch_size_sum", model="poet") - metric(
        before, "tensorsmith_decode_batch_size_sum", model="poet"
    )
    assert tokens / steps > 1.0  # steps decoded more than one request at a time


def test_stop_seed_and_n(server: LiveServer) -> None:
    def ask(**extra: Any) -> dict[str, Any]:
        body = {"model": "poet", "prompt": "ROMEO.", "max_tokens": 30, **extra}
        r = httpx.post(f"{server.url}/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    a, b = ask(seed=7, n=2), ask(seed=7, n=2)
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1]
    assert a["usage"]["completion_tokens"] == 60
    greedy = ask(temperature=0)["choices"][0]["text"]
    stop = greedy[5:7]
    stopped = ask(temperature=0, stop=[stop])["choices"][0]
    assert stopped["text"] == greedy[: greedy.index(stop)]
    assert stopped["finish_reason"] == "stop"


def test_streaming_ends_with_done(server: LiveServer) -> None:
    body = {"model": "poet", "prompt": "ROMEO.", "max_tokens": 20, "stream": True,
            "temperature": 0, "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(list(r.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    full = httpx.post(
        f"{server.url}/v1/completions", json={**body, "stream": False, "stream_options": None}
    ).json()
    assert text == full["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 20


def test_the_openai_client_works_unchanged(server: LiveServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k")
    done = client.completions.create(model="poet", prompt="ROMEO.", max_tokens=20, temperature=0)
    assert done.usage is not None and done.usage.completion_tokens == 20
    streamed = client.completions.create(
        model="poet", prompt="ROMEO.", max_tokens=20, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == done.choices[0].text
    listed = client.models.list()
    assert {m.id for m in listed.data} == set(MODELS)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.completions.create(model="poet", prompt="x", max_tokens=10**6)


# ----------------------------------------------------------------------------- batching


async def _burst(url: str, bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        calls = [client.post("/v1/models/houses/predict", json=b) for b in bodies]
        return list(await asyncio.gather(*calls))


def test_concurrent_requests_share_forward_passes_and_a_bad_one_fails_alone(
    server: LiveServer,
) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    bad = {"rows": [{**HOUSE, "bedrooms": "three"}]}
    rows = [dict(HOUSE, lotsize=3000 + 100 * i) for i in range(24)]
    bodies: list[Any] = [{"rows": [row]} for row in rows]
    bodies.insert(11, bad)
    responses = asyncio.run(_burst(server.url, bodies))
    codes = [r.status_code for r in responses]
    assert codes[11] == 422 and "rows[0].bedrooms" in responses[11].json()["error"]["message"]
    assert codes[:11] + codes[12:] == [200] * 24
    # outputs matched one to one: each equals the same row predicted on its own
    got = [r.json()["predictions"][0]["prediction"] for i, r in enumerate(responses) if i != 11]
    alone = httpx.post(f"{server.url}/v1/models/houses/predict", json={"rows": rows[:8]}).json()
    assert got[:8] == pytest.approx([p["prediction"] for p in alone["predictions"]])
    after = httpx.get(f"{server.url}/metrics").text
    passes = metric(after, "tensorsmith_batch_size_count", model="houses") - metric(
        before, "tensorsmith_batch_size_count", model="houses"
    )
    ones = metric(after, "tensorsmith_batch_size_bucket", model="houses", le="1.0") - metric(
        before, "tensorsmith_batch_size_bucket", model="houses", le="1.0"
    )
    assert passes < 24 and ones < passes  # batches of more than one row


def test_notes_stay_with_their_own_request_in_a_batch(server: LiveServer) -> None:
    """A value preprocessing cannot take as given (an unknown yes/no word, imputed) is said to
    the request that sent it, not to the others of its batch."""
    bodies: list[Any] = [{"rows": [HOUSE]} for _ in range(12)]
    bodies[5] = {"rows": [{**HOUSE, "airco": "maybe"}]}
    responses = asyncio.run(_burst(server.url, bodies))
    assert [r.status_code for r in responses] == [200] * 12
    notes = [r.json()["notes"] for r in responses]
    assert "airco" in " ".join(notes[5])
    assert notes[:5] + notes[6:] == [[]] * 11


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"rows": [', "body"),
        (b'[{"lotsize": 1}]', "body"),
        (json.dumps({"rows": [{**HOUSE, "lotsize": float("nan")}]}).encode(), "body"),
        (b'{"rows": [{"lotsize": Infinity}]}', "body"),
        (json.dumps({"rows": [{"lotsize": 1, "bedrooms": 1}]}).encode(), "rows[0].bathrms"),
        (json.dumps({"rows": [{**HOUSE, "garage": 1}]}).encode(), "rows[0].garage"),
        (json.dumps({"rows": [{**HOUSE, "lotsize": "big"}]}).encode(), "rows[0].lotsize"),
        (json.dumps({"rows": [HOUSE] * 9}).encode(), "rows"),
        (json.dumps({"rows": []}).encode(), "rows"),
        (json.dumps({"texts": ["a"]}).encode(), "rows"),
        (json.dumps({"rows": "x"}).encode(), "rows"),
        (json.dumps({"rows": [HOUSE], "extra": 1}).encode(), "extra"),
    ],
)  # fmt: skip
def test_bad_predict_requests_are_422_naming_the_field(
    server: LiveServer, body: bytes, field: str
) -> None:
    r = httpx.post(
        f"{server.url}/v1/models/houses/predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == field or error["param"].startswith(field), error
    assert error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "poet", "max_tokens": 100000}, "max_tokens"),
        ({"model": "poet", "max_tokens": "many"}, "max_tokens"),
        ({"model": "poet", "temperature": -1}, "temperature"),
        ({"model": "poet", "top_p": 0}, "top_p"),
        ({"model": "poet", "n": 0}, "n"),
        ({"model": "poet", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "houses"}, "model"),
        ({"prompt": "x"}, "model"),
        ({"model": "poet", "logit_bias": {}}, "logit_bias"),
    ],
)
def test_bad_completions_are_422_naming_the_field(
    server: LiveServer, body: dict[str, Any], field: str
) -> None:
    r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == field


def test_api_key_on_every_v1_route_and_a_body_limit(store: Path) -> None:
    openai = pytest.importorskip("openai")
    with running_server(store, ["houses", "poet"], api_key="s3cret", max_body=4096) as live:
        for path in ("/v1/models", "/v1/models/houses"):
            assert httpx.get(f"{live.url}{path}").status_code == 401
            wrong = httpx.get(f"{live.url}{path}", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        key = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{live.url}/v1/models", headers=key).status_code == 200
        r = httpx.post(f"{live.url}/v1/models/houses/predict", json={"rows": [HOUSE]})
        assert r.status_code == 401
        r = httpx.post(f"{live.url}/v1/models/houses/predict", json={"rows": [HOUSE]}, headers=key)
        assert r.status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/"):
            assert httpx.get(f"{live.url}{open_path}").status_code == 200
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="s3cret")
        assert client.completions.create(model="poet", prompt="A", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{live.url}/v1", api_key="x").models.list()
        big = {"rows": [HOUSE], "pad": "x" * 5000}
        r = httpx.post(f"{live.url}/v1/models/houses/predict", json=big, headers=key)
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
            yield b'{"rows": ['
            for _ in range(100):
                yield json.dumps(HOUSE).encode() + b","
            yield b"{}]}"

        r = httpx.post(f"{live.url}/v1/models/houses/predict", content=chunks(), headers=key)
        assert r.status_code == 413


def test_a_full_queue_is_503_with_retry_after(store: Path) -> None:
    with running_server(store, ["houses"], max_queue=2, max_wait_ms=300) as live:
        responses = asyncio.run(_burst(live.url, [{"rows": [HOUSE]}] * 12))
    codes = [r.status_code for r in responses]
    assert 200 in codes and 503 in codes
    full = next(r for r in responses if r.status_code == 503)
    assert full.headers["retry-after"] == "1"


def test_a_request_past_the_timeout_is_504(store: Path) -> None:
    with running_server(store, ["houses", "poet"], timeout=0.05, max_wait_ms=300) as live:
        r = httpx.post(f"{live.url}/v1/models/houses/predict", json={"rows": [HOUSE]})
        assert r.status_code == 504
        body = {"model": "poet", "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", f"{live.url}/v1/completions", json=body) as s:
            events = sse(list(s.iter_lines()))
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == 504  # an error, then [DONE]


def test_schemathesis_finds_no_server_error(server: LiveServer, tmp_path: Path) -> None:
    """Fuzz every operation of the server's own OpenAPI document: no 5xx, responses as
    documented. (A body valid by the JSON schema may still lack a model's features, so
    "schema-valid request rejected" does not apply to predict.)"""
    pytest.importorskip("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[parameters]\n"path.name" = "houses"\n"path.plot" = "learning_curves.png"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
            f"{server.url}/openapi.json", "--max-examples", "25", "--generation-deterministic",
            "--exclude-checks", "positive_data_acceptance", "--request-timeout", "30",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
