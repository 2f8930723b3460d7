"""Following ``name@alias``: load the version it points at, warm it up, refuse a bad one, swap atomically.

The one alias follower, shared by the server's model repository (``serve/repository.py``) and the stream
consumer (``stream/consumer.py``). Runtime knows nothing of the registry: the caller passes ``fetch``
(name, version → a verified ``Bundle``) to the ``ModelLoader`` and, to a follower that resolves on its
own, ``resolve`` (→ the version the alias points at now).

A version whose bundle fails verification or loading, or cannot predict its own reference rows, is
refused: the follower keeps the version it had (a log line, ``refusals`` and the caller's ``on_refused``
count it), and the refused version is not tried again for ``retry_after`` seconds (someone may repair the
artifact). A follower is ready once it holds a loaded, warm version; readiness is what ``/readyz`` and the
V2 ready routes report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from modelyard.bundle import Bundle
from modelyard.errors import BundleError, ModelyardError, RegistryError
from modelyard.runtime.predictor import Model

log = logging.getLogger("modelyard.runtime")
REFUSAL_RETRY = 60.0
Fetch = Callable[[str, int], Bundle]
OnRefused = Callable[[str, int, ModelyardError], None]
REFUSED = (BundleError, RegistryError)  # what a version's artifact can be blamed for


class Readiness(StrEnum):
    LOADING = "loading"  # nothing loaded yet
    READY = "ready"  # a loaded, warm version serves
    FAILED = "failed"  # the version it should serve was refused and there is no older one


@dataclass
class _Refusal:
    at: float
    error: ModelyardError


class ModelLoader:
    """Loads model versions (fetch, ``Model.load``, warm-up) off the event loop; concurrent callers of one
    version share one load; a refused version raises its refusal again until ``retry_after`` has passed."""

    def __init__(self, fetch: Fetch, *, retry_after: float = REFUSAL_RETRY, on_refused: OnRefused | None = None,
                 fast_path: bool = True) -> None:
        self.fetch = fetch
        self.retry_after = retry_after
        self.on_refused = on_refused
        self.fast_path = fast_path
        self.refusals = 0
        self._refused: dict[tuple[str, int], _Refusal] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[Model]] = {}

    def refusal(self, name: str, version: int) -> ModelyardError | None:
        """Why ``name`` v``version`` was refused, while that refusal stands."""
        refused = self._refused.get((name, version))
        if refused is None or time.monotonic() - refused.at >= self.retry_after:
            return None
        return refused.error

    def load_sync(self, name: str, version: int) -> Model:
        """Load and warm up one version in the calling thread; a refusal is recorded and raised."""
        refused = self.refusal(name, version)
        if refused is not None:
            raise refused.with_traceback(None)
        started = time.perf_counter()
        try:
            model = Model.load(self.fetch(name, version), fast_path=self.fast_path)
            model.warm_up()
        except REFUSED as exc:
            self._refuse(name, version, exc)
            raise
        self._refused.pop((name, version), None)
        log.info("loaded %s v%d in %.2fs", name, version, time.perf_counter() - started)
        return model

    async def load(self, name: str, version: int) -> Model:
        """``load_sync`` in a worker thread; concurrent callers for one version share one load."""
        key = (name, version)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Model] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            model = await asyncio.to_thread(self.load_sync, name, version)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        else:
            future.set_result(model)
            return model
        finally:
            self._loading.pop(key, None)

    def _refuse(self, name: str, version: int, exc: ModelyardError) -> None:
        self._refused[(name, version)] = _Refusal(time.monotonic(), exc)
        self.refusals += 1
        log.error("refused to load %s v%d: %s", name, version, exc.message)
        if self.on_refused is not None:
            self.on_refused(name, version, exc)


class AliasFollower:
    """The model serving ``name@alias``; ``refresh`` moves it to the version the alias points at now.

    The swap is one attribute assignment: a reader of ``model`` gets the old or the new version, never a
    half-loaded one, and the old one keeps answering while the new one loads.
    """

    def __init__(self, name: str, alias: str, loader: ModelLoader,
                 resolve: Callable[[], int] | None = None) -> None:
        self.name = name
        self.alias = alias
        self.loader = loader
        self.resolve = resolve
        self.model: Model | None = None
        self.error: ModelyardError | None = None  # why the version it should serve is not served
        self._lock = asyncio.Lock()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}"

    @property
    def readiness(self) -> Readiness:
        if self.model is not None:
            return Readiness.READY
        return Readiness.FAILED if self.error is not None else Readiness.LOADING

    @property
    def ready(self) -> bool:
        return self.model is not None

    def adopt(self, model: Model) -> None:
        """Serve ``model`` (loaded by the caller) from now on."""
        old, self.model, self.error = self.model, model, None
        if old is not None and old.version != model.version:
            log.info("%s switched from v%s to v%s", self.ref, old.version, model.version)

    async def refresh(self, version: int | None = None) -> bool:
        """Move to ``version`` (``resolve()`` when not given); True when a new version now serves.

        A refused version, or a registry that cannot be read, leaves the current version serving; only an
        error nobody planned for (a bug) is raised."""
        async with self._lock:
            if version is None:
                if self.resolve is None:
                    raise TypeError(f"{self.ref}: no version given and no resolve() to ask")
                try:
                    version = await asyncio.to_thread(self.resolve)
                except Exception as exc:  # a registry hiccup must not stop what is served
                    log.warning("could not re-resolve %s: %s", self.ref, exc)
                    return False
            if self.model is not None and self.model.version == version:
                return False
            if self.loader.refusal(self.name, version) is not None and self.model is not None:
                return False  # refused a moment ago: not retried (nor counted) on every poll
            try:
                model = await self.loader.load(self.name, version)
            except ModelyardError as exc:
                self.error = exc
                if self.model is not None:
                    log.error("%s moved to v%d, which was refused; v%s keeps serving", self.ref, version,
                              self.model.version)
                return False
            self.adopt(model)
            return True

    async def follow(self, stop: asyncio.Event, interval: float) -> None:
        """Refresh every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                await self.refresh()
            except Exception:  # a bug: logged, and the stream goes on with the version it has
                log.exception("following %s failed", self.ref)
