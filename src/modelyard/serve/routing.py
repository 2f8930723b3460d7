"""Where a request picks the version that answers it: the one seam for rollout policies.

Today every request goes to the version its reference names (``name`` → ``production``, ``name@alias``,
``name@3``) on the route ``primary``. Canary (a sticky weight) and shadow routing plug in here: they need
the request id, the headers and the rows, which is why ``select`` receives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ModelNotFoundError
from modelyard.registry import parse_ref
from modelyard.runtime import Model
from modelyard.serve.repository import ModelRepository


@dataclass(frozen=True)
class Routed:
    """The decision for one request: which route, which loaded model, and the name it was asked by."""

    route: str
    model: Model
    name: str
    selector: str | int


class Router:
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

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
        model = await self.repository.get(name, selector)
        return Routed("primary", model, name, selector)
