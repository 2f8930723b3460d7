"""Content-addressed artifact store: an archive is filed under its own SHA-256.

``ArtifactStore`` is the interface; ``LocalStore`` keeps archives in a folder (a shared volume when many
servers run). An object store (S3, GCS) fits behind the same three methods.
"""

from __future__ import annotations

import abc
import os
import tempfile
from pathlib import Path

from modelyard.bundle import sha256_bytes, sha256_file
from modelyard.errors import IntegrityError, RegistryError


class ArtifactStore(abc.ABC):
    @abc.abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256 (its address)."""

    @abc.abstractmethod
    def fetch(self, sha256: str) -> Path:
        """A local path to the archive, verified against its address."""

    @abc.abstractmethod
    def exists(self, sha256: str) -> bool: ...


class LocalStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / f"{sha256}.tar"

    def put(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return digest

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def fetch(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.exists():
            raise RegistryError(f"artifact {sha256[:12]}... is missing from {self.root}", file=str(path))
        actual = sha256_file(path)
        if actual != sha256:
            raise IntegrityError(
                f"archive {path.name} has SHA-256 {actual[:12]}..., the registry recorded {sha256[:12]}...: "
                "the artifact is corrupt or was changed, refusing to load it",
                file=path.name,
            )
        return path
