"""``monitor.fleet.fleet_view``: stale instances, the region x model x version grid, and version skew that a
rollout (canary, shadow), a fresh alias move, a canary without traffic or a pinned batch run never raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.monitor.fleet import FleetMember, fleet_view
from modelyard.registry import AliasRecord
from modelyard.registry.fleet import Instance

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)


def _inst(iid: str, region: str | None, serving: list[dict[str, Any]], *, age: float = 1.0, kind: str = "server",
          status: str = "running", every: float = 5.0) -> Instance:
    return Instance(iid, kind, "h", 1, NOW - timedelta(hours=2), NOW - timedelta(seconds=age), region=region,
                    serving=serving, status=status, details={"every": every})


def _s(alias: str, version: int, weight: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "alias": alias, "version": version, "weight": weight, **extra}


def _aliases(moved: datetime = LONG_AGO) -> dict[str, dict[str, AliasRecord]]:
    return {"m": {"production": AliasRecord("production", 2, None, moved),
                  "canary": AliasRecord("canary", 3, 0.1, moved)}}


def test_a_rollout_is_not_skew_and_the_grid_counts_live_instances_per_region() -> None:
    view = fleet_view([_inst("a", "in", [_s("production", 2), _s("canary", 3, 0.1)]),
                       _inst("b", "cn", [_s("production", 2), _s("canary", 3, 0.0)]),  # canary off: not live
                       _inst("c", "cn", [_s("production", 1, pinned=True)], kind="batch"),
                       _inst("d", "cn", [_s("production", 2)], age=16.0)],  # 3 missed beats of 5 s: stale
                      _aliases(), NOW)
    assert view["skew"] == [] and view["regions"] == ["cn", "in"] and (view["live"], view["stale"]) == (3, 1)
    assert [(c["region"], c["alias"], c["version"], c["instances"]) for c in view["grid"]] == [
        ("cn", "production", 1, 1), ("cn", "production", 2, 1), ("in", "canary", 3, 1), ("in", "production", 2, 1)]
    assert {i["instance_id"]: i["stale"] for i in view["instances"]} == {"a": False, "b": False, "c": False,
                                                                          "d": True}


def test_two_versions_of_one_alias_long_after_it_moved_are_skew_but_not_right_after() -> None:
    instances = [_inst("a", "in", [_s("production", 2)]), _inst("b", "cn", [_s("production", 1)]),
                 _inst("gone", "cn", [_s("production", 5)], status="stopped")]
    (skew,) = fleet_view(instances, _aliases(), NOW)["skew"]
    assert skew["versions"] == {"1": ["b"], "2": ["a"]} and skew["registry_version"] == 2
    assert skew["message"] == "m@production is answered by 2 versions at once (v1 on 1, v2 on 1); the registry says v2"
    assert fleet_view(instances, _aliases(moved=NOW - timedelta(seconds=5)), NOW)["skew"] == []  # following


def test_a_member_beats_when_due_and_a_failing_store_never_raises() -> None:
    beats: list[Instance] = []

    class Store:
        def beat(self, instance: Instance) -> None:
            beats.append(instance)

        def stop(self, instance_id: str, at: datetime) -> None:
            raise RuntimeError("database away")

        def instances(self, seen_since: datetime | None = None) -> list[Instance]:
            return []

        def prune(self, before: datetime) -> int:
            return 0

    member = FleetMember(Store(), "stream", lambda: [_s("production", 2)], every=10, region="in", zone="in-1")
    assert member.beat_if_due(NOW) and not member.beat_if_due(NOW + timedelta(seconds=5))
    assert member.beat_if_due(NOW + timedelta(seconds=10)) and len(beats) == 2
    assert (beats[0].kind, beats[0].region, beats[0].zone, beats[0].serving[0]["version"]) == ("stream", "in",
                                                                                                "in-1", 2)
    assert beats[1].started_at == beats[0].started_at and beats[0].details["every"] == 10
    member.stop()  # logged, not raised
