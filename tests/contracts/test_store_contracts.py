"""Every store of ``registry/`` behind its Protocol, each implementation on SQLite and on PostgreSQL: the
same checks for all (as scikit-learn's ``parametrize_with_checks`` runs one suite over every estimator)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select

from modelyard.errors import ModelNotFoundError
from modelyard.registry import tables as t
from modelyard.registry.alerts import AlertStore, AlertUpdate, SqlAlertStore
from modelyard.registry.batch_runs import BatchRunStore, RunRecord, SqlBatchRunStore
from modelyard.registry.events import EventLog, SqlEventLog, write_event
from modelyard.registry.fleet import FleetStore, Instance, SqlFleetStore
from modelyard.registry.predictions import INSERT_COLUMNS, PredictionStore, SqlPredictionStore, _insert_ignoring
from modelyard.registry.settings import SettingsStore, SqlSettingsStore

STORES: dict[type, list[Callable[[Engine], Any]]] = {
    PredictionStore: [SqlPredictionStore],
    SettingsStore: [SqlSettingsStore],
    AlertStore: [SqlAlertStore],
    BatchRunStore: [SqlBatchRunStore],
    EventLog: [SqlEventLog],
    FleetStore: [SqlFleetStore],
}


def _ids(protocol: type) -> list[Any]:
    return [pytest.param(f, id=f.__name__) for f in STORES[protocol]]


def _model(engine: Engine, name: str = "m") -> int:
    with engine.begin() as conn:
        conn.execute(insert(t.models).values(name=name, created_at=t.utcnow()))
        return int(conn.execute(select(t.models.c.id).where(t.models.c.name == name)).scalar_one())


@pytest.mark.parametrize(("protocol", "factory"), [(p, f) for p, fs in STORES.items() for f in fs])
def test_every_store_implements_its_protocol(engine: Engine, protocol: type, factory: Callable[..., Any]) -> None:
    assert isinstance(factory(engine), protocol)


# ---- predictions -------------------------------------------------------------------------------------------
def _prediction(request_id: str, route: str = "primary", *, model: str = "m", version: int = 1,
                ts: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "route": route, "model": model, "version": version,
            "ts": ts or datetime.now(UTC), "inputs": [{"x": 1.5}], "outputs": [2.5], "n_rows": 1,
            "latency_ms": 3.0, "error": None, "meta": None, **extra}


@pytest.fixture(params=_ids(PredictionStore))
def predictions(request: pytest.FixtureRequest, engine: Engine) -> PredictionStore:
    return request.param(engine)  # type: ignore[no-any-return]


def test_predictions_insert_is_idempotent_on_request_id_and_route(predictions: PredictionStore) -> None:
    rid = uuid.uuid4().hex
    assert predictions.insert([_prediction(rid), _prediction(rid, "shadow")]) == 2
    predictions.insert([_prediction(rid, outputs=[99.0])])  # a replay after an outage: skipped
    rows = predictions.by_request(rid)
    assert [(r["route"], r["outputs"]) for r in rows] == [("primary", [2.5]), ("shadow", [2.5])]
    assert predictions.insert([]) == 0 and predictions.by_request("no-such-request") == []


def test_predictions_round_trip_every_column_with_aware_times(predictions: PredictionStore) -> None:
    ts = datetime(2026, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    row = _prediction("r1", ts=ts, error="boom", meta={"k": "v"}, n_rows=3, latency_ms=None)
    predictions.insert([row])
    (stored,) = predictions.by_request("r1")
    assert stored == row and stored["ts"].tzinfo is not None and stored["ts"] == ts


def test_predictions_prepared_insert_stores_what_sqlalchemy_core_stores(engine: Engine) -> None:
    """Whole rows take the prepared statement (``PreparedInsert``); rows missing a column take Core, which
    fills in the defaults. Both leave the same raw values in the table, JSON nulls and zones too."""
    east = timezone(timedelta(hours=5))
    rows = [_prediction("a", ts=datetime(2026, 5, 1, 17, 0, tzinfo=east), inputs=[{"x": 1.5, "y": None}],
                        meta={"subject": "s", "delivery": 2}),
            _prediction("b", "stream", inputs=None, outputs=None, error="bad", latency_ms=None)]
    store = SqlPredictionStore(engine)
    assert store.insert(rows) == 2
    with engine.begin() as conn:  # the same rows under other ids, through Core
        conn.execute(_insert_ignoring(engine.dialect.name), [{**r, "request_id": r["request_id"] + "-core"}
                                                               for r in rows])
    partial = {k: v for k, v in _prediction("c").items() if k != "n_rows"}
    assert store.insert([partial]) == 1 and store.by_request("c")[0]["n_rows"] == 1  # the default, by Core
    cols = ", ".join(INSERT_COLUMNS)
    with engine.connect() as conn:
        raw = {r[0]: r[1:] for r in conn.exec_driver_sql(f"SELECT {cols} FROM modelyard_predictions")}
    assert raw["a"] == raw["a-core"] and raw["b"] == raw["b-core"]
    assert store.by_request("a")[0]["inputs"] == [{"x": 1.5, "y": None}] and store.by_request("b")[0]["inputs"] is None
    assert store.insert(rows) == 2 and len(store.select(limit=None)) == 5  # still idempotent
    # objects holding the columns as attributes (the log's records) store the same values again
    assert store.insert_items([SimpleNamespace(**{**r, "request_id": r["request_id"] + "-items"}) for r in rows]) == 2
    with engine.connect() as conn:
        raw = {r[0]: r[1:] for r in conn.exec_driver_sql(f"SELECT {cols} FROM modelyard_predictions")}
    assert raw["a-items"] == raw["a"] and raw["b-items"] == raw["b"] and store.insert_items([]) == 0


def test_predictions_select_filters_a_half_open_window_newest_first(predictions: PredictionStore) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    predictions.insert([_prediction(f"r{i}", ts=t0 + timedelta(minutes=i)) for i in range(5)])
    predictions.insert([_prediction("c", "canary", version=2, ts=t0 + timedelta(minutes=2)),
                        _prediction("o", model="other", ts=t0)])
    window = predictions.select("m", since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=3))
    assert [r["request_id"] for r in window] == ["c", "r2", "r1"]  # until is excluded
    assert [r["request_id"] for r in predictions.select("m", route="canary")] == ["c"]
    assert [r["request_id"] for r in predictions.select("m", version=2)] == ["c"]
    assert len(predictions.select("m", limit=2)) == 2 and len(predictions.select(limit=None)) == 7
    east = timezone(timedelta(hours=5))  # the same instant in another zone selects the same rows
    assert predictions.select("m", since=(t0 + timedelta(minutes=1)).astimezone(east),
                              until=(t0 + timedelta(minutes=3)).astimezone(east)) == window


def test_predictions_of_a_model_come_newest_by_time_in_the_index_order(predictions: PredictionStore,
                                                                        engine: Engine) -> None:
    """Shipped out of time order (one worker's segment after another's), a model's records still come newest
    first by time; on SQLite the ``(model, ts)`` index gives that order, so a window is never sorted whole
    before its limit (the monitor read 1.8M records' hour that way: 3.1 s a run)."""
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    predictions.insert([_prediction("late", ts=t0 + timedelta(seconds=5))])
    predictions.insert([_prediction("early", ts=t0), _prediction("same", ts=t0 + timedelta(seconds=5))])
    assert [r["request_id"] for r in predictions.select("m")] == ["same", "late", "early"]
    assert [r.ts for r in predictions.traffic("m", t0, t0 + timedelta(minutes=1))] == [
        t0, t0 + timedelta(seconds=5), t0 + timedelta(seconds=5)]
    if engine.dialect.name != "sqlite":
        return
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        seen.append((sql, params))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        predictions.select("m", since=t0, until=t0 + timedelta(hours=1), limit=20_000)
        predictions.traffic("m", t0, t0 + timedelta(hours=1))
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert len(seen) == 2
    with engine.connect() as conn:
        for sql, params in seen:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "ix_predictions_model_ts" in plan and "TEMP B-TREE" not in plan, plan


def test_predictions_traffic_has_the_scalar_columns_only(predictions: PredictionStore) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    predictions.insert([_prediction("a", ts=t0, latency_ms=4.0),
                        _prediction("b", "shadow", ts=t0 + timedelta(seconds=1), error="failed", latency_ms=None),
                        _prediction("c", ts=t0 - timedelta(seconds=1))])
    rows = predictions.traffic("m", t0, t0 + timedelta(minutes=1))
    assert [(r.ts, r.version, r.route, r.latency_ms, r.failed) for r in rows] == [
        (t0, 1, "primary", 4.0, False), (t0 + timedelta(seconds=1), 1, "shadow", None, True)]
    assert predictions.traffic("other", t0, t0 + timedelta(minutes=1)) == []


# ---- per-model settings --------------------------------------------------------------------------------------
@pytest.fixture(params=_ids(SettingsStore))
def settings(request: pytest.FixtureRequest, engine: Engine) -> SettingsStore:
    _model(engine, "m")
    return request.param(engine)  # type: ignore[no-any-return]


def test_settings_sections_merge_none_removes_and_other_sections_stay(settings: SettingsStore) -> None:
    assert settings.get("m") == {} and settings.all() == {}
    settings.update_section("m", "monitor", {"rules": {"error_rate": {"max": 0.1}}})
    assert settings.update_section("m", "rollout", {"routing_column": "area_sqm"}) == {"routing_column": "area_sqm"}
    settings.update_section("m", "rollout", {"other": 1})
    assert settings.get("m") == {"monitor": {"rules": {"error_rate": {"max": 0.1}}},
                                 "rollout": {"routing_column": "area_sqm", "other": 1}}
    assert settings.update_section("m", "rollout", {"routing_column": None}) == {"other": 1}
    assert settings.all() == {"m": settings.get("m")}


def test_settings_change_returns_its_result_and_a_failure_changes_nothing(settings: SettingsStore) -> None:
    assert settings.change("m", lambda s: s.setdefault("a", {}).setdefault("n", 1)) == 1

    def broken(s: dict[str, Any]) -> None:
        s["a"]["n"] = 2
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError):
        settings.change("m", broken)
    assert settings.get("m") == {"a": {"n": 1}}


