"""Where a request picks the version that answers it: the server's side of ``modelyard.rollout``.

A request for ``name`` or ``name@production`` follows the model's routing policy: the ``production`` version
answers, unless the sticky canary split sends its routing key to the ``canary`` (then the primary stands by
to answer if the canary fails, and may be mirrored); a ``shadow`` sees the rows after the answer. The key is
the ``X-Routing-Key`` header, else the first row's value of the column named in the model's rollout
settings (``{"rollout": {"routing_column": "customer_id"}}``), else the request id. A request that names an
alias or a version (``name@canary``, ``name@3``) goes exactly there, on the route ``primary``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modelyard.errors import ModelNotFoundError, ModelyardError
from modelyard.registry import AliasRecord, parse_ref
from modelyard.rollout import CANARY, PRODUCTION, ROUTING_HEADER, RoutingPolicy, routing_key
from modelyard.runtime import Model
from modelyard.serve.repository import ModelRepository

log = logging.getLogger("modelyard.serve")
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Routed:
    """The decision for one request: which route, which loaded model, and the name it was asked by.

    On a canary route, ``primary`` is the production model that answers when the canary fails and, when
    ``mirror`` is set, also predicts the rows afterwards for comparison. ``shadow`` says the model's shadow
    alias sees the rows after the answer.
    """

    route: str
    model: Model
    name: str
    selector: str | int
    primary: Model | None = None
    shadow: bool = False
    mirror: bool = False

    def fall_back(self) -> Routed:
        """The same request answered by the primary (the canary failed on it)."""
        assert self.primary is not None
        return replace(self, route="primary", model=self.primary, primary=None, mirror=False)


class Router:
    def __init__(self, repository: ModelRepository, *, mirror: bool = True) -> None:
        self.repository = repository
        self.mirror = mirror
        self._policies: dict[str, tuple[dict[str, AliasRecord], RoutingPolicy]] = {}
        self._unloadable: set[tuple[str, int]] = set()

    async def select(
        self,
        ref: str,
        *,
        request_id: str,
        headers: Mapping[str, str],
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> Routed:
        """(route, model) for one request. Raises ``NotFoundError`` (404) for an unknown model or alias."""
        if not ref or len(ref) > 300:
            raise ModelNotFoundError("the model reference is empty or too long", model=ref[:300])
        name, selector = parse_ref(ref)
        policy = self._policy(name) if selector == PRODUCTION else None
        if policy is None or (policy.canary is None and policy.shadow is None):
            return Routed("primary", await self.repository.get(name, selector), name, selector)
        column = self.repository.rollout_settings(name).get("routing_column")
        first = rows[0] if rows and isinstance(rows[0], Mapping) else None
        key = routing_key(request_id, header=headers.get(ROUTING_HEADER), row=first,
                          column=column if isinstance(column, str) else None)
        route = policy.choose(key[:MAX_KEY_CHARS])
        primary = await self.repository.get(name, PRODUCTION)
        if route.is_canary:
            canary = await self._canary(name, route.version)
            if canary is not None and canary.version != primary.version:
                return Routed(CANARY, canary, name, selector, primary=primary, shadow=route.shadow is not None,
                              mirror=route.mirror)
        shadow = policy.shadow is not None and policy.shadow != primary.version
        return Routed("primary", primary, name, selector, shadow=shadow)

    def _policy(self, name: str) -> RoutingPolicy | None:
        """The model's policy, rebuilt only when the repository polled new aliases."""
        aliases = self.repository.aliases_of(name)
        if aliases is None or PRODUCTION not in aliases:
            return None
        cached = self._policies.get(name)
        if cached is not None and cached[0] is aliases:
            return cached[1]
        policy = RoutingPolicy(name, aliases, mirror=self.mirror)
        self._policies[name] = (aliases, policy)
        return policy

    async def _canary(self, name: str, version: int) -> Model | None:
        """The loaded canary; None (the primary answers) while it cannot be loaded."""
        try:
            return await self.repository.get(name, CANARY)
        except ModelyardError as exc:
            if (name, version) not in self._unloadable:  # say it once, not on every request
                self._unloadable.add((name, version))
                log.error("canary %s v%d cannot be loaded, the primary answers its share: %s", name, version,
                          exc.message)
            return None
