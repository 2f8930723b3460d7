"""The Open Inference Protocol's model repository extension, mapped onto registry aliases (REST and gRPC).

- **index** lists every alias the server follows as a model a client can name: ``house-prices`` for the
  ``production`` alias, ``house-prices@canary`` (and ``@shadow``, ...) for the others, each with its version,
  ``READY`` when this worker has it loaded, else ``UNAVAILABLE``.
- **load** of ``name`` or ``name@alias`` loads the version the alias points at into this worker now (it
  would be loaded on its first request otherwise); an unknown model or alias is a 404.
- **unload** is refused: what is served follows the registry's aliases, shared by every worker and replica;
  stop serving a version by moving or removing its alias (``modelyard promote``, ``modelyard rollback``).
  The server metadata says so under ``model_repository``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.errors import BadRequestError, RolloutError
from modelyard.registry import parse_ref
from modelyard.rollout import PRODUCTION
from modelyard.serve.http import json_response, parse_json
from modelyard.serve.repository import ModelRepository
from modelyard.serve.schemas import V2Error, errors
from modelyard.serve.state import server_state

router = APIRouter(prefix="/v2/repository", tags=["v2 (Open Inference Protocol)"])
NOTE = {"index": "every alias served: 'name' (production) and 'name@alias'",
        "load": "loads the version an alias points at into this worker",
        "unload": "not supported: serving follows the registry's aliases; move or remove the alias "
                  "(modelyard promote / rollback)"}


def index(repository: ModelRepository, ready_only: bool = False) -> list[dict[str, str]]:
    out = []
    for info in repository.info():
        for alias, version in sorted(info.aliases.items(), key=lambda a: (a[0] != PRODUCTION, a[0])):
            ready = info.loaded.get(alias) == version
            if ready_only and not ready:
                continue
            out.append({"name": info.name if alias == PRODUCTION else f"{info.name}@{alias}",
                        "version": str(version), "state": "READY" if ready else "UNAVAILABLE",
                        "reason": f"alias {alias}" if ready else f"alias {alias}, not loaded in this worker yet"})
    return out


async def load(repository: ModelRepository, name: str) -> None:
    model_name, selector = parse_ref(name)
    await repository.get(model_name, selector)


def unload(name: str) -> None:
    raise RolloutError(f"model '{name}' cannot be unloaded: {NOTE['unload']}", field="model_name")  # 409


async def _optional_json(request: Request) -> dict[str, Any]:
    """The body, which the protocol lets a client leave out (``{}`` then)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    if len(raw) > 1 << 16:
        raise BadRequestError("a repository request body is at most 64 KiB", field="body")
    body = parse_json(raw)
    return body if isinstance(body, dict) else {}


@router.post("/index", responses=errors(400, v2=True, s400="A body that is not JSON, or over 64 KiB"),
             summary="Models (aliases) served, with their versions and states")
async def repository_index(request: Request) -> Response:
    body = await _optional_json(request)
    return json_response(index(server_state(request).repository, body.get("ready") is True))


@router.post("/models/{name}/load", responses=errors(404, 503, v2=True),
             summary="Load the version an alias points at (name or name@alias)")
async def repository_load(name: str, request: Request) -> Response:
    await load(server_state(request).repository, name)
    return json_response({})


@router.post("/models/{name}/unload", status_code=409, response_model=V2Error,
             response_description="Always: serving follows the registry's aliases",
             summary="Refused: serving follows the registry's aliases")
async def repository_unload(name: str) -> Response:
    unload(name)
    return json_response({})
