"""The registry contract, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from modelyard.bundle import write_bundle
from modelyard.config import Settings
from modelyard.errors import ModelNotFoundError, VersionNotFoundError
from modelyard.registry import Registry
from modelyard.registry import tables as t
from tests.conftest import cli_env
from tests.manifests import manifest_of


def _bundle_dir(tmp_path: Path, name: str = "lin", slope: float = 2.0) -> Path:
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    directory = tmp_path / f"bundle-{slope}"
    model = LinearRegression().fit(X, [slope * v for v in X["a"]])
    write_bundle(directory, pipeline=model, manifest=manifest_of({"name": name}), reference=X)
    return directory


def test_versions_are_numbered_and_immutable(any_settings: Settings, tmp_path: Path) -> None:
    registry = Registry(any_settings)
    v1 = registry.publish(_bundle_dir(tmp_path, slope=2.0))
    v2 = registry.publish(_bundle_dir(tmp_path, slope=3.0))
    assert (v1, v2) == (1, 2)
    assert [r.version for r in registry.versions("lin")] == [1, 2]
    assert registry.load("lin@1").pipeline_.coef_[0] == pytest.approx(2.0)
    assert registry.load("lin@2").pipeline_.coef_[0] == pytest.approx(3.0)
    assert registry.get_version("lin", 2).manifest.version == 2


def test_aliases_move_and_every_change_is_an_event(any_settings: Settings, tmp_path: Path) -> None:
    registry = Registry(any_settings)
    registry.publish(_bundle_dir(tmp_path, slope=2.0), alias="production", actor="ci")
    registry.publish(_bundle_dir(tmp_path, slope=3.0))
    registry.set_alias("lin", "canary", 2, weight=0.1, actor="alice", reason="try v2")
    registry.set_alias("lin", "production", 2, actor="bob", reason="v2 is better")
    assert registry.resolve("lin").version == 2
    assert registry.aliases("lin")["canary"].weight == pytest.approx(0.1)
    events = registry.events("lin")
    moved = [e for e in events if e.kind == "alias_set" and e.alias == "production"]
    assert [(e.from_version, e.to_version, e.actor) for e in moved] == [(1, 2, "bob"), (None, 1, "ci")]
    assert moved[0].reason == "v2 is better"
    registry.remove_alias("lin", "canary", reason="done")
    assert "canary" not in registry.aliases("lin")
    assert registry.events("lin")[0].kind == "alias_removed"


def test_unknown_names_versions_and_aliases_are_not_found(any_settings: Settings, tmp_path: Path) -> None:
    registry = Registry(any_settings)
    registry.publish(_bundle_dir(tmp_path))
    with pytest.raises(ModelNotFoundError):
        registry.resolve("nope")
    with pytest.raises(VersionNotFoundError):
        registry.resolve("lin@7")
    with pytest.raises(VersionNotFoundError, match="no alias 'production'"):
        registry.resolve("lin")


def test_a_failed_publish_leaves_no_version_behind(any_settings: Settings, tmp_path: Path) -> None:
    registry = Registry(any_settings)
    directory = _bundle_dir(tmp_path)

    class BrokenStore(type(registry.store)):  # type: ignore[misc]
        def put(self, data: bytes) -> str:
            raise OSError("disk full")

    broken = Registry(any_settings, store=BrokenStore(any_settings.resolved_artifact_root))
    with pytest.raises(OSError):
        broken.publish(directory)
    with registry.engine.connect() as conn:
        assert conn.execute(t.model_versions.select()).fetchall() == []
    assert registry.publish(directory) == 1


PUBLISH = """
import sys
from pathlib import Path
from modelyard.registry import Registry
print(Registry().publish(Path(sys.argv[1])))
"""


@pytest.mark.postgres
def test_concurrent_publishes_get_distinct_versions(pg_settings: Settings, tmp_path: Path) -> None:
    directory = _bundle_dir(tmp_path)
    Registry(pg_settings)  # migrate once up front so the race is about versions, not tables
    procs = [
        subprocess.Popen([sys.executable, "-c", PUBLISH, str(directory)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=cli_env(pg_settings))
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    versions = sorted(int(o[0].strip()) for o in outputs)
    assert versions == [1, 2, 3, 4]
    registry = Registry(pg_settings)
    for v in versions:
        assert registry.load(f"lin@{v}").pipeline_.coef_[0] == pytest.approx(2.0)


def test_a_bundle_of_the_previous_format_publishes_loads_and_predicts(any_settings: Settings, tmp_path: Path) -> None:
    import numpy as np

    from modelyard.bundle import FORMAT_VERSION, PREDICTION_COLUMN
    from modelyard.runtime import Model

    fixture = Path(__file__).parents[1] / "unit" / "data" / "bundle_format1"
    registry = Registry(any_settings)
    version = registry.publish(fixture, alias="production")  # the fixture folder itself is left as it was
    record = registry.resolve("house-prices")
    assert record.version == version and record.manifest.format_version == FORMAT_VERSION
    assert record.manifest.version == version and record.manifest.lineage.environment is not None
    bundle = registry.load("house-prices@production")
    assert bundle.manifest == record.manifest
    model = Model.load(bundle)
    assert model.fast_path == "onnx"
    np.testing.assert_allclose(model.predict(bundle.reference_inputs()), bundle.reference()[PREDICTION_COLUMN],
                               rtol=1e-9)
    assert '"format_version": 1' in (fixture / "manifest.json").read_text()
