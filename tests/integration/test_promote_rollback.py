"""Promotion runs the gates, rollback restores the previous production, every change is an event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelyard.checks import GateReport, gate_runner
from modelyard.config import Settings
from modelyard.errors import GateFailedError, RolloutError, SchemaError
from modelyard.registry import Registry
from modelyard.rollout import RoutingPolicy, promote, rollback, set_weight, stop_canary
from tests.conftest import generate_houses
from tests.rollout_helpers import MODEL, house_spec_folder, publish, train_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("houses")
    return {
        "good": train_bundle(house_spec_folder(root / "good"), root / "good-bundle"),
        "outdated": train_bundle(house_spec_folder(root / "old", generate_houses(3000, seed=11, shift=0.3)),
                                 root / "old-bundle"),
    }


def _gate(registry: Registry, version: int):
    return gate_runner(registry, MODEL, version, against="production", benchmark=False)


def test_canary_from_the_registry_gets_20_percent_of_5000_keys(any_settings: Settings,
                                                              bundles: dict[str, Path]) -> None:
    registry = Registry(any_settings)
    v1 = publish(any_settings, bundles["good"], alias="production")
    v2 = publish(any_settings, bundles["good"])
    promote(registry, MODEL, v2, to="canary", weight=0.2, gate=_gate(registry, v2), actor="alice")
    policy = RoutingPolicy(MODEL, Registry(any_settings).aliases(MODEL))
    versions = [policy.choose(f"customer-{i}").version for i in range(5000)]
    assert abs(versions.count(v2) / 5000 - 0.2) <= 0.02
    assert versions.count(v1) + versions.count(v2) == 5000
    again = RoutingPolicy(MODEL, Registry(any_settings).aliases(MODEL))  # as another replica would load it
    assert [again.choose(f"customer-{i}").version for i in range(5000)] == versions


def test_failing_gate_refuses_the_promotion_and_records_why(any_settings: Settings,
                                                            bundles: dict[str, Path]) -> None:
    registry = Registry(any_settings)
    v1 = publish(any_settings, bundles["good"], alias="production")
    v2 = publish(any_settings, bundles["outdated"])
    with pytest.raises(GateFailedError, match="shift of the mean prediction") as info:
        promote(registry, MODEL, v2, to="canary", weight=0.1, gate=_gate(registry, v2), actor="alice")
    assert info.value.reasons
    assert "canary" not in registry.aliases(MODEL) and registry.aliases(MODEL)["production"].version == v1
    refused = registry.events(MODEL)[0]
    assert refused.kind == "promote_refused" and refused.actor == "alice" and "shift" in refused.reason
    assert refused.details["version"] == v2 and refused.details["gates"]["passed"] is False

    result = promote(registry, MODEL, v2, to="canary", weight=0.1, force=True, gate=_gate(registry, v2),
                     actor="bob", reason="hotfix, gates known to fail")
    assert result.forced
    event = registry.events(MODEL)[0]
    assert (event.kind, event.alias, event.to_version, event.actor) == ("promote", "canary", v2, "bob")
    assert event.reason == "hotfix, gates known to fail"
    assert event.details["forced"] is True and event.details["gates"] == "skipped (--force)"
    assert event.details["weight"] == 0.1


def test_a_candidate_raising_during_the_gates_is_refused_with_an_event_holding_the_error(
        sqlite_settings: Settings, bundles: dict[str, Path]) -> None:
    registry = Registry(sqlite_settings)
    publish(sqlite_settings, bundles["good"], alias="production")
    v2 = publish(sqlite_settings, bundles["good"])

    def broken_gate() -> GateReport:
        raise SchemaError("column 'area_sqm' is missing", field="area_sqm")

    with pytest.raises(SchemaError):
        promote(registry, MODEL, v2, to="canary", weight=0.1, gate=broken_gate, actor="alice")
    refused = registry.events(MODEL)[0]
    assert (refused.kind, refused.alias, refused.actor) == ("promote_refused", "canary", "alice")
    assert refused.reason == "the gates could not run: SchemaError: column 'area_sqm' is missing"
    assert refused.details == {"version": v2, "gates": "raised",
                               "error": "SchemaError: column 'area_sqm' is missing"}
    assert "canary" not in registry.aliases(MODEL)


def test_promote_then_rollback_walks_production_back_with_events(any_settings: Settings,
                                                                  bundles: dict[str, Path]) -> None:
    registry = Registry(any_settings)
    start = datetime.now(UTC) - timedelta(seconds=5)
    v1 = publish(any_settings, bundles["good"], alias="production")
    v2, v3 = publish(any_settings, bundles["good"]), publish(any_settings, bundles["good"])
    promote(registry, MODEL, v2, to="production", gate=_gate(registry, v2), actor="alice", reason="better")
    promote(registry, MODEL, v3, to="canary", weight=0.3, gate=_gate(registry, v3), actor="alice")
    promote(registry, MODEL, v3, to="production", gate=_gate(registry, v3), actor="alice")
    assert "canary" not in registry.aliases(MODEL)  # the canary's version is production now: alias retired
    promoted = next(e for e in registry.events(MODEL) if e.kind == "promote")
    assert promoted.details["gates"]["passed"] is True and promoted.details["forced"] is False

    back = rollback(registry, MODEL, actor="carol", reason="latency regression")
    assert (back.from_version, back.to_version) == (v3, v2)
    event = registry.events(MODEL)[0]
    assert (event.kind, event.alias, event.from_version) == ("rollback", "production", v3)
    assert event.to_version == v2
    assert event.actor == "carol" and event.reason == "latency regression"
    at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
    assert start <= at <= datetime.now(UTC) + timedelta(seconds=5)

    assert rollback(registry, MODEL, actor="carol").to_version == v1  # not back to v3
    assert registry.aliases(MODEL)["production"].version == v1
    with pytest.raises(RolloutError, match="no earlier production version"):
        rollback(registry, MODEL)


def test_shadow_is_not_gated_and_canary_can_be_stopped(any_settings: Settings,
                                                       bundles: dict[str, Path]) -> None:
    registry = Registry(any_settings)
    publish(any_settings, bundles["good"], alias="production")
    bad = publish(any_settings, bundles["outdated"])
    promote(registry, MODEL, bad, to="shadow", gate=_gate(registry, bad))  # would fail; shadows never answer
    assert registry.events(MODEL)[0].details["gates"].startswith("not run")
    with pytest.raises(RolloutError, match="has no canary"):
        set_weight(registry, MODEL, 0.3)
    promote(registry, MODEL, bad, to="canary", weight=0.5, force=True)
    assert set_weight(registry, MODEL, 0.25, actor="dave") == bad
    assert registry.aliases(MODEL)["canary"].weight == 0.25
    assert registry.events(MODEL)[0].kind == "weight" and registry.events(MODEL)[0].reason.endswith("→ 0.25")
    assert stop_canary(registry, MODEL, actor="dave", reason="manual") == bad
    assert registry.aliases(MODEL)["canary"].weight == 0.0
    assert stop_canary(registry, MODEL) is None  # already stopped: no second event
    assert [e.kind for e in registry.events(MODEL)[:3]] == ["rollback", "weight", "promote"]
