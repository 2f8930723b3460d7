"""The routing policy: which version answers a request, and which versions also see it afterwards.

Given a model's aliases (``production``, ``canary`` with a weight, ``shadow``) and a routing key, ``choose``
returns a ``Route``. The canary split is sticky: the key is hashed with BLAKE2b (stable across processes
and Python versions, unlike ``hash()``, which is salted per process) into a bucket in [0, 1); buckets below
the canary weight go to the canary. One key therefore always sees one version, every replica agrees, and
raising the weight only moves keys towards the canary, never back.

The policy does no I/O and knows nothing of HTTP: the server reads aliases (hot-reloaded), picks the key
(``routing_key``), calls ``choose`` and runs what the ``Route`` says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.errors import VersionNotFoundError
from modelyard.registry import AliasRecord

PRODUCTION = "production"
CANARY = "canary"
SHADOW = "shadow"
MIRROR = "mirror"  # the route of the primary's answer to a canary request: logged, never returned
ROUTING_HEADER = "X-Routing-Key"


def bucket(model: str, key: str) -> float:
    """A stable position in [0, 1) for ``key`` (per model, so two models split their keys independently)."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Route:
    """What to do with one request.

    ``version`` answers (``route`` is ``"primary"`` or ``"canary"``). If the canary fails, answer with
    ``primary`` instead and log the canary's error. After answering, run ``shadow`` (when set) and, when
    ``mirror`` is true, the primary too (logged on route ``mirror``): both are logged under the same request
    id and never returned, so the watcher can measure the canary's disagreement with the primary.
    """

    model: str
    version: int
    route: str
    primary: int
    shadow: int | None = None
    mirror: bool = False

    @property
    def is_canary(self) -> bool:
        return self.route == CANARY


class RoutingPolicy:
    """Primary + optional sticky canary + optional shadow, from one model's aliases."""

    def __init__(self, model: str, aliases: Mapping[str, AliasRecord], *, mirror: bool = True) -> None:
        if PRODUCTION not in aliases:
            raise VersionNotFoundError(
                f"model '{model}' has no '{PRODUCTION}' alias: promote a version first", model=model,
                alias=PRODUCTION,
            )
        self.model = model
        self.primary = aliases[PRODUCTION].version
        canary = aliases.get(CANARY)
        weight = 0.0 if canary is None or canary.weight is None else min(max(float(canary.weight), 0.0), 1.0)
        if canary is None or canary.version == self.primary:
            weight = 0.0
        self.canary = canary.version if canary is not None and weight > 0 else None
        self.weight = weight
        shadow = aliases.get(SHADOW)
        self.shadow = shadow.version if shadow is not None else None
        self.mirror = mirror

    def choose(self, key: str) -> Route:
        """The route of the request identified by ``key`` (same key → same route, in every process)."""
        if self.canary is not None and bucket(self.model, key) < self.weight:
            version, route = self.canary, CANARY
        else:
            version, route = self.primary, "primary"
        shadow = self.shadow if self.shadow is not None and self.shadow != version else None
        return Route(self.model, version, route, self.primary, shadow, mirror=self.mirror and route == CANARY)

    def describe(self) -> dict[str, Any]:
        """The traffic split, as ``GET /v1/models/{name}`` shows it."""
        return {"primary": self.primary, "canary": self.canary, "canary_weight": self.weight,
                "shadow": self.shadow}


def choose(model: str, aliases: Mapping[str, AliasRecord], key: str, *, mirror: bool = True) -> Route:
    """One-shot form of ``RoutingPolicy(model, aliases).choose(key)``."""
    return RoutingPolicy(model, aliases, mirror=mirror).choose(key)


def routing_key(request_id: str, *, header: str | None = None, row: Mapping[str, Any] | None = None,
                column: str | None = None) -> str:
    """The sticky key: the ``X-Routing-Key`` header, else ``column`` of the first row, else the request id."""
    if header:
        return header
    if column and row is not None and row.get(column) is not None:
        return str(row[column])
    return request_id
