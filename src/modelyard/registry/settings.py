"""Per-model settings (``modelyard_models.settings``: ``{"rollout": {...}, "monitor": {...}}``), written under
a row lock.

Every write is one transaction that locks the model's row first (PostgreSQL ``SELECT ... FOR UPDATE``; on
SQLite a no-op ``UPDATE`` of the row, which takes the single write lock before anything is read), then reads,
changes and writes the settings: of two concurrent writers the second waits and sees the first one's change,
so no update is lost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy import Connection, Engine, select, update

from modelyard.errors import ModelNotFoundError
from modelyard.registry import tables as t

T = TypeVar("T")
ModelSettings = dict[str, Any]
LATENCY_OBJECTIVE = "latency_p99_ms"
"""The model's p99 latency objective in ms, ``settings["rollout"]["latency_p99_ms"]``: the canary watcher's
latency ratio rule fires only above it (and ``modelyard check`` warns with it)."""


def latency_objective(settings: ModelSettings | None) -> float | None:
    """The model's own p99 latency objective (ms), or None when it has none."""
    value = ((settings or {}).get("rollout") or {}).get(LATENCY_OBJECTIVE)
    return None if value is None else float(value)


@runtime_checkable
class SettingsStore(Protocol):
    """Read and change the settings of one model; ``change`` runs under the model's row lock."""

    def get(self, model: str) -> ModelSettings: ...

    def all(self) -> dict[str, ModelSettings]: ...

    def change(self, model: str, mutate: Callable[[ModelSettings], T]) -> T: ...

    def update_section(self, model: str, section: str, values: dict[str, Any]) -> dict[str, Any]: ...


def lock_model_row(conn: Connection, name: str) -> int | None:
    """Lock one model's row until the transaction ends; its id, or None when there is no such model."""
    query = select(t.models.c.id).where(t.models.c.name == name)
    if conn.dialect.name == "postgresql":
        row = conn.execute(query.with_for_update()).first()
    else:  # SQLite: writing first takes the database's write lock, so no other writer reads in between
        conn.execute(update(t.models).where(t.models.c.name == name).values(name=t.models.c.name))
        row = conn.execute(query).first()
    return None if row is None else int(row[0])


def merge_section(settings: ModelSettings, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``settings[section]`` in place (a ``None`` value removes its key)."""
    part: dict[str, Any] = settings.setdefault(section, {})
    for key, value in values.items():
        if value is None:
            part.pop(key, None)
        else:
            part[key] = value
    return dict(part)


class SqlSettingsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, model: str) -> ModelSettings:
        """One model's settings (empty when none were set)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.models.c.settings).where(t.models.c.name == model)).first()
        if row is None:
            raise ModelNotFoundError(f"no model named '{model}' in the registry", model=model)
        return dict(row[0] or {})

    def all(self) -> dict[str, ModelSettings]:
        """Every model's settings in one query (what servers read with their alias poll); only non-empty."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.models.c.name, t.models.c.settings)).all()
        return {str(name): dict(settings) for name, settings in rows if settings}

    def change(self, model: str, mutate: Callable[[ModelSettings], T]) -> T:
        """Lock the row, hand ``mutate`` a copy of the settings to change in place, store it; ``mutate``'s
        result is returned."""
        with self.engine.begin() as conn:
            model_id = lock_model_row(conn, model)
            if model_id is None:
                raise ModelNotFoundError(f"no model named '{model}' in the registry", model=model)
            current = conn.execute(select(t.models.c.settings).where(t.models.c.id == model_id)).scalar()
            settings = copy.deepcopy(current or {})  # a copy: SQLAlchemy compares old and new values
            result = mutate(settings)
            conn.execute(update(t.models).where(t.models.c.id == model_id).values(settings=settings))
        return result

    def update_section(self, model: str, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into one section (a ``None`` value removes its key), keeping the other sections;
        the section as stored."""
        return self.change(model, lambda settings: merge_section(settings, section, values))
