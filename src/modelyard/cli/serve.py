"""`modelyard serve`: the REST server under uvicorn (one or several worker processes)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Any

import typer

from modelyard.cli._common import console, friendly, settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _log_config() -> dict:  # type: ignore[type-arg]
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["modelyard"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@friendly
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (metrics sum all)."),
    log_predictions: bool = typer.Option(True, "--log/--no-log",
                                         help="Write every prediction to the prediction log."),
    access_log: bool = typer.Option(False, "--access-log", help="One log line per request (slower)."),
    grpc_port: int = typer.Option(0, "--grpc-port", min=0, max=65535,
                                  help="Also serve the Open Inference Protocol over gRPC on this port (every "
                                       "worker binds it with SO_REUSEPORT); 0: no gRPC."),
    shared_socket: bool = typer.Option(
        False, "--shared-socket",
        help="With --workers on Linux: one listening socket for every worker (uvicorn's) instead of one each. "
             "A worker that exits alone then leaves its waiting connections to the others, but connections "
             "a client opens at once may all land on one worker."),
) -> None:
    """Serve every model of the registry over REST v1 and the Open Inference Protocol v2."""
    import uvicorn

    from modelyard.serve.wire import HTTP_PROTOCOL
    from modelyard.serve.workers import own_sockets_supported, run_workers

    cfg = settings()  # read once here: fails early on a bad setting; workers read the same environment
    if not log_predictions:
        os.environ["MODELYARD_PREDICTION_LOG"] = "false"
    if grpc_port:  # the workers read it from the environment, like every setting
        os.environ["MODELYARD_GRPC_PORT"] = str(grpc_port)
        os.environ["MODELYARD_GRPC_HOST"] = host
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Must be set before any worker imports prometheus_client: each worker writes its values there.
        metrics_dir = tempfile.mkdtemp(prefix="modelyard-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    console.print(f"modelyard serving {cfg.resolved_database_url.split('@')[-1]} on http://{host}:{port} "
                  f"{f'and grpc://{host}:{grpc_port} ' if grpc_port else ''}"
                  f"({workers} worker{'s' if workers > 1 else ''}, prediction log "
                  f"{'on' if log_predictions and cfg.prediction_log else 'off'})", highlight=False)
    options: dict[str, Any] = dict(factory=True, host=host, port=port, workers=workers, log_config=_log_config(),
                                   access_log=access_log, lifespan="on", http=HTTP_PROTOCOL,
                                   timeout_graceful_shutdown=None)
    try:
        if workers > 1 and not shared_socket and own_sockets_supported(port):
            run_workers(uvicorn.Config("modelyard.serve.app:app_from_env", **options))  # a socket per worker
        else:
            uvicorn.run("modelyard.serve.app:app_from_env", **options)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
