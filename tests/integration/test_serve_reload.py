"""Hot reload on a real server and PostgreSQL: another process moves an alias, clients looping through the
switch see no error and then the new version; a corrupt artifact behind the alias is refused and the old
version keeps serving."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.config import Settings
from modelyard.pipeline import load_spec, train
from modelyard.registry import Registry
from tests.conftest import run_cli
from tests.integration.serving import LoadLoop, fresh_pg_database, house_rows
from tests.support import Server, wait_until
from tests.support.serving import house_spec_in

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings]]:
    """house-prices v1 (production), v2 and v3 published; a server polling aliases every 0.3 s."""
    folder = tmp_path_factory.mktemp("serve_reload")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        result = train(load_spec(house_spec_in(folder / "house")))
        registry = Registry(settings)
        with tempfile.TemporaryDirectory() as tmp:
            result.write_bundle(Path(tmp) / "b")
            for alias in ("production", None, None):
                registry.publish(Path(tmp) / "b", alias=alias)
        with Server(settings, folder / "server.log", MODELYARD_RELOAD_INTERVAL="0.3") as server:
            yield server, settings


def _per_worker_versions(loop: LoadLoop) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for a in loop.answers:
        out.setdefault(a.request_id.split("-")[1], []).append(a.version)
    return out


def test_alias_moved_by_another_process_switches_without_a_failed_request(
    served: tuple[Server, Settings],
) -> None:
    server, settings = served
    loop = LoadLoop(f"{server.url}/v1/models/house-prices/predict", {"instances": house_rows(2)}, threads=3)
    loop.start()
    try:
        loop.wait_for(30)
        assert {a.version for a in loop.answers} == {1}
        moved = run_cli("alias", "set", "house-prices", "2", "production", settings=settings)
        assert moved.returncode == 0, moved.stderr
        wait_until(lambda: any(a.version == 2 for a in loop.answers), 30, "the server to answer with v2")
        loop.wait_for(30)
    finally:
        loop.stop()
    assert not loop.failures, loop.failures[:5]
    bad = [a for a in loop.answers if a.status != 200]
    assert not bad, bad[:5]
    for worker, versions in _per_worker_versions(loop).items():
        first_new = versions.index(2)
        assert set(versions[:first_new]) == {1} and set(versions[first_new:]) == {2}, (worker, versions)
    assert "house-prices@production switched from v1 to v2" in server.log()


def test_corrupt_artifact_behind_the_alias_is_refused_and_the_old_version_keeps_serving(
    served: tuple[Server, Settings],
) -> None:
    server, settings = served
    registry = Registry(settings)
    before = registry.aliases("house-prices")["production"].version
    assert before in (1, 2)
    archive_sha = registry.get_version("house-prices", 3).archive_sha256
    archive = settings.resolved_artifact_root / "sha256" / archive_sha[:2] / f"{archive_sha}.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))

    loop = LoadLoop(f"{server.url}/v1/models/house-prices/predict", {"instances": house_rows(2)}, threads=2)
    loop.start()
    try:
        loop.wait_for(20)
        moved = run_cli("alias", "set", "house-prices", "3", "production", settings=settings)
        assert moved.returncode == 0, moved.stderr
        wait_until(lambda: server.metric("modelyard_model_load_failures_total", model="house-prices",
                                         version="3") >= 1, 30, "the refusal to be counted", interval=0.3)
        loop.wait_for(30)
    finally:
        loop.stop()
    assert not loop.failures, loop.failures[:5]
    assert {a.status for a in loop.answers} == {200}
    assert {a.version for a in loop.answers} == {before}
    log = server.log()
    assert "refused to load house-prices v3" in log and "the artifact is corrupt or was changed" in log
    listed = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
    assert listed["house-prices"]["aliases"]["production"] == 3
    assert listed["house-prices"]["serving"]["production"] == before
