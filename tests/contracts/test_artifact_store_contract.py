"""Every ``ArtifactStore`` implementation: content-addressed, idempotent, and a changed archive is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import IntegrityError, RegistryError
from modelyard.registry.artifacts import ArtifactStore, LocalStore

IMPLEMENTATIONS: list[Callable[[Path], ArtifactStore]] = [LocalStore]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda f: f.__name__)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    return request.param(tmp_path / "artifacts")  # type: ignore[no-any-return]


def test_an_archive_is_filed_under_its_sha256_and_fetched_back(store: ArtifactStore) -> None:
    data = b"an archive" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest() and store.exists(digest)
    assert store.put(data) == digest  # idempotent
    assert store.fetch(digest).read_bytes() == data


def test_a_missing_or_changed_archive_is_refused(store: ArtifactStore) -> None:
    assert not store.exists("0" * 64)
    with pytest.raises(RegistryError):
        store.fetch("0" * 64)
    digest = store.put(b"original")
    store.fetch(digest).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.fetch(digest)
