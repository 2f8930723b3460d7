"""What the deploy generators share: names Kubernetes and registries accept, the lock file, the error."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from modelyard.errors import ModelyardError

PORT = 8000
APP_UID = 10001
IMAGE_HOME = "/var/lib/modelyard"
IMAGE_CACHE = "/var/cache/modelyard"
LOCK_PATH = "/opt/modelyard/bundle.lock.json"
BUNDLE_PATH = "/opt/modelyard/bundle"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


class DeployError(ModelyardError):
    """Deployment files that cannot be generated as asked (a bad option, an unusable folder)."""

    status_code = 400
    code = "deploy_error"


def k8s_name(name: str, *, max_length: int = 52) -> str:
    """A DNS-1123 label from a model name (``House_Prices`` → ``house-prices``), short for a CronJob."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:max_length].rstrip("-")
    if not slug:
        raise DeployError(f"'{name}' gives no usable Kubernetes name; pass one with --app")
    return slug if slug[0].isalpha() else f"m-{slug}"[:max_length].rstrip("-")


def default_image(name: str, version: int | None) -> str:
    """The tag `deploy docker` suggests and `deploy k8s` assumes unless told otherwise."""
    return f"modelyard-{k8s_name(name)}:{f'v{version}' if version is not None else 'latest'}"


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``host:5000/repo:tag@sha256:x`` → (``host:5000/repo``, tag, digest)."""
    repo, _, digest = image.partition("@")
    tag = None
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = repo.rsplit(":", 1)
    return repo, tag, digest or None


@dataclass(frozen=True)
class BundleLock:
    """Baked into an image: the version it carries (``baked``) or pulls at start (``pull``), and hashes."""

    name: str
    ref: str
    mode: Literal["baked", "pull"]
    version: int | None = None
    manifest_sha256: str | None = None
    archive_sha256: str | None = None
    alias: str = "production"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> BundleLock:
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
            return cls(**data)
        except FileNotFoundError:
            raise DeployError(f"lock file {path} is missing: this image was not built by "
                              "`modelyard deploy docker`") from None
        except (TypeError, ValueError) as exc:
            raise DeployError(f"lock file {path} is not a modelyard bundle lock: {exc}") from None


def promql_quote(value: str) -> str:
    """A PromQL string literal (label values in the Prometheus rules and the Grafana queries)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
