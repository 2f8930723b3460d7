"""The model registry: names, immutable numbered versions, aliases and an event for every change.

Versions are numbered under a lock on the model's row (PostgreSQL ``SELECT ... FOR UPDATE``, SQLite's single
writer), backed by a unique constraint, so two processes publishing at once get distinct numbers. A version
is first reserved as ``pending`` and becomes ``ready`` only when its archive is stored; a failure removes it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from modelyard.bundle import (
    MANIFEST,
    Bundle,
    Manifest,
    load_bundle,
    pack,
    sha256_bytes,
    unpack,
    verify_bundle,
    write_manifest,
)
from modelyard.config import Settings
from modelyard.errors import (
    ModelNotFoundError,
    RegistryError,
    VersionNotFoundError,
)
from modelyard.registry import tables as t
from modelyard.registry.artifacts import ArtifactStore, LocalStore
from modelyard.registry.db import get_engine
from modelyard.registry.events import EventRecord, SqlEventLog, write_event
from modelyard.registry.settings import SettingsStore, SqlSettingsStore

DEFAULT_ALIAS = "production"
MAX_VERSION_DIGITS = 18  # a version number longer than this names no version


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    archive_sha256: str
    manifest_sha256: str
    manifest: Manifest
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True)
class AliasRecord:
    alias: str
    version: int
    weight: float | None
    updated_at: datetime


def parse_ref(ref: str) -> tuple[str, str | int]:
    """``name`` → (name, "production"); ``name@3`` → (name, 3); ``name@canary`` → (name, "canary")."""
    name, _, selector = ref.partition("@")
    if not name:
        raise ModelNotFoundError(f"'{ref}' does not name a model", model=ref)
    if not selector:
        return name, DEFAULT_ALIAS
    number = selector[1:] if selector[:1] in ("v", "V") else selector
    if number.isascii() and number.isdigit():  # ASCII only: '²' (superscript two) is str.isdigit() too
        if len(number) > MAX_VERSION_DIGITS:  # and int() of 4,300 digits raises
            raise VersionNotFoundError(f"model '{name}' has no version {number[:20]}... ({len(number)} digits)",
                                       model=name)
        return name, int(number)
    return name, selector


def default_actor(settings: Settings | None = None) -> str:
    if settings and settings.actor:
        return settings.actor
    try:
        return getpass.getuser()
    except Exception:
        return f"uid:{os.getuid()}"


class Registry:
    """Facade over the database and the artifact store. Cheap to construct; engines are shared."""

    def __init__(self, settings: Settings | None = None, *, store: ArtifactStore | None = None) -> None:
        self.settings = settings or Settings()
        self.url = self.settings.resolved_database_url
        self.engine = get_engine(self.url)
        self.store = store or LocalStore(self.settings.resolved_artifact_root)
        self.cache_dir = self.settings.resolved_cache_dir
        self.model_settings_store: SettingsStore = SqlSettingsStore(self.engine)

    # ---- models and versions -------------------------------------------------------------------------
    def _model_id(self, conn: Connection, name: str, *, create: bool = False, lock: bool = False) -> int:
        query = select(t.models.c.id).where(t.models.c.name == name)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is not None:
            return int(row[0])
        if not create:
            raise ModelNotFoundError(f"no model named '{name}' in the registry", model=name)
        try:
            with conn.begin_nested():
                conn.execute(insert(t.models).values(name=name, created_at=t.utcnow()))
        except DBIntegrityError:
            pass  # created by a concurrent publisher
        row = conn.execute(query).first()
        assert row is not None
        return int(row[0])

    def _reserve_version(self, name: str, actor: str) -> int:
        for _attempt in range(20):
            try:
                with self.engine.begin() as conn:
                    model_id = self._model_id(conn, name, create=True, lock=True)
                    current = conn.execute(
                        select(func.max(t.model_versions.c.version)).where(
                            t.model_versions.c.model_id == model_id
                        )
                    ).scalar()
                    version = int(current or 0) + 1
                    conn.execute(
                        insert(t.model_versions).values(
                            model_id=model_id,
                            version=version,
                            status="pending",
                            created_at=t.utcnow(),
                            created_by=actor,
                        )
                    )
                    return version
            except DBIntegrityError:
                continue
        raise RegistryError(f"could not reserve a version number for '{name}' after 20 attempts", model=name)

    def publish(
        self,
        bundle_dir: Path,
        *,
        name: str | None = None,
        alias: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Store a bundle folder as the next version of its model; optionally point ``alias`` at it."""
        manifest = verify_bundle(Path(bundle_dir))
        name = name or manifest.name
        actor = actor or default_actor(self.settings)
        version = self._reserve_version(name, actor)
        try:
            with tempfile.TemporaryDirectory(prefix="modelyard-publish-") as tmp:
                staged = Path(tmp) / "bundle"
                shutil.copytree(bundle_dir, staged)
                final_manifest = write_manifest(
                    staged, manifest.model_copy(update={"name": name, "version": version, "published_by": actor})
                )
                manifest_sha = sha256_bytes((staged / MANIFEST).read_bytes())
                archive_sha = self.store.put(pack(staged))
            with self.engine.begin() as conn:
                model_id = self._model_id(conn, name)
                conn.execute(
                    update(t.model_versions)
                    .where(and_(t.model_versions.c.model_id == model_id, t.model_versions.c.version == version))
                    .values(
                        status="ready",
                        archive_sha256=archive_sha,
                        manifest_sha256=manifest_sha,
                        manifest=final_manifest.to_dict(),
                    )
                )
                self._event(conn, model_id, "publish", to_version=version, actor=actor, reason=reason,
                            details={"archive_sha256": archive_sha})
        except BaseException:
            with self.engine.begin() as conn:
                model_id = self._model_id(conn, name)
                conn.execute(
                    delete(t.model_versions).where(
                        and_(t.model_versions.c.model_id == model_id, t.model_versions.c.version == version)
                    )
                )
            raise
        if alias:
            self.set_alias(name, alias, version, actor=actor, reason=reason or "published")
        return version

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(t.models.c.name).order_by(t.models.c.name))]

    def versions(self, name: str) -> list[VersionRecord]:
        with self.engine.connect() as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(
                select(t.model_versions)
                .where(and_(t.model_versions.c.model_id == model_id, t.model_versions.c.status == "ready"))
                .order_by(t.model_versions.c.version)
            ).mappings()
            return [self._record(name, r) for r in rows]

    @staticmethod
    def _record(name: str, row: Any) -> VersionRecord:
        return VersionRecord(
            name=name,
            version=int(row["version"]),
            archive_sha256=row["archive_sha256"],
            manifest_sha256=row["manifest_sha256"],
            manifest=Manifest.from_dict(row["manifest"], origin=f"the registry's manifest of {name} "
                                        f"v{row['version']}"),
            created_at=row["created_at"],
            created_by=row["created_by"],
        )

    def get_version(self, name: str, version: int) -> VersionRecord:
        with self.engine.connect() as conn:
            model_id = self._model_id(conn, name)
            row = conn.execute(
                select(t.model_versions).where(
                    and_(
                        t.model_versions.c.model_id == model_id,
                        t.model_versions.c.version == version,
                        t.model_versions.c.status == "ready",
                    )
                )
            ).mappings().first()
        if row is None:
            raise VersionNotFoundError(f"model '{name}' has no version {version}", model=name, version=version)
        return self._record(name, row)

    def resolve(self, ref: str) -> VersionRecord:
        """``name``, ``name@alias`` or ``name@version`` → the version record."""
        name, selector = parse_ref(ref)
        if isinstance(selector, int):
            return self.get_version(name, selector)
        aliases = self.aliases(name)
        if selector not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise VersionNotFoundError(
                f"model '{name}' has no alias '{selector}' (aliases: {known})", model=name, alias=selector
            )
        return self.get_version(name, aliases[selector].version)

    # ---- per-model settings (modelyard_models.settings: {"rollout": {...}, "monitor": {...}}) -------------
    def model_settings(self, name: str) -> dict[str, Any]:
        """One model's settings (empty when none were set)."""
        return self.model_settings_store.get(name)

    def all_model_settings(self) -> dict[str, dict[str, Any]]:
        """Every model's settings in one query (what servers read with their alias poll)."""
        return self.model_settings_store.all()

    def update_model_settings(self, name: str, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into one section of a model's settings (a ``None`` value removes its key) under
        the model's row lock; the other sections are kept. Returns the section as stored."""
        return self.model_settings_store.update_section(name, section, values)

    # ---- aliases and events --------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, AliasRecord]:
        with self.engine.connect() as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(select(t.aliases).where(t.aliases.c.model_id == model_id)).mappings()
            return {
                r["alias"]: AliasRecord(r["alias"], int(r["version"]), r["weight"], r["updated_at"])
                for r in rows
            }

    def all_aliases(self) -> dict[str, dict[str, AliasRecord]]:
        """Every model's aliases in one query: what servers poll for hot reload."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.models.c.name, t.aliases).join(t.aliases, t.aliases.c.model_id == t.models.c.id)
            ).mappings()
            out: dict[str, dict[str, AliasRecord]] = {}
            for r in rows:
                out.setdefault(r["name"], {})[r["alias"]] = AliasRecord(
                    r["alias"], int(r["version"]), r["weight"], r["updated_at"]
                )
            return out

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        weight: float | None = None,
        actor: str | None = None,
        reason: str | None = None,
        kind: str = "alias_set",
        details: dict[str, Any] | None = None,
    ) -> None:
        if alias.isdigit():
            raise RegistryError(f"alias '{alias}' is a number and would shadow version {alias}", alias=alias)
        self.get_version(name, version)
        actor = actor or default_actor(self.settings)
        with self.engine.begin() as conn:
            model_id = self._model_id(conn, name, lock=True)
            current = conn.execute(
                select(t.aliases).where(and_(t.aliases.c.model_id == model_id, t.aliases.c.alias == alias))
            ).mappings().first()
            values = {"version": version, "weight": weight, "updated_at": t.utcnow()}
            if current is None:
                conn.execute(insert(t.aliases).values(model_id=model_id, alias=alias, **values))
            else:
                conn.execute(
                    update(t.aliases)
                    .where(and_(t.aliases.c.model_id == model_id, t.aliases.c.alias == alias))
                    .values(**values)
                )
            event_details = dict(details or {})
            if weight is not None:
                event_details["weight"] = weight
            self._event(
                conn, model_id, kind, alias=alias,
                from_version=None if current is None else int(current["version"]),
                to_version=version, actor=actor, reason=reason, details=event_details or None,
            )

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> None:
        actor = actor or default_actor(self.settings)
        with self.engine.begin() as conn:
            model_id = self._model_id(conn, name, lock=True)
            current = conn.execute(
                select(t.aliases).where(and_(t.aliases.c.model_id == model_id, t.aliases.c.alias == alias))
            ).mappings().first()
            if current is None:
                raise VersionNotFoundError(f"model '{name}' has no alias '{alias}'", model=name, alias=alias)
            conn.execute(
                delete(t.aliases).where(and_(t.aliases.c.model_id == model_id, t.aliases.c.alias == alias))
            )
            self._event(conn, model_id, "alias_removed", alias=alias, from_version=int(current["version"]),
                        actor=actor, reason=reason)

    def record_event(self, name: str, kind: str, *, actor: str | None = None, reason: str | None = None,
                     alias: str | None = None, details: dict[str, Any] | None = None,
                     to_version: int | None = None, create: bool = False) -> None:
        """Append an event that changes nothing else (a check, a refused promotion, an aborted fit);
        ``create`` files it under a model not in the registry yet (its first fit was aborted)."""
        with self.engine.begin() as conn:
            self._event(conn, self._model_id(conn, name, create=create), kind, alias=alias,
                        to_version=to_version, actor=actor or default_actor(self.settings), reason=reason,
                        details=details)

    @staticmethod
    def _event(conn: Connection, model_id: int, kind: str, **values: Any) -> None:
        write_event(conn, model_id, kind, **values)

    def events(self, name: str | None = None, *, limit: int = 100) -> list[EventRecord]:
        """The newest events (of one model, or of all), newest first."""
        return SqlEventLog(self.engine).recent(name, limit=limit)

    # ---- artifacts -----------------------------------------------------------------------------------
    def _unpacked(self, record: VersionRecord) -> Path:
        target = self.cache_dir / record.archive_sha256
        if not (target / MANIFEST).exists():
            unpack(self.store.fetch(record.archive_sha256), target)
        return target

    def bundle_dir(self, record: VersionRecord) -> Path:
        """A local, verified folder holding this version's bundle (unpacked once per archive)."""
        target = self._unpacked(record)
        verify_bundle(target, record.manifest_sha256)
        return target

    def load_bundle(self, record: VersionRecord) -> Bundle:
        """Verify every file against the registry's record, then unpickle."""
        return load_bundle(self._unpacked(record), record.manifest_sha256)

    def load(self, ref: str) -> Bundle:
        return self.load_bundle(self.resolve(ref))

