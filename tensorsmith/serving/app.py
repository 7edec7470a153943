"""The HTTP application: routes that translate HTTP to ``Predictor`` calls, nothing more.

``create_app(config)`` returns a FastAPI app that loads its models in the background after it
starts (``/readyz`` answers 503 until every model is loaded and warmed up), batches predict
requests per model (``batcher.py``) and decodes completions with continuous batching
(``scheduler.py``, routes in ``completions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tensorsmith.errors import TensorsmithError
from tensorsmith.serving.batcher import MicroBatcher, QueueFull
from tensorsmith.serving.config import ServeConfig, threads_per_worker
from tensorsmith.serving.loaded import ServedModel, load_models
from tensorsmith.serving.metrics import ServerMetrics
from tensorsmith.serving.predict import predict_parts
from tensorsmith.serving.scheduler import DecodeScheduler
from tensorsmith.serving.schemas import BadRequest, ModelCard, ModelList
from tensorsmith.serving.security import BodyLimit, bearer, check_key, error_body
from tensorsmith.serving.timing import RequestMetrics

__all__ = ["Server", "create_app"]

log = logging.getLogger("tensorsmith.serve")
STATIC = files("tensorsmith.serving") / "static"


class Server:
    """What the routes share: the settings, the loaded models, their batchers and schedulers."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.models: dict[str, ServedModel] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.schedulers: dict[str, DecodeScheduler] = {}
        self.ready = False
        self.failed: str | None = None

    def model(self, name: str) -> ServedModel:
        if not self.ready:
            why = f"loading the models failed: {self.failed}" if self.failed else "loading"
            raise BadRequest(f"the server is not ready ({why}); see /readyz", None, 503)
        if name not in self.models:
            served = ", ".join(self.models) or "none yet (loading)"
            raise BadRequest(f"no model '{name}' is served here; served: {served}", "model", 404)
        return self.models[name]

    async def load(self) -> None:
        """Load and warm up every model off the event loop, then start their workers."""
        import torch

        cfg = self.config
        threads = threads_per_worker(cfg.workers, cfg.threads)
        torch.set_num_threads(threads)
        try:
            root = Path(cfg.store or os.environ.get("TENSORSMITH_STORE") or "models")
            models = await asyncio.to_thread(load_models, cfg.models, root)
            for served in models.values():
                await asyncio.to_thread(served.warm_up)
        except Exception as exc:  # readiness says why; the process stays up for /healthz
            self.failed = f"{type(exc).__name__}: {exc}"
            log.error("loading the models failed: %s", self.failed)
            return
        for name, served in models.items():
            if served.generates:
                scheduler = DecodeScheduler(
                    name, served.predictor.module, self.metrics, cfg.max_streams, threads
                )
                scheduler.start()
                self.schedulers[name] = scheduler
            else:
                batcher = MicroBatcher(
                    name,
                    functools.partial(
                        predict_parts, served.predictor.task, served.predictor.module
                    ),
                    self.metrics,
                    cfg.max_batch_size,
                    cfg.max_wait_ms / 1000,
                    cfg.max_queue,
                )
                batcher.start()
                self.batchers[name] = batcher
        self.models = models
        self.ready = True

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        for scheduler in self.schedulers.values():
            await asyncio.to_thread(scheduler.stop)


def create_app(config: ServeConfig) -> FastAPI:
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(server.load())
        yield
        await loading
        await server.stop()

    app = FastAPI(
        title="tensorsmith",
        description="Models from the tensorsmith store: predictions, OpenAI-compatible "
        "completions, metrics, and a page to try them at `/`.",
        version="1",
        lifespan=lifespan,
    )
    app.state.server = server
    _errors(app)
    app.include_router(_open_routes(server))
    # the key check only when there is a key: the OpenAPI page then says what is true
    key = [Depends(_auth(server))] if config.api_key else []
    errors = {k: v for k, v in _ERRORS.items() if config.api_key or k != 401}
    for router in _v1_routes(server):
        app.include_router(router, dependencies=key, responses=errors)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    app.add_middleware(BodyLimit, max_body=config.max_body)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.status, exc.field), exc.status)

    @app.exception_handler(TensorsmithError)
    async def data_error(request: Request, exc: TensorsmithError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), 422), 422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        message = f"{field}: {first['msg']}"
        return JSONResponse(error_body(message, 422, field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the body could not be parsed as JSON
            return JSONResponse(
                error_body(f"the body is not valid JSON ({exc.detail})", 422, "body"), 422
            )
        return JSONResponse(
            error_body(str(exc.detail), exc.status_code), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        message = f"the queue of model {exc} is full; retry in a second"
        return JSONResponse(error_body(message, 503), 503, headers={"Retry-After": "1"})

    @app.exception_handler(TimeoutError)
    async def timed_out(request: Request, exc: TimeoutError) -> JSONResponse:
        message = "the request took longer than the server's --timeout"
        return JSONResponse(error_body(message, 504), 504)


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d}
    for s, d in {
        401: "missing or wrong API key",
        404: "no such model",
        413: "request body too large",
        422: "invalid request; `error.param` names the field",
        503: "not ready, or the model's queue is full (see Retry-After)",
        504: "timed out",
    }.items()
}


def _open_routes(server: Server) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="200 once every model is loaded and warm, else 503")
    async def readyz() -> JSONResponse:
        if server.ready:
            import torch

            threads = torch.get_num_threads()  # x --workers never exceeds the cores
            body = {"status": "ready", "models": list(server.models), "threads": threads}
            return JSONResponse({**body, "workers": server.config.workers})
        status = "failed" if server.failed else "loading"
        return JSONResponse({"status": status, "error": server.failed}, 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @router.get("/", summary="a page to try each model", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    return router


def _auth(server: Server) -> Any:
    async def authorized(
        request: Request, given: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        check_key(server.config.api_key, request, given)

    return authorized


def _v1_routes(server: Server) -> list[APIRouter]:
    """Every /v1 route; one router per module, each included with the prefix and the key check
    (flat, so each route's path template is whole for the metrics)."""
    from tensorsmith.serving.completions import completion_routes
    from tensorsmith.serving.predict import predict_routes

    router = APIRouter(prefix="/v1")

    @router.get("/models", response_model=ModelList, summary="the served models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in server.models.values()]}

    @router.get("/models/{name}", response_model=ModelCard, summary="one served model")
    async def one_model(name: str) -> dict[str, Any]:
        return server.model(name).describe()

    @router.get(
        "/models/{name}/card",
        response_class=PlainTextResponse,
        summary="the model card (Markdown)",
        responses={200: {"content": {"text/markdown": {}}}},
    )
    async def card(name: str) -> PlainTextResponse:
        return PlainTextResponse(server.model(name).card(), media_type="text/markdown")

    @router.get(
        "/models/{name}/plots/{plot}",
        response_class=Response,
        summary="a plot of the model (PNG), one named in its `plots`",
        responses={200: {"content": {"image/png": {}}}},
    )
    async def plot(name: str, plot: str) -> Response:
        plots = server.model(name).plots
        if plot not in plots:  # only files listed at load time: never a path from a request
            raise BadRequest(
                f"model {name} has no plot '{plot}'; plots: {sorted(plots)}", "plot", 404
            )
        return Response(plots[plot].read_bytes(), media_type="image/png")

    return [router, predict_routes(server), completion_routes(server)]


def app_from_env() -> FastAPI:
    """The app of a uvicorn worker process, from the settings ``api.serve`` put in the env."""
    from tensorsmith.serving.config import ENV

    return create_app(ServeConfig.from_json(os.environ[ENV]))
