"""The model repository on SQLite, without HTTP: lazy loads, alias swaps on refresh, a refused corrupt
version that leaves the old one serving, pinned versions, and the metrics it exports."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY
from sklearn.linear_model import LinearRegression

import modelyard
from modelyard.config import Settings
from modelyard.errors import IntegrityError, ModelNotFoundError, NotFoundError, VersionNotFoundError
from modelyard.registry import Registry
from modelyard.serve.repository import ModelRepository
from modelyard.serve.routing import Router


def _publish_three(settings: Settings) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    for k in (1, 2, 3):
        y = k * frame["a"]
        modelyard.publish("lin", LinearRegression().fit(frame, y), frame, y,
                          alias="production" if k == 1 else None, settings=settings)


def _failures(version: str) -> float:
    return REGISTRY.get_sample_value("modelyard_model_load_failures_total",
                                     {"model": "lin", "version": version}) or 0.0


def test_aliases_swap_on_refresh_and_a_corrupt_version_is_refused(sqlite_settings: Settings) -> None:
    _publish_three(sqlite_settings)
    registry = Registry(sqlite_settings)
    sha = registry.get_version("lin", 3).archive_sha256
    archive = sqlite_settings.resolved_artifact_root / "sha256" / sha[:2] / f"{sha}.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    archive.write_bytes(bytes(data))
    failures_before = _failures("3")

    async def scenario() -> None:
        repo = ModelRepository(registry, reload_interval=3600)
        await repo.start()
        try:
            assert (await repo.get("lin", "production")).version == 1
            assert repo.info()[0].loaded == {"production": 1}
            registry.set_alias("lin", "production", 2)
            assert (await repo.get("lin", "production")).version == 1  # until the next poll
            await repo.refresh()
            assert (await repo.get("lin", "production")).version == 2
            labels = {"model": "lin", "alias": "production"}
            assert REGISTRY.get_sample_value("modelyard_alias_version", labels) == 2

            registry.set_alias("lin", "production", 3)
            await repo.refresh()
            assert (await repo.get("lin", "production")).version == 2  # v3 refused, v2 keeps serving
            assert _failures("3") == failures_before + 1
            await repo.refresh()  # not retried (and not counted again) right away
            assert _failures("3") == failures_before + 1
            with pytest.raises(IntegrityError):
                await repo.get("lin", 3)

            assert (await repo.get("lin", 1)).version == 1  # a pinned version, whatever the aliases say
            with pytest.raises(ModelNotFoundError):
                await repo.get("nope", "production")
            with pytest.raises(VersionNotFoundError):
                await repo.get("lin", "canary")
            with pytest.raises(VersionNotFoundError):
                await repo.get("lin", 2**40)

            registry.remove_alias("lin", "production")
            await repo.refresh()
            with pytest.raises(NotFoundError):  # "lin" has no alias left at all
                await repo.get("lin", "production")
        finally:
            await repo.stop()

    asyncio.run(scenario())


def test_concurrent_first_requests_share_one_load(sqlite_settings: Settings) -> None:
    _publish_three(sqlite_settings)
    registry = Registry(sqlite_settings)

    async def scenario() -> None:
        repo = ModelRepository(registry, reload_interval=3600)
        await repo.start(warm_alias=None)
        try:
            registry.set_alias("lin", "staging", 2)
            await repo.refresh()
            models = await asyncio.gather(*(repo.get("lin", "staging") for _ in range(8)))
            assert len({id(m) for m in models}) == 1 and models[0].version == 2
            routed = await Router(repo).select("lin@staging", request_id="r", headers={})
            assert (routed.route, routed.model.version, routed.name, routed.selector) == \
                ("primary", 2, "lin", "staging")
        finally:
            await repo.stop()

    asyncio.run(scenario())


def _corrupt(settings: Settings, name: str, version: int) -> None:
    sha = Registry(settings).get_version(name, version).archive_sha256
    archive = settings.resolved_artifact_root / "sha256" / sha[:2] / f"{sha}.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    archive.write_bytes(bytes(data))


def test_readiness_is_per_production_alias_and_a_refused_version_makes_the_server_not_ready(
        sqlite_settings: Settings) -> None:
    _publish_three(sqlite_settings)  # lin v1 (production), v2, v3
    rng = np.random.default_rng(4)
    other = pd.DataFrame({"x": rng.normal(size=50)})
    modelyard.publish("other", LinearRegression().fit(other, other["x"]), other, other["x"], alias="production",
                      settings=sqlite_settings)
    _corrupt(sqlite_settings, "lin", 1)
    registry = Registry(sqlite_settings)

    async def scenario() -> None:
        repo = ModelRepository(registry, reload_interval=3600)
        assert not repo.ready  # not started
        await repo.start()
        try:
            assert not repo.ready
            assert list(repo.not_ready()) == ["lin@production"]
            assert "corrupt" in repo.not_ready()["lin@production"]
            assert await repo.is_ready("lin", "production") is False
            assert await repo.is_ready("lin", 1) is False
            assert await repo.is_ready("other", "production") is True
            assert await repo.is_ready("lin", 2) is True  # a good version of the same model, by number
            with pytest.raises(NotFoundError):
                await repo.is_ready("nope", "production")

            registry.set_alias("lin", "production", 2)
            await repo.refresh()
            assert repo.ready and repo.not_ready() == {}
            assert await repo.is_ready("lin", "production") is True
        finally:
            await repo.stop()
        assert not repo.ready  # stopped

    asyncio.run(scenario())
