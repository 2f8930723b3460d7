"""A tiny model repository (KServe style): model name → loaded versions, by alias, hot-reloaded.

A model is loaded the first time a request names it (``production``, a live ``canary`` and ``shadow`` at
start and as soon as they appear), and again whenever the alias it was asked by moves: a background task
polls ``Registry.all_aliases()`` (with the canary weights) and the models' settings every ``reload_interval``
seconds, and hands each moved alias to its ``AliasFollower`` (``runtime/follower.py``, the one the stream
consumer uses too): the new version is loaded and warmed up off the event loop, and only then swapped in;
requests keep being answered by the old version during the load, so a switch fails no request. A version
whose bundle fails verification (``IntegrityError``), loading (``BundleError``) or its warm-up is refused:
the old version keeps serving, and a log line and ``modelyard_model_load_failures_total{model,version}``
record it. A refused version is tried again after ``REFUSAL_RETRY`` seconds (someone may repair it).

Readiness is per alias: a follower is ready once it holds a loaded, warm version. The server is ready
(``/readyz``, ``GET /v2/health/ready``) when it has started, is not stopping, and every model's
``production`` alias is ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from modelyard.errors import (
    BundleError,
    ModelNotFoundError,
    ModelyardError,
    RegistryError,
    VersionNotFoundError,
)
from modelyard.monitor import metrics
from modelyard.registry import AliasRecord, Registry
from modelyard.runtime import AliasFollower, Model, ModelLoader
from modelyard.runtime.follower import REFUSAL_RETRY

log = logging.getLogger("modelyard.serve")
MAX_PINNED_VERSIONS = 8  # versions asked for by number (name@3) kept loaded, least recently used dropped
MAX_VERSION = 2**31 - 1
ROLLOUT_ALIASES = ("canary", "shadow")  # kept loaded (a canary only while its weight is above 0)
PRIMARY_ALIAS = "production"
__all__ = ["REFUSAL_RETRY", "ModelInfo", "ModelRepository"]


@dataclass(frozen=True)
class ModelInfo:
    """What the server knows of one model without touching the database."""

    name: str
    aliases: dict[str, int]
    weights: dict[str, float | None]
    loaded: dict[str, int]  # alias → version currently served for it


class ModelRepository:
    """Loads, serves and swaps model versions; safe to share between all requests of one event loop."""

    def __init__(self, registry: Registry, *, reload_interval: float = 2.0) -> None:
        self.registry = registry
        self.reload_interval = reload_interval
        self.loader = ModelLoader(self._fetch, on_refused=_count_refusal)
        self._aliases: dict[str, dict[str, AliasRecord]] = {}
        self._settings: dict[str, dict[str, Any]] = {}
        self._followers: dict[tuple[str, str], AliasFollower] = {}
        self._pinned: OrderedDict[tuple[str, int], Model] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._registry_down = False
        self._exported: set[tuple[str, str]] = set()
        self.started = False

    def _fetch(self, name: str, version: int) -> Any:
        return self.registry.load_bundle(self.registry.get_version(name, version))

    # ---- life cycle ----------------------------------------------------------------------------------
    async def start(self, warm_alias: str | None = PRIMARY_ALIAS) -> None:
        """Read every alias (fails loudly when the registry is unreachable), warm one alias, start polling."""
        self._aliases = await anyio.to_thread.run_sync(self.registry.all_aliases)
        self._settings = await anyio.to_thread.run_sync(self.registry.all_model_settings)
        self._export_aliases()
        if warm_alias:
            for name, aliases in sorted(self._aliases.items()):
                for alias in (warm_alias, *ROLLOUT_ALIASES):
                    if alias in aliases and (alias == warm_alias or _live(aliases[alias])):
                        try:
                            await self.get(name, alias)
                        except (BundleError, RegistryError, VersionNotFoundError) as exc:
                            log.error("model %s@%s could not be loaded at start: %s", name, alias, exc)
        self._task = asyncio.create_task(self._poll_forever(), name="modelyard-alias-poll")
        self.started = True

    async def stop(self) -> None:
        self.started = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # ---- readiness -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Started, and every model's production alias holds a loaded, warm version."""
        return self.started and not self.not_ready()

    def not_ready(self) -> dict[str, str]:
        """``name@production`` → why it does not serve, for every model whose production alias is not ready."""
        out: dict[str, str] = {}
        for name, aliases in sorted(self._aliases.items()):
            if PRIMARY_ALIAS not in aliases:
                continue
            follower = self._followers.get((name, PRIMARY_ALIAS))
            if follower is None or not follower.ready:
                error = follower.error if follower is not None else None
                out[f"{name}@{PRIMARY_ALIAS}"] = error.message if error is not None else "not loaded yet"
        return out

    async def is_ready(self, name: str, selector: str | int) -> bool:
        """Whether ``name@selector`` is served by a loaded, warm version (loading it when it was never asked
        for, as a request would). An unknown model or alias raises ``NotFoundError``."""
        follower = self._followers.get((name, selector)) if isinstance(selector, str) else None
        if follower is not None and follower.ready:
            return True
        try:
            await self.get(name, selector)
        except (BundleError, RegistryError):
            return False
        return True

    # ---- serving -------------------------------------------------------------------------------------
    async def get(self, name: str, selector: str | int) -> Model:
        """The model serving ``name@selector`` (an alias or a version number), loading it if needed."""
        if isinstance(selector, int):
            return await self._get_pinned(name, selector)
        follower = self._followers.get((name, selector))
        if follower is not None and follower.model is not None:
            return follower.model
        record = self._record(name, selector)
        follower = self._followers.setdefault((name, selector), AliasFollower(name, selector, self.loader))
        await follower.refresh(record.version)
        if follower.model is None:
            error = follower.error or self.loader.refusal(name, record.version)
            raise error if error is not None else BundleError(f"{name}@{selector} could not be loaded")
        return follower.model

    def _record(self, name: str, selector: str) -> AliasRecord:
        aliases = self._aliases.get(name)
        if aliases is None:
            known = sorted(self._aliases)
            listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise ModelNotFoundError(f"no model named '{name}' has an alias in the registry (models served: "
                                     f"{listed or 'none'})", model=name)
        record = aliases.get(selector)
        if record is None:
            raise VersionNotFoundError(f"model '{name}' has no alias '{selector}' (aliases: "
                                       f"{', '.join(sorted(aliases)) or 'none'})", model=name, alias=selector)
        return record

    async def _get_pinned(self, name: str, version: int) -> Model:
        if version < 1 or version > MAX_VERSION:
            raise VersionNotFoundError(f"model '{name}' has no version {version}", model=name,
                                       version=version)
        key = (name, version)
        model = self._pinned.get(key)
        if model is None:
            serving = (f.model for (n, _), f in self._followers.items()
                       if n == name and f.model is not None and f.model.version == version)
            model = next(serving, None)
        if model is None:
            model = await self.loader.load(name, version)
        self._pinned[key] = model
        self._pinned.move_to_end(key)
        while len(self._pinned) > MAX_PINNED_VERSIONS:
            self._pinned.popitem(last=False)
        return model

    def info(self) -> list[ModelInfo]:
        out = []
        for name, aliases in sorted(self._aliases.items()):
            loaded = {alias: f.model.version for (n, alias), f in self._followers.items()
                      if n == name and f.model is not None and f.model.version is not None}
            out.append(ModelInfo(name, {a: r.version for a, r in aliases.items()},
                                 {a: r.weight for a, r in aliases.items()}, loaded))
        return out

    def knows(self, name: str) -> bool:
        return name in self._aliases

    def aliases_of(self, name: str) -> dict[str, AliasRecord] | None:
        """The model's aliases as last polled (the same object until they are polled again)."""
        return self._aliases.get(name)

    def rollout_settings(self, name: str) -> dict[str, Any]:
        """``modelyard_models.settings["rollout"]`` as last polled, e.g. ``{"routing_column": "customer_id"}``."""
        return dict(self._settings.get(name, {}).get("rollout") or {})

    # ---- hot reload ----------------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alias poll failed")

    async def refresh(self) -> None:
        """Read every alias once; load and swap the ones that moved."""
        try:
            latest = await anyio.to_thread.run_sync(self.registry.all_aliases)
        except Exception as exc:  # the database is away: keep serving what is loaded
            if not self._registry_down:
                log.warning("registry unreachable, serving the loaded versions until it returns: %s",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._registry_down = True
            return
        if self._registry_down:
            log.warning("registry reachable again")
            self._registry_down = False
        for (name, alias), follower in list(self._followers.items()):
            record = latest.get(name, {}).get(alias)
            if record is None:
                self._followers.pop((name, alias), None)
                if follower.model is not None:
                    log.info("alias %s@%s was removed; no longer served", name, alias)
            elif follower.model is None or record.version != follower.model.version:
                await follower.refresh(record.version)
        await self._load_rollout_aliases(latest)
        try:
            self._settings = await anyio.to_thread.run_sync(self.registry.all_model_settings)
        except Exception:
            log.warning("could not read the models' settings; keeping the last ones", exc_info=True)
        self._aliases = latest
        self._export_aliases()

    async def _load_rollout_aliases(self, latest: dict[str, dict[str, AliasRecord]]) -> None:
        """Load a canary or shadow that appeared, before any request is routed to it."""
        for name, aliases in sorted(latest.items()):
            for alias in ROLLOUT_ALIASES:
                record = aliases.get(alias)
                if record is None or not _live(record) or (name, alias) in self._followers:
                    continue
                if self.loader.refusal(name, record.version) is not None:
                    continue
                follower = AliasFollower(name, alias, self.loader)
                if await follower.refresh(record.version):
                    self._followers[(name, alias)] = follower
                    log.info("%s@%s is v%d (loaded)", name, alias, record.version)

    def _export_aliases(self) -> None:
        exported = set()
        for name, aliases in self._aliases.items():
            for alias, record in aliases.items():
                metrics.ALIAS_VERSION.labels(name, alias).set(record.version)
                exported.add((name, alias))
            canary = aliases.get("canary")
            metrics.CANARY_WEIGHT.labels(name).set(float(canary.weight or 0.0) if canary else 0.0)
        for gone in self._exported - exported:  # a removed alias points at nothing: drop its series
            try:
                metrics.ALIAS_VERSION.remove(*gone)
            except KeyError:
                pass
        self._exported = exported


def _live(record: AliasRecord) -> bool:
    """A shadow always runs; a canary only while it gets traffic."""
    return record.alias != "canary" or bool(record.weight)


def _count_refusal(name: str, version: int, exc: ModelyardError) -> None:
    metrics.MODEL_LOAD_FAILURES.labels(name, str(version)).inc()
