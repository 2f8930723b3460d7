"""The registry: versions, aliases, events, and every store of ours behind a Protocol (settings, lease,
predictions, alerts, batch runs; SQL on SQLite or PostgreSQL), plus the content-addressed artifact store."""

from modelyard.registry.artifacts import ArtifactStore, LocalStore
from modelyard.registry.events import EventRecord
from modelyard.registry.registry import (
    DEFAULT_ALIAS,
    AliasRecord,
    Registry,
    VersionRecord,
    parse_ref,
)

__all__ = [
    "DEFAULT_ALIAS",
    "AliasRecord",
    "ArtifactStore",
    "EventRecord",
    "LocalStore",
    "Registry",
    "VersionRecord",
    "parse_ref",
]