def test_settings_of_an_unknown_model_are_an_error(settings: SettingsStore) -> None:
    for call in (lambda: settings.get("nope"), lambda: settings.update_section("nope", "x", {"a": 1}),
                 lambda: settings.change("nope", lambda s: None)):
        with pytest.raises(ModelNotFoundError):
            call()


# ---- alerts --------------------------------------------------------------------------------------------------
def _alert(model: str = "m", version: int = 1, rule: str = "latency", **extra: Any) -> dict[str, Any]:
    return {"model": model, "version": version, "rule": rule, "status": "firing", "value": 1.0,
            "threshold": 0.5, "message": "too slow", "started_at": datetime.now(UTC),
            "details": {"key": rule, "notified": {}}, **extra}


@pytest.fixture(params=_ids(AlertStore))
def alerts(request: pytest.FixtureRequest, engine: Engine) -> AlertStore:
    return request.param(engine)  # type: ignore[no-any-return]


def test_alerts_opened_rows_are_firing_oldest_first_and_recent_newest_first(alerts: AlertStore) -> None:
    ids = alerts.save([_alert(), _alert(rule="error_rate"), _alert(model="other")], [])
    assert len(set(ids)) == 3
    assert [a["id"] for a in alerts.firing()] == ids
    assert [a["rule"] for a in alerts.firing("m")] == ["latency", "error_rate"]
    assert [a["id"] for a in alerts.recent()] == ids[::-1] and len(alerts.recent(limit=1)) == 1
    assert all(a["started_at"].tzinfo is not None for a in alerts.recent())


