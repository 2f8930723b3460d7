"""The ASGI app: REST v1, the Open Inference Protocol v2, health, metrics and OpenAPI, around one repository.

Start-up (uvicorn lifespan) opens the registry, starts the prediction-log writer, loads every model's
``production`` version and starts the alias poller and the one scheduler task (``serve/monitoring.py``: the
alert rules and the canary rollback rules under one lease); only then does uvicorn accept requests. Shutdown
(SIGTERM: uvicorn first finishes the requests in flight) stops the scheduler and the poller and flushes the
prediction log to the database, or to the spill file when the database is away. ``/dashboard`` lives in
``serve/dashboard.py``.

The hot route, ``POST /v1/models/{name}/predict``, is answered by ``ModelyardApp.__call__`` straight from
the ASGI scope: the same endpoint (``v1.predict``) and the same exception handlers, without FastAPI's
middleware stack, route matching and dependency resolution, which cost more than the prediction itself
on a one-row request (issue 17). It stays in the FastAPI router for OpenAPI (and for an app with user
middleware, which then goes the ordinary way).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from threadpoolctl import threadpool_limits

from modelyard._gc import settle_heap
from modelyard._version import __version__
from modelyard.config import Settings
from modelyard.monitor import metrics
from modelyard.predlog import LogHooks, PredictionLogWriter
from modelyard.registry import Registry
from modelyard.serve import admin, dashboard, explain, feedback, repository_v2, v1, v2
from modelyard.serve.batching import Batching
from modelyard.serve.http import install_error_handlers, json_response
from modelyard.serve.inference import InferenceService
from modelyard.serve.monitoring import ServerScheduler
from modelyard.serve.repository import ModelRepository
from modelyard.serve.routing import Router
from modelyard.serve.schemas import Readiness, finish_openapi
from modelyard.serve.shadow import ShadowRunner
from modelyard.serve.state import ServerState, server_state

log = logging.getLogger("modelyard.serve")


def _writer(settings: Settings) -> PredictionLogWriter | None:
    if not settings.prediction_log:
        return None
    return PredictionLogWriter.from_settings(settings, LogHooks(
        on_pending=metrics.PREDICTION_LOG_PENDING.set,
        on_spilled=metrics.PREDICTION_LOG_SPILLED.inc,
        on_backlog=lambda b: metrics.observe_log_backlog(b.segments, b.records, b.oldest_age_seconds),
        on_write_failure=metrics.LOG_WRITE_FAILURES.inc,
        on_ship_error=metrics.LOG_SHIP_ERRORS.inc,
        on_served_unlogged=metrics.LOG_SERVED_UNLOGGED.inc,
    ), ship_in_child=settings.log_ship_in_child).start()


class ModelyardApp(FastAPI):
    """The FastAPI app, with the hot v1 predict route answered before FastAPI's own machinery."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware:
            path: str = scope["path"]
            if path.startswith("/v1/models/") and path.endswith("/predict"):
                name = path[len("/v1/models/"):-len("/predict")]
                if name and "/" not in name:
                    await self._predict(name, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _predict(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await v1.predict(name, request)
        except Exception as exc:  # the handler the app registered for the error's class
            handler = next(self.exception_handlers[cls] for cls in type(exc).__mro__
                           if cls in self.exception_handlers)
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A server for every model in the registry ``settings`` points at."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One native thread per worker for the requests answered on the event loop: uvicorn workers are the
        # parallelism, and OpenMP/BLAS pools spinning against each other made a one-row predict 10x slower.
        threadpool_limits(limits=1)
        registry = await anyio.to_thread.run_sync(Registry, settings)
        repository = ModelRepository(registry, reload_interval=settings.reload_interval)
        router = Router(repository, mirror=settings.canary_mirror)
        writer = _writer(settings)
        batching = Batching(settings) if settings.batching else None
        shadow = ShadowRunner(repository, writer, maxsize=settings.shadow_queue_size)  # rollout: shadow/mirror
        service = InferenceService(router, writer, max_body_bytes=settings.max_body_bytes, batching=batching,
                                   shadow=shadow)
        state = ServerState(settings, registry, repository, router, service, writer)
        app.state.modelyard = state
        scheduler: ServerScheduler | None = None
        grpc_server: Any = None  # the Open Inference Protocol over gRPC, on the same loop
        try:
            # alert rules and canary rollback rules: one task, one lease (raises on a misspelt watch rule)
            scheduler = app.state.modelyard_scheduler = ServerScheduler(settings, registry, repository)
            await repository.start()
            scheduler.start()
            await shadow.start()  # rollout
            if settings.grpc_port:
                from modelyard.serve.grpc.server import GrpcServer

                grpc_server = await GrpcServer(state, settings.grpc_host, settings.grpc_port).start()
            # Everything loaded so far (modules, models) lives as long as the process: moved out of the
            # collector's sight, a full collection no longer walks it (it took ~150 ms, ~25 µs a request).
            # Concurrent requests keep thousands of young containers alive at once (rows, records waiting to
            # ship): with the young threshold raised, the collector's share went from ~8 to <1 µs a request
            # (32 clients, log on; see modelyard._gc).
            settle_heap(batches=True)
            served = ", ".join(f"{m.name} v{m.loaded['production']}" for m in repository.info()
                               if "production" in m.loaded) or "none yet"
            log.info("modelyard %s ready: production models %s; prediction log %s", __version__, served,
                     "on" if writer else "off")
            yield
        finally:
            state.stopping = True
            if grpc_server is not None:  # no new calls; the calls in flight finish first
                await grpc_server.stop()
            if scheduler is not None:
                await scheduler.stop()
            await shadow.stop()  # rollout: finish the queued shadow work before the log is flushed
            await repository.stop()
            if batching is not None:
                await batching.aclose()
            if writer is not None:
                await anyio.to_thread.run_sync(writer.stop)
                log.info("prediction log flushed: %d written ahead, %d shipped, %d waiting in %s",
                         writer.written, writer.shipper.shipped, writer.pending, writer.folder)
            metrics.flush()  # the counts of the last answers, before the worker's files are let go
            metrics.mark_process_dead()

    app = ModelyardApp(
        title="modelyard",
        version=__version__,
        description="Every model of the registry by alias: REST v1 and the Open Inference Protocol v2.",
        lifespan=lifespan,
        docs_url="/docs",
    )
    install_error_handlers(app)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.include_router(repository_v2.router)  # the model repository extension
    app.include_router(explain.router)  # /v1/models/{name}/explain, /v1/predictions/{id}/explain
    app.include_router(feedback.router)  # /v1/feedback: outcomes joined to the log
    dashboard.install(app)  # monitoring: /dashboard, its data and static files
    app.include_router(admin.router)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "Not ready"}},
             summary="Readiness: production models loaded and warm, the prediction log writable, not shutting down")
    async def readyz(request: Request) -> Response:
        state = server_state(request)
        not_ready = state.repository.not_ready()
        log_ok = state.writer is None or state.writer.healthy
        ready = state.repository.ready and not state.stopping and log_ok
        body: dict[str, Any] = {"status": "ready" if ready else "not ready",
                                "models": len(state.repository.info()),
                                "prediction_log_pending": state.writer.pending if state.writer else None}
        if not_ready:
            body["not_ready"] = not_ready
        if state.writer is not None and state.writer.failing is not None:
            body["prediction_log_error"] = state.writer.failing
        return json_response(body, 200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             summary="Prometheus metrics (all workers)")
    async def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory ``modelyard serve`` runs in every worker: settings from the environment."""
    return create_app(Settings())
