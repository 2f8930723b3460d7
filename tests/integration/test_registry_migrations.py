"""A database made before the ``modelyard_`` prefix (migration 0001, ``my_*`` tables) is upgraded on first
use, its rows kept, on SQLite and PostgreSQL; the migration goes back down too."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from modelyard.config import Settings, normalize_database_url
from modelyard.registry import Registry, db


def _alembic(conn: object) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def test_a_database_at_0001_is_renamed_on_first_use_and_keeps_its_rows(any_settings: Settings) -> None:
    url = normalize_database_url(any_settings.resolved_database_url)
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    old = create_engine(url)
    with old.begin() as conn:
        command.upgrade(_alembic(conn), "0001")
        conn.execute(text("INSERT INTO my_models (name, created_at, settings) "
                          "VALUES ('house-prices', CURRENT_TIMESTAMP, NULL)"))
        conn.execute(text("INSERT INTO my_leases (name, holder, expires_at, active) "
                          "VALUES ('l', 'h', CURRENT_TIMESTAMP, true)"))
    old.dispose()

    registry = Registry(any_settings)  # get_engine migrates to head
    assert registry.models() == ["house-prices"]
    names = set(inspect(registry.engine).get_table_names())
    assert "modelyard_models" in names and not any(n.startswith("my_") for n in names), names
    registry.update_model_settings("house-prices", "rollout", {"routing_column": "id"})
    assert registry.model_settings("house-prices") == {"rollout": {"routing_column": "id"}}
    if registry.engine.dialect.name == "postgresql":
        with registry.engine.connect() as conn:
            leftovers = conn.execute(text(
                "SELECT conname FROM pg_constraint WHERE conname LIKE 'my\\_%' "
                "UNION SELECT relname FROM pg_class WHERE relname LIKE 'my\\_%'")).scalars().all()
        assert leftovers == []

    with registry.engine.begin() as conn:
        command.downgrade(_alembic(conn), "0001")
    with registry.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM my_models")).scalars().all() == ["house-prices"]


_OUTCOME_KEYS = ("model", "request_id", "route")


def _key_collations(conn: object) -> dict[str, str]:
    rows = conn.execute(text(  # type: ignore[attr-defined]
        "SELECT a.attname, c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE a.attrelid = 'modelyard_outcomes'::regclass AND a.attname IN ('model', 'request_id', 'route')"))
    return {str(name): str(coll) for name, coll in rows}


def test_0006_makes_the_outcome_keys_bytewise_and_keeps_the_rows_and_their_uniqueness(any_settings: Settings) -> None:
    url = normalize_database_url(any_settings.resolved_database_url)
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    row = ("INSERT INTO modelyard_outcomes (model, request_id, \"row\", route, actual, observed_at, received_at, "
           "source, matched, late) VALUES ('houses', 'r1', 0, 'primary', '1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
           "'sql', true, false)")
    old = create_engine(url)
    with old.begin() as conn:
        command.upgrade(_alembic(conn), "0005")
        conn.execute(text(row))
    old.dispose()

    registry = Registry(any_settings)  # get_engine migrates to head
    postgres = registry.engine.dialect.name == "postgresql"
    with registry.engine.connect() as conn:
        assert conn.execute(text("SELECT request_id FROM modelyard_outcomes")).scalars().all() == ["r1"]
        if postgres:
            assert _key_collations(conn) == dict.fromkeys(_OUTCOME_KEYS, "C")
    try:
        with registry.engine.begin() as conn:
            conn.execute(text(row))
    except Exception as exc:  # the unique key still holds after the indexes were rebuilt
        assert "uq_outcome_request_row_route" in str(exc) or "UNIQUE" in str(exc), exc
    else:
        raise AssertionError("a second outcome of the same request, row and route was stored")

    with registry.engine.begin() as conn:
        command.downgrade(_alembic(conn), "0005")
    with registry.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM modelyard_outcomes")).scalar_one() == 1
        if postgres:
            assert _key_collations(conn) == dict.fromkeys(_OUTCOME_KEYS, "default")