def test_alerts_updates_apply_and_only_if_firing_spares_resolved_rows(alerts: AlertStore) -> None:
    first, second = alerts.save([_alert(), _alert(rule="error_rate")], [])
    now = datetime.now(UTC)
    alerts.save([], [AlertUpdate(first, {"status": "resolved", "resolved_at": now}, only_if_firing=True),
                     AlertUpdate(second, {"value": 7.0, "message": "worse"})])
    assert [(a["id"], a["value"], a["message"]) for a in alerts.firing()] == [(second, 7.0, "worse")]
    alerts.save([], [AlertUpdate(first, {"message": "late refresh"}, only_if_firing=True)])
    resolved = next(a for a in alerts.recent() if a["id"] == first)
    assert resolved["status"] == "resolved" and resolved["message"] == "too slow"
    assert abs((resolved["resolved_at"] - now).total_seconds()) < 1


def test_alerts_notified_flags_merge_into_details(alerts: AlertStore) -> None:
    (alert_id,) = alerts.save([_alert()], [])
    alerts.set_notified(alert_id, "firing", False)
    alerts.set_notified(alert_id, "resolved", True)
    (row,) = alerts.recent()
    assert row["details"] == {"key": "latency", "notified": {"firing": False, "resolved": True}}


# ---- batch runs ----------------------------------------------------------------------------------------------
@pytest.fixture(params=_ids(BatchRunStore))
def runs(request: pytest.FixtureRequest, engine: Engine) -> BatchRunStore:
    return request.param(engine)  # type: ignore[no-any-return]


