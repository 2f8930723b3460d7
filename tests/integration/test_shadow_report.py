"""Shadow analysis on logged traffic: the differential test's statistics, shadow against primary."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from modelyard.checks import shadow_report
from modelyard.config import Settings
from modelyard.errors import NotFoundError
from modelyard.registry import Registry
from modelyard.rollout import promote
from tests.conftest import run_cli
from tests.rollout_helpers import MODEL, house_spec_folder, log, publish, records, train_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("houses")
    return train_bundle(house_spec_folder(root / "spec"), root / "bundle")


def _shadowed(settings: Settings, bundle: Path, factor: float, errors: int = 5, n: int = 60) -> int:
    v1 = publish(settings, bundle, alias="production")
    v2 = publish(settings, bundle)
    promote(Registry(settings), MODEL, v2, to="shadow")
    ids = [uuid.uuid4().hex for _ in range(n)]
    values = [100_000.0 + 1000 * i for i in range(n)]
    log(settings, records(MODEL, v1, "primary", n, outputs=values, request_ids=ids))
    log(settings, records(MODEL, v2, "shadow", n, errors=errors, outputs=[v * factor for v in values],
                          request_ids=ids))
    log(settings, records(MODEL, v1, "primary", 20))  # requests without a shadow record
    return v2


def test_shadow_that_agrees_passes_with_its_figures(any_settings: Settings, bundle: Path) -> None:
    v2 = _shadowed(any_settings, bundle, factor=1.001)
    result = shadow_report(Registry(any_settings), MODEL)
    assert result.passed, result.reasons
    f = result.figures
    assert (f["shadow_version"], f["shadow_records"], f["shadow_errors"]) == (v2, 60, 5)
    assert f["paired_requests"] == 55
    assert f["shadow_error_rate"] == pytest.approx(5 / 60)
    stats = f["predictions"]
    assert stats["rows"] == 55 and stats["mean_shift"] == pytest.approx(0.001)
    assert {"rel_diff_q", "abs_diff_q", "identical_share"} <= set(stats)  # as in the differential test


def test_shadow_that_shifts_fails_and_the_cli_says_why(any_settings: Settings, bundle: Path) -> None:
    _shadowed(any_settings, bundle, factor=1.3)
    result = shadow_report(Registry(any_settings), MODEL)
    assert not result.passed
    assert any("shift of the mean prediction (+30.00%)" in r for r in result.reasons)
    proc = run_cli("shadow", "report", MODEL, "--since", "1h", "--json", settings=any_settings)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False and data["figures"]["paired_requests"] == 55
    table = run_cli("shadow", "report", MODEL, settings=any_settings)
    assert table.returncode == 0 and "paired with the primary" in table.stdout and "FAIL" in table.stdout


def test_without_a_shadow_there_is_nothing_to_report(sqlite_settings: Settings, bundle: Path) -> None:
    publish(sqlite_settings, bundle, alias="production")
    with pytest.raises(NotFoundError, match="no shadow alias"):
        shadow_report(Registry(sqlite_settings), MODEL)
