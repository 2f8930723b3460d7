"""What one server process holds: its settings, registry, model repository, router, log writer."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from modelyard.config import Settings
from modelyard.predlog import PredictionLogWriter
from modelyard.predlog.outcomes import TaskOf
from modelyard.registry import Registry
from modelyard.serve.inference import InferenceService
from modelyard.serve.repository import ModelRepository
from modelyard.serve.routing import Router


@dataclass
class ServerState:
    settings: Settings
    registry: Registry
    repository: ModelRepository
    router: Router
    service: InferenceService
    writer: PredictionLogWriter | None
    stopping: bool = False
    task_of: TaskOf | None = None
    """What a valid outcome of a version looks like (``POST /v1/feedback``), read once per version."""


def server_state(request: Request) -> ServerState:
    return request.app.state.modelyard  # type: ignore[no-any-return]
