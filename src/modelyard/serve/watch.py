"""The canary watcher inside the server: ``Watcher.run_once`` every ``watch_interval`` seconds.

Every server process (every uvicorn worker of every replica) runs one; the lease row in the shared database
lets exactly one of them act on each run, and passes to another when its holder stops or dies. After a
rollback this process re-reads its aliases at once instead of waiting for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import anyio.to_thread

from modelyard.errors import ConfigError
from modelyard.registry import Registry
from modelyard.rollout import Watcher, WatchRules
from modelyard.serve.repository import ModelRepository

log = logging.getLogger("modelyard.serve")


def watch_rules(overrides: dict[str, Any]) -> WatchRules:
    """``WatchRules`` with the ``watch_rules`` setting applied; an unknown name is a configuration error."""
    known = {f.name for f in dataclasses.fields(WatchRules)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"MODELYARD_WATCH_RULES: unknown rule {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values = {k: (int(v) if k in ("min_requests", "min_pairs") and v is not None else v)
              for k, v in overrides.items()}
    return dataclasses.replace(WatchRules(), **values)


class WatchTask:
    def __init__(self, registry: Registry, repository: ModelRepository, *, interval: float,
                 rules: WatchRules) -> None:
        self.watcher = Watcher(registry, rules, lease_ttl=max(30.0, 3 * interval))
        self.repository = repository
        self.interval = interval
        self.leader: bool | None = None  # unknown until the first run
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> WatchTask:
        self._task = asyncio.create_task(self._loop(), name="modelyard-canary-watcher")
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.leader:  # hand the lease over now rather than when it expires
            try:
                await anyio.to_thread.run_sync(self.watcher.lease.release)
            except Exception:
                log.warning("canary watcher: could not release the lease; it expires in %.0fs",
                            self.watcher.lease.ttl)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                run = await anyio.to_thread.run_sync(self.watcher.run_once)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a while: keep watching
                log.warning("canary watcher: run failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
                continue
            if run.leader != self.leader:
                self.leader = run.leader
                log.info("canary watcher: %s", "this process acts (lease taken)" if run.leader
                         else "another process acts (lease held elsewhere)")
            for health in run.checked:
                if health.model in run.rolled_back:
                    log.warning("canary watcher rolled back %s v%d: %s", health.model, health.canary_version,
                                "; ".join(health.breaches))
            if run.rolled_back:
                await self.repository.refresh()
