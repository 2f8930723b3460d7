"""A container build context for one model version: pinned dependencies, a non-root image, a verified bundle.

The model's own packages (scikit-learn, numpy, ... and the estimator's distribution) are pinned to the
versions in its manifest, so the image unpickles the pipeline with what it was trained on. Everything else
modelyard needs is pinned to the versions of the environment that generated the context, closure included.
The image verifies every checksum of the baked bundle at build time and again at each start.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelyard.bundle import Manifest, verify_bundle
from modelyard.deploy.common import (
    APP_UID,
    BUNDLE_PATH,
    HEALTH_PATH,
    IMAGE_CACHE,
    IMAGE_HOME,
    LOCK_PATH,
    PORT,
    BundleLock,
    DeployError,
)

DOCKERIGNORE = """\
# Only what the Dockerfile copies belongs in the build context.
**/__pycache__
**/*.py[cod]
.git
README.md
"""


@dataclass(frozen=True)
class Pins:
    """requirements.txt lines, and where each pin came from."""

    from_manifest: dict[str, str]
    from_environment: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def text(self, model: str, version: int | None, modelyard_requirement: str | None) -> str:
        lines = [f"# Pinned from the manifest of {model} v{version} (lineage.environment.packages):"]
        lines += [f"{k}=={v}" for k, v in sorted(self.from_manifest.items())]
        lines.append("# modelyard's runtime dependencies, pinned to the environment that wrote this context:")
        lines += [f"{k}=={v}" for k, v in sorted(self.from_environment.items())]
        if modelyard_requirement:
            lines += ["# modelyard itself, from a package index:", modelyard_requirement]
        return "\n".join(lines) + "\n"


def _marker_ok(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras | {""}))


def _closure(roots: list[Requirement]) -> dict[str, tuple[str, set[str]]]:
    """Installed distributions reachable from ``roots``: canonical name → (display name, extras asked for)."""
    seen: dict[str, tuple[str, set[str]]] = {}
    queue: list[tuple[Requirement, set[str]]] = [(r, set()) for r in roots]
    while queue:
        req, parent_extras = queue.pop()
        if not _marker_ok(req, parent_extras):
            continue
        key = canonicalize_name(req.name)
        extras = set(req.extras)
        if key in seen and extras <= seen[key][1]:
            continue
        display, known = seen.get(key, (req.name, set()))
        seen[key] = (display, known | extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            try:
                queue.append((Requirement(line), known | extras))
            except InvalidRequirement:
                continue
    return seen


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _label(name: str, extras: set[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else name


def pin_requirements(manifest: Manifest) -> Pins:
    """Pins for an image serving ``manifest``: its packages exactly, modelyard's closure from here."""
    env = manifest.lineage.environment
    packages: dict[str, str] = dict(env.packages) if env else {}
    if not packages:
        raise DeployError(f"the manifest of {manifest.name} v{manifest.version} records no "
                          "package versions (lineage.environment.packages): cannot pin the image")
    try:
        own = metadata.requires("modelyard") or []
    except metadata.PackageNotFoundError:
        raise DeployError("modelyard is not installed as a distribution here, so its dependencies are "
                          "unknown: install it (pip install modelyard) and run again") from None
    roots = [Requirement(r) for r in own]
    warnings: list[str] = []
    recorded = packages.pop("modelyard", None)
    current = _installed("modelyard")
    if recorded and current and recorded != current:
        warnings.append(f"the model was trained with modelyard {recorded}; the image gets {current}")
    manifest_keys = {canonicalize_name(k): k for k in packages}
    closure = _closure(roots)
    from_manifest: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for key, display in manifest_keys.items():  # keep the extras modelyard asks for, if any
        from_manifest[_label(display, closure.get(key, (display, set()))[1])] = packages[display]
    for dep, (display, extras) in sorted(closure.items()):
        if dep in manifest_keys or dep == "modelyard":
            continue
        version = _installed(display)
        if version is not None:
            from_env[_label(display, extras)] = version
    py = str((env and env.python) or "")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if py and not py.startswith(here + ".") and py != here:
        warnings.append(f"the model was trained on Python {py} and this environment runs {here}: the pins of "
                        "modelyard's own dependencies come from here and may not exist for that Python")
    return Pins(from_manifest, from_env, warnings)


def base_image(manifest: Manifest) -> str:
    """``python:MAJOR.MINOR-slim-bookworm`` of the Python the model was trained on (patch updates allowed)."""
    env = manifest.lineage.environment
    py = str((env and env.python) or "")
    parts = py.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        parts = [str(sys.version_info.major), str(sys.version_info.minor)]
    return f"python:{parts[0]}.{parts[1]}-slim-bookworm"


def render_dockerfile(lock: BundleLock, *, base: str, tag: str, vendored: bool) -> str:
    """The multi-stage Dockerfile text; ``vendored`` copies modelyard's source instead of installing it."""
    origin = (f"{lock.name} v{lock.version} (manifest sha256 {str(lock.manifest_sha256)[:16]}...)"
              if lock.mode == "baked" else f"{lock.ref}, pulled from the registry at start")
    health = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}{HEALTH_PATH}', "
              "timeout=4)")
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# Generated by `modelyard deploy docker` for {origin}.",
        f"# Build: docker build -t {tag} .",
        f"# Run:   docker run --rm -p {PORT}:{PORT} {tag}",
        "",
        f"FROM {base} AS build",
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1",
        "COPY requirements.txt /tmp/requirements.txt",
        "RUN python -m venv /opt/venv \\",
        " && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt",
        "",
        f"FROM {base} AS runtime",
        f'LABEL org.opencontainers.image.title="{lock.name}" \\',
        f'      io.modelyard.model.name="{lock.name}" \\',
        f'      io.modelyard.model.ref="{lock.ref}" \\',
        f'      io.modelyard.model.version="{lock.version if lock.version is not None else ""}" \\',
        f'      io.modelyard.model.manifest-sha256="{lock.manifest_sha256 or ""}"',
        f"RUN groupadd --system --gid {APP_UID} modelyard \\",
        f" && useradd --system --uid {APP_UID} --gid modelyard --home-dir /home/modelyard --create-home \\",
        "      --shell /usr/sbin/nologin modelyard \\",
        f" && mkdir -p {IMAGE_HOME} {IMAGE_CACHE} \\",
        f" && chown modelyard:modelyard {IMAGE_HOME} {IMAGE_CACHE}",
        "ENV PATH=/opt/venv/bin:$PATH \\",
        "    PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
    ]
    if vendored:
        lines.append("    PYTHONPATH=/opt/modelyard/lib \\")
    lines += [
        f"    MODELYARD_HOME={IMAGE_HOME} \\",
        f"    MODELYARD_CACHE_DIR={IMAGE_CACHE}",
        "COPY --from=build /opt/venv /opt/venv",
    ]
    if vendored:
        lines.append("COPY modelyard/ /opt/modelyard/lib/modelyard/")
    lines.append(f"COPY bundle.lock.json {LOCK_PATH}")
    if lock.mode == "baked":
        lines += [
            f"COPY bundle/ {BUNDLE_PATH}/",
            "# Refuse to build an image whose bundle does not match its checksums.",
            f"RUN python -m modelyard deploy verify-bundle {BUNDLE_PATH} --lock {LOCK_PATH}",
        ]
    lines += [
        f"USER {APP_UID}:{APP_UID}",
        "WORKDIR /home/modelyard",
        f"EXPOSE {PORT}",
        "# uvicorn stops gracefully on SIGTERM: in-flight requests finish, the prediction log is flushed.",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \\",
        f"  CMD {json.dumps(['python', '-c', health])}",
        "# The start step verifies the bundle's checksums (or pulls and verifies it), then runs the command.",
        "ENTRYPOINT " + json.dumps(["python", "-m", "modelyard", "deploy", "start", "--lock", LOCK_PATH,
                                    "--"]),
        "CMD " + json.dumps(["serve", "--host", "0.0.0.0", "--port", str(PORT)]),
    ]
    return "\n".join(lines) + "\n"


def _world_readable(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def write_context(
    out: Path,
    *,
    manifest: Manifest,
    lock: BundleLock,
    bundle_dir: Path | None,
    tag: str,
    modelyard_requirement: str | None = None,
    base: str | None = None,
    force: bool = False,
) -> list[str]:
    """Write the build context into ``out``; return warnings worth showing the user."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DeployError(f"{out} is not empty: choose an empty folder or pass --force to overwrite it")
        for sub in ("bundle", "modelyard"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    pins = pin_requirements(manifest)
    (out / "requirements.txt").write_text(pins.text(lock.name, lock.version, modelyard_requirement))
    vendored = modelyard_requirement is None
    if vendored:
        import modelyard

        shutil.copytree(Path(modelyard.__file__).parent, out / "modelyard",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if lock.mode == "baked":
        if bundle_dir is None:
            raise DeployError("a baked image needs the bundle folder")
        shutil.copytree(bundle_dir, out / "bundle")
        _world_readable(out / "bundle")  # the cache is 0700; the image's non-root user must read the copy
        verify_bundle(out / "bundle", lock.manifest_sha256)
    (out / "bundle.lock.json").write_text(lock.to_json())
    (out / "Dockerfile").write_text(render_dockerfile(lock, base=base or base_image(manifest), tag=tag,
                                                      vendored=vendored))
    (out / ".dockerignore").write_text(DOCKERIGNORE)
    (out / "README.md").write_text(
        f"# Image for {lock.ref}\n\n"
        f"Build: `docker build -t {tag} {out}`\n\n"
        f"Run:   `docker run --rm -p {PORT}:{PORT} {tag}` (then `curl localhost:{PORT}{HEALTH_PATH}`)\n\n"
        f"Same image, other verbs: `docker run --rm {tag} score {lock.name} --from SQL --to TABLE --db URL`\n"
    )
    return pins.warnings