def test_batch_runs_are_created_read_and_updated(runs: BatchRunStore) -> None:
    assert runs.get("nightly") is None
    run = RunRecord("nightly", "m", 3, "SELECT * FROM houses", "scored", "running", None, 0, 0, {"attempts": 1})
    runs.create(run)
    assert runs.get("nightly") == run
    runs.update("nightly", {"rows_scored": 10, "rows_rejected": 2, "row_count": 12, "status": "done",
                            "details": {"attempts": 1, "chunks": 2}})
    done = runs.get("nightly")
    assert done is not None and (done.status, done.rows_scored, done.rows_rejected, done.row_count) == (
        "done", 10, 2, 12) and done.details == {"attempts": 1, "chunks": 2} and done.version == 3


# ---- events --------------------------------------------------------------------------------------------------
@pytest.fixture(params=_ids(EventLog))
def events(request: pytest.FixtureRequest, engine: Engine) -> EventLog:
    return request.param(engine)  # type: ignore[no-any-return]


def test_events_are_listed_newest_first_per_model(events: EventLog, engine: Engine) -> None:
    m, other = _model(engine, "m"), _model(engine, "other")
    with engine.begin() as conn:
        write_event(conn, m, "publish", to_version=1, actor="ci")
        write_event(conn, other, "publish", to_version=1)
        write_event(conn, m, "alias_set", alias="production", from_version=None, to_version=1,
                    reason="first", details={"weight": 0.5})
    assert [(e.model, e.kind) for e in events.recent()] == [("m", "alias_set"), ("other", "publish"),
                                                            ("m", "publish")]
    latest, first = events.recent("m")
    assert (latest.alias, latest.to_version, latest.reason, latest.details) == ("production", 1, "first",
                                                                                 {"weight": 0.5})
    assert first.actor == "ci" and len(events.recent(limit=1)) == 1
    assert events.get(latest.id) == latest and events.get(latest.id + 1000) is None


# ---- fleet heartbeats ----------------------------------------------------------------------------------------
@pytest.fixture(params=_ids(FleetStore))
def fleet(request: pytest.FixtureRequest, engine: Engine) -> FleetStore:
    return request.param(engine)  # type: ignore[no-any-return]


def _instance(instance_id: str, at: datetime, **extra: Any) -> Instance:
    return Instance(instance_id=instance_id, kind="server", host="h1", pid=10, started_at=at, last_seen=at,
                    **extra)


def test_fleet_beats_upsert_keep_the_start_and_stop_marks_the_row(fleet: FleetStore) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    fleet.beat(_instance("a", t0, region="eu", zone="eu-1",
                         serving=[{"model": "m", "alias": "production", "version": 1, "weight": None}]))
    later = _instance("a", t0 + timedelta(minutes=5), region="eu", zone="eu-1",
                      serving=[{"model": "m", "alias": "production", "version": 2, "weight": None}],
                      details={"workers": 1})
    later.started_at = t0 + timedelta(minutes=5)  # a later beat never moves the start
    fleet.beat(later)
    (row,) = fleet.instances()
    assert (row.started_at, row.last_seen, row.region, row.zone, row.status) == (
        t0, t0 + timedelta(minutes=5), "eu", "eu-1", "running")
    assert row.serving == [{"model": "m", "alias": "production", "version": 2, "weight": None}]
    assert row.details == {"workers": 1} and row.last_seen.tzinfo is not None
    fleet.stop("a", t0 + timedelta(minutes=6))
    (stopped,) = fleet.instances()
    assert stopped.status == "stopped" and stopped.last_seen == t0 + timedelta(minutes=6)


def test_fleet_instances_filter_by_last_seen_and_prune_drops_old_rows(fleet: FleetStore) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    east = timezone(timedelta(hours=8))
    fleet.beat(_instance("old", t0 - timedelta(days=2), region="cn"))
    fleet.beat(Instance("b", "stream", "h2", 11, t0, t0, region="in"))
    fleet.beat(_instance("c", t0.astimezone(east), region="cn"))  # the same instant in another zone
    assert [i.instance_id for i in fleet.instances()] == ["c", "old", "b"]  # by region, host, pid, id
    assert [i.instance_id for i in fleet.instances(seen_since=t0 - timedelta(hours=1))] == ["c", "b"]
    assert fleet.instances(seen_since=t0)[0].last_seen == t0
    assert fleet.prune(t0 - timedelta(days=1)) == 1
    assert [i.instance_id for i in fleet.instances()] == ["c", "b"]
