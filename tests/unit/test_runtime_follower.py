"""The model's life cycle and the one alias follower, without services: the constructor only stores,
``Model.load`` loads; the follower swaps to a version that loads and warms up, refuses one that does not
(keeping the old one, counting it, not retrying it at once) and reports its readiness."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from modelyard.bundle import Bundle, load_bundle
from modelyard.errors import IntegrityError
from modelyard.runtime import AliasFollower, Model, ModelLoader, Readiness
from tests.batchstream_helpers import house_bundle_once


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(house_bundle_once(tmp_path_factory))


def test_the_constructor_only_stores_and_load_starts_the_fast_path(bundle: Bundle) -> None:
    stored = Model(bundle)
    assert stored.bundle_ is bundle and stored.runner_ is None and stored.onnx_bytes_ is None
    assert stored.fast_path == "sklearn"
    loaded = Model.load(bundle)
    assert loaded.fast_path == "onnx" and loaded.onnx_bytes_ is not None
    from_folder = Model.load(Path(bundle.path))
    assert from_folder.fast_path == "onnx" and from_folder.version == loaded.version
    assert Model.load(bundle, fast_path=False).fast_path == "sklearn"


class _Registry:
    """name, version → bundle; a version listed in ``corrupt`` fails verification."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.corrupt: set[int] = set()
        self.fetches: list[int] = []
        self.lock = threading.Lock()

    def fetch(self, name: str, version: int) -> Bundle:
        with self.lock:
            self.fetches.append(version)
        if version in self.corrupt:
            raise IntegrityError(f"{name} v{version}: the artifact is corrupt", file="model.joblib")
        manifest = self.bundle.manifest.model_copy(update={"version": version})
        return Bundle(self.bundle.path, manifest, self.bundle.pipeline_)


def test_the_follower_swaps_refuses_and_reports_readiness(bundle: Bundle) -> None:
    registry = _Registry(bundle)
    refused: list[tuple[str, int]] = []
    loader = ModelLoader(registry.fetch, on_refused=lambda n, v, e: refused.append((n, v)))
    target = {"version": 1}
    follower = AliasFollower("house", "production", loader, resolve=lambda: target["version"])
    registry.corrupt = {1, 3}

    async def scenario() -> None:
        assert follower.readiness is Readiness.LOADING
        assert not await follower.refresh()  # v1 is corrupt: nothing to serve
        assert follower.readiness is Readiness.FAILED and isinstance(follower.error, IntegrityError)
        target["version"] = 2
        assert await follower.refresh()
        assert follower.readiness is Readiness.READY and follower.model is not None
        assert follower.model.version == 2
        target["version"] = 3
        assert not await follower.refresh()
        assert follower.model.version == 2 and follower.ready  # the old one keeps serving
        fetched = len(registry.fetches)
        assert not await follower.refresh()  # refused a moment ago: not fetched again
        assert len(registry.fetches) == fetched
        with pytest.raises(IntegrityError):
            await loader.load("house", 3)

    asyncio.run(scenario())
    assert refused == [("house", 1), ("house", 3)] and loader.refusals == 2


def test_concurrent_loads_of_one_version_share_one_fetch(bundle: Bundle) -> None:
    registry = _Registry(bundle)
    loader = ModelLoader(registry.fetch)

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(*(loader.load("house", 4) for _ in range(6))))

    models = asyncio.run(scenario())
    assert len({id(m) for m in models}) == 1 and registry.fetches == [4]
