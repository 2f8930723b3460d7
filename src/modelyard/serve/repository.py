"""A tiny model repository (KServe style): model name → loaded versions, by alias, hot-reloaded.

A model is loaded the first time a request names it (``production``, a live ``canary`` and ``shadow`` at
start and as soon as they appear), and again whenever the alias it was asked by moves: a background task
polls ``Registry.all_aliases()`` (with the canary weights) and the models' settings every ``reload_interval``
seconds, loads the new version off the event loop, and only then swaps the alias to it; requests keep
being answered by the old version during the load, so a switch fails no request. A version whose bundle
fails verification (``IntegrityError``) or loading (``BundleError``) is refused: the old version keeps
serving, and a log line and ``modelyard_model_load_failures_total{model,version}`` record it. A refused
version is tried again after ``REFUSAL_RETRY`` seconds (someone may repair the artifact).
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from modelyard.runtime import Model

log = logging.getLogger("modelyard.serve")
REFUSAL_RETRY = 60.0
MAX_PINNED_VERSIONS = 8  # versions asked for by number (name@3) kept loaded, least recently used dropped
MAX_VERSION = 2**31 - 1
ROLLOUT_ALIASES = ("canary", "shadow")  # kept loaded (a canary only while its weight is above 0)


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
        self._aliases: dict[str, dict[str, AliasRecord]] = {}
        self._settings: dict[str, dict[str, Any]] = {}
        self._serving: dict[tuple[str, str], Model] = {}
        self._pinned: OrderedDict[tuple[str, int], Model] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[Model]] = {}
        self._refused: dict[tuple[str, int], tuple[float, Exception]] = {}
        self._task: asyncio.Task[None] | None = None
        self._registry_down = False
        self._exported: set[tuple[str, str]] = set()
        self.ready = False

    # ---- life cycle ----------------------------------------------------------------------------------
    async def start(self, warm_alias: str | None = "production") -> None:
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
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # ---- serving -------------------------------------------------------------------------------------
    async def get(self, name: str, selector: str | int) -> Model:
        """The model serving ``name@selector`` (an alias or a version number), loading it if needed."""
        if isinstance(selector, int):
            return await self._get_pinned(name, selector)
        model = self._serving.get((name, selector))
        if model is not None:
            return model
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
        model = await self._load(name, record.version)
        current = self._aliases.get(name, {}).get(selector)
        if current is not None and current.version == record.version:
            self._serving.setdefault((name, selector), model)
        return model

    async def _get_pinned(self, name: str, version: int) -> Model:
        if version < 1 or version > MAX_VERSION:
            raise VersionNotFoundError(f"model '{name}' has no version {version}", model=name,
                                       version=version)
        key = (name, version)
        model = self._pinned.get(key)
        if model is None:
            serving = (m for (n, _), m in self._serving.items() if n == name and m.version == version)
            model = next(serving, None)
        if model is None:
            model = await self._load(name, version)
        self._pinned[key] = model
        self._pinned.move_to_end(key)
        while len(self._pinned) > MAX_PINNED_VERSIONS:
            self._pinned.popitem(last=False)
        return model

    def info(self) -> list[ModelInfo]:
        out = []
        for name, aliases in sorted(self._aliases.items()):
            loaded = {alias: m.version for (n, alias), m in self._serving.items() if n == name}
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

    # ---- loading -------------------------------------------------------------------------------------
    async def _load(self, name: str, version: int) -> Model:
        """Load one version off the event loop; concurrent callers share one load."""
        key = (name, version)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        refused = self._refused.get(key)
        if refused is not None and time.monotonic() - refused[0] < REFUSAL_RETRY:
            raise refused[1].with_traceback(None)
        future: asyncio.Future[Model] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            model = await anyio.to_thread.run_sync(self._load_sync, name, version)
        except BaseException as exc:
            if isinstance(exc, (BundleError, RegistryError)):
                self._refused[key] = (time.monotonic(), exc)
                metrics.MODEL_LOAD_FAILURES.labels(name, str(version)).inc()
                log.error("refused to load %s v%d: %s", name, version, getattr(exc, "message", exc))
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        else:
            self._refused.pop(key, None)
            future.set_result(model)
            return model
        finally:
            self._loading.pop(key, None)

    def _load_sync(self, name: str, version: int) -> Model:
        started = time.perf_counter()
        record = self.registry.get_version(name, version)
        model = Model(self.registry.load_bundle(record))
        _warm_up(model)
        log.info("loaded %s v%d in %.2fs", name, version, time.perf_counter() - started)
        return model

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
        for (name, alias), model in list(self._serving.items()):
            record = latest.get(name, {}).get(alias)
            if record is None:
                self._serving.pop((name, alias), None)
                log.info("alias %s@%s was removed; no longer served", name, alias)
            elif record.version != model.version:
                await self._swap(name, alias, record.version, model)
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
                if record is None or not _live(record) or (name, alias) in self._serving:
                    continue
                refused = self._refused.get((name, record.version))
                if refused is not None and time.monotonic() - refused[0] < REFUSAL_RETRY:
                    continue
                try:
                    self._serving[(name, alias)] = await self._load(name, record.version)
                except (BundleError, RegistryError, VersionNotFoundError, ModelNotFoundError) as exc:
                    log.error("%s@%s (v%d) could not be loaded: %s", name, alias, record.version,
                              getattr(exc, "message", exc))
                    continue
                log.info("%s@%s is v%d (loaded)", name, alias, record.version)

    async def _swap(self, name: str, alias: str, version: int, old: Model) -> None:
        refused = self._refused.get((name, version))
        if refused is not None and time.monotonic() - refused[0] < REFUSAL_RETRY:
            return
        try:
            model = await self._load(name, version)
        except (BundleError, RegistryError, VersionNotFoundError, ModelNotFoundError):
            log.error("%s@%s moved to v%d, which was refused; v%s keeps serving", name, alias, version,
                      old.version)
            return
        self._serving[(name, alias)] = model
        log.info("%s@%s switched from v%s to v%d", name, alias, old.version, version)

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


def _warm_up(model: Model) -> None:
    """Predict two of the bundle's own reference rows: the first request is then as fast as the rest, and a
    version that cannot even predict its reference set is refused before it serves anyone."""
    try:
        rows = model.bundle_.reference_inputs().head(2)
    except Exception:  # an imported model may have no reference set: nothing to warm up with
        return
    if rows.empty:
        return
    try:
        model.predict_frame(model.validate(rows))
    except ModelyardError as exc:
        raise BundleError(f"{model.name} v{model.version} cannot predict its own reference rows: "
                          f"{exc.message}", model=model.name, version=model.version) from exc
