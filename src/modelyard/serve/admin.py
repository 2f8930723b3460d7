"""The admin API, ``/v1/admin/...``: move an alias, set the canary's weight, roll production back, queue a
retrain (``POST /v1/admin/models/{name}/retrain``: the receiver an alert webhook can point at).

Off unless ``MODELYARD_ADMIN_TOKEN`` is set (every route answers 404, as if it did not exist). Each call
needs ``Authorization: Bearer <token>``; a missing or wrong token is answered 401 and logged with the
client's address (never the token). A change is a registry event like any other, with the actor
``admin-api`` (``admin-api:<name>`` when the caller sends ``X-Modelyard-Actor: <name>``) and the reason
given in the body. Gates are not run here: ``modelyard promote`` runs them before a version gets traffic.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelyard.errors import BadRequestError
from modelyard.registry import Registry
from modelyard.rollout import CANARY, PRODUCTION, Trigger, request_retrain, rollback, set_weight
from modelyard.serve.http import json_response
from modelyard.serve.schemas import errors
from modelyard.serve.state import server_state

log = logging.getLogger("modelyard.serve.admin")
ACTOR_HEADER = "X-Modelyard-Actor"
_ACTOR = re.compile(r"^[\w.@:\- ]{1,100}$")


async def authorize(request: Request) -> str:
    """The actor recorded on the event, once the bearer token matched."""
    token = server_state(request).settings.admin_token
    if not token:
        raise HTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown client"
        why = "no bearer token" if scheme.lower() != "bearer" else "a wrong token"
        log.warning("admin API: refused %s %s from %s: %s", request.method, request.url.path, client, why)
        raise HTTPException(401, f"the admin API needs 'Authorization: Bearer <token>'; {why} was given",
                            headers={"WWW-Authenticate": 'Bearer realm="modelyard-admin"'})
    name = request.headers.get(ACTOR_HEADER)
    if name is None:
        return "admin-api"
    if not _ACTOR.match(name):
        raise BadRequestError(f"{ACTOR_HEADER} must be 1-100 letters, digits, spaces or . @ : - _",
                              field=ACTOR_HEADER)
    return f"admin-api:{name}"


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(authorize)],
                   responses=errors(400, 401, 404, 409, 503, s401="Missing or wrong bearer token",
                                    s404="Admin API off (no token configured), or unknown model",
                                    s400="A body that is not JSON, a bad X-Modelyard-Actor, or a weight for an "
                                    "alias other than canary"))


class SetAlias(BaseModel):
    version: int = Field(ge=1, description="The version the alias points at from now on.")
    weight: float | None = Field(default=None, ge=0.0, le=1.0, description="Canary only: its traffic share.")
    reason: str | None = Field(default=None, max_length=2000, description="Why: recorded on the event.")


class SetWeight(BaseModel):
    weight: float = Field(ge=0.0, le=1.0, description="The canary's traffic share, 0 to 1.")
    reason: str | None = Field(default=None, max_length=2000)


class Rollback(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


def _set_alias(registry: Registry, name: str, alias: str, body: SetAlias, actor: str) -> None:
    if alias == CANARY:
        weight = 0.1 if body.weight is None else body.weight
    elif body.weight is not None:
        raise BadRequestError(f"'weight' applies to the canary alias only, not to '{alias}'", field="weight")
    else:
        weight = None
    registry.set_alias(name, alias, body.version, weight=weight, actor=actor, reason=body.reason,
                       details={"via": "admin-api", "gates": "not run (admin API)"})
    if alias == PRODUCTION:  # as `modelyard promote` does: the canary that became production retires
        canary = registry.aliases(name).get(CANARY)
        if canary is not None and canary.version == body.version:
            registry.remove_alias(name, CANARY, actor=actor, reason=f"v{body.version} was set as production")


async def _done(request: Request, name: str, action: str, **extra: Any) -> Response:
    """Apply the change in this process at once (other replicas follow on their next alias poll)."""
    state = server_state(request)
    await state.repository.refresh()
    aliases = await anyio.to_thread.run_sync(state.registry.aliases, name)
    event = (await anyio.to_thread.run_sync(lambda: state.registry.events(name, limit=1)))[0]
    return json_response({
        "model": name, "action": action, **extra,
        "aliases": {a: {"version": r.version, "weight": r.weight} for a, r in sorted(aliases.items())},
        "event": {"id": event.id, "kind": event.kind, "alias": event.alias, "from_version": event.from_version,
                  "to_version": event.to_version, "actor": event.actor, "reason": event.reason,
                  "at": event.at},
    })


@router.put("/models/{name}/aliases/{alias}", summary="Point an alias at a version")
async def put_alias(name: str, alias: str, body: SetAlias, request: Request,
                    actor: str = Depends(authorize)) -> Response:
    registry = server_state(request).registry
    await anyio.to_thread.run_sync(_set_alias, registry, name, alias, body, actor)
    return await _done(request, name, "set_alias", alias=alias, version=body.version)


@router.put("/models/{name}/canary/weight", summary="Set the canary's traffic share")
async def put_weight(name: str, body: SetWeight, request: Request, actor: str = Depends(authorize)) -> Response:
    registry = server_state(request).registry
    version = await anyio.to_thread.run_sync(
        lambda: set_weight(registry, name, body.weight, actor=actor, reason=body.reason))
    return await _done(request, name, "set_weight", version=version, weight=body.weight)


@router.post("/models/{name}/rollback", summary="Point production back at its previous version")
async def post_rollback(name: str, request: Request, body: Rollback | None = None,
                        actor: str = Depends(authorize)) -> Response:
    registry = server_state(request).registry
    reason = body.reason if body is not None else None
    result = await anyio.to_thread.run_sync(lambda: rollback(registry, name, actor=actor, reason=reason))
    return await _done(request, name, "rollback", from_version=result.from_version,
                       to_version=result.to_version)


class RetrainRequest(BaseModel):
    """A retrain request: a reason, or an alert webhook body (modelyard's or Alertmanager's ``alerts``)."""

    reason: str | None = Field(default=None, max_length=2000)
    alerts: list[dict[str, Any]] | None = Field(default=None, description="Alertmanager-style alerts: the "
                                                "first firing one's rule and summary become the trigger.")


def _retrain_trigger(body: RetrainRequest | None, actor: str) -> Trigger:
    firing = [a for a in (body.alerts if body and body.alerts else []) if a.get("status", "firing") == "firing"]
    if firing:
        labels, notes = firing[0].get("labels") or {}, firing[0].get("annotations") or {}
        rule = labels.get("rule") or labels.get("alertname") or "alert"
        return Trigger(f"webhook:{rule}", f"alert {rule} (via {actor}): {notes.get('summary') or ''}".rstrip(": "))
    return Trigger(actor, (body.reason if body else None) or f"retrain requested through the admin API by {actor}")


@router.post("/models/{name}/retrain", summary="Queue a retrain (the alert webhook receiver)", status_code=202)
async def post_retrain(name: str, request: Request, body: RetrainRequest | None = None,
                       actor: str = Depends(authorize)) -> Response:
    """Queue a retrain of NAME for the scheduler's retrain rule set (one replica runs it, gated, to canary).
    Point an alert webhook here to retrain on an alert."""
    registry = server_state(request).registry
    trigger = _retrain_trigger(body, actor)
    queued = await anyio.to_thread.run_sync(lambda: request_retrain(registry, name, trigger))
    return json_response({"model": name, "action": "retrain", "queued": queued, "actor": trigger.actor,
                          "reason": trigger.reason}, status=202)
