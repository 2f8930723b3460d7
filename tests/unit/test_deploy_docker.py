"""Dockerfiles: hadolint finds no error, dependencies pinned from the manifest, the build context whole."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from pathlib import Path

import pytest

from modelyard.deploy import BundleLock, DeployError, pin_requirements, render_dockerfile
from modelyard.deploy.docker import base_image
from tests.conftest import ROOT
from tests.deploy_tools import hadolint, hadolint_errors
from tests.manifests import manifest_of

MANIFEST = manifest_of({
    "name": "house-prices", "version": 3,
    "lineage": {"environment": {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}.4",
        "packages": {"modelyard": "0.1.0", "scikit-learn": "1.4.2", "numpy": "1.26.4", "pandas": "2.2.2",
                     "scipy": "1.13.1", "joblib": "1.4.2", "pyarrow": "16.1.0"}}},
})
BAKED = BundleLock(name="house-prices", ref="house-prices@3", mode="baked", version=3,
                   manifest_sha256="a" * 64, archive_sha256="b" * 64)
PULL = BundleLock(name="house-prices", ref="house-prices@production", mode="pull")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    kept = "\n".join(ln for ln in dockerfile.splitlines() if not ln.lstrip().startswith("#"))
    joined = re.sub(r"\\\n", " ", kept)
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in joined.splitlines() if ln.strip()]


@pytest.mark.parametrize("lock, vendored", [(BAKED, True), (BAKED, False), (PULL, True)],
                         ids=["baked-vendored", "baked-from-index", "pull"])
def test_generated_dockerfiles_pass_hadolint(tmp_path: Path, lock: BundleLock, vendored: bool) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(render_dockerfile(lock, base=base_image(MANIFEST), tag="modelyard-house-prices:v3",
                                      vendored=vendored))
    assert hadolint_errors(path) == []
    assert [f for f in hadolint(path) if f["level"] == "warning"] == []  # and no warnings either, today


def test_the_repository_dockerfile_passes_hadolint() -> None:
    assert hadolint_errors(ROOT / "Dockerfile") == []


def test_hadolint_check_can_fail(tmp_path: Path) -> None:
    text = render_dockerfile(BAKED, base="python:3.11-slim-bookworm", tag="t", vendored=True)
    broken = tmp_path / "Dockerfile"
    broken.write_text(text + 'HEALTHCHECK CMD ["true"]\n')  # two HEALTHCHECKs: DL3012 is an error
    assert {f["code"] for f in hadolint_errors(broken)} == {"DL3012"}


def test_model_image_is_multi_stage_non_root_probed_and_verifies_its_bundle() -> None:
    text = render_dockerfile(BAKED, base="python:3.11-slim-bookworm", tag="t", vendored=True)
    ins = instructions(text)
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["python:3.11-slim-bookworm AS build", "python:3.11-slim-bookworm AS runtime"]
    users = [a for i, a in ins if i == "USER"]
    assert users == ["10001:10001"]
    assert [a for i, a in ins if i == "STOPSIGNAL"] == ["SIGTERM"]
    health = next(a for i, a in ins if i == "HEALTHCHECK")
    assert "/healthz" in health
    entry = json.loads(next(a for i, a in ins if i == "ENTRYPOINT"))
    assert entry[:5] == ["python", "-m", "modelyard", "deploy", "start"] and entry[-1] == "--"
    assert json.loads(next(a for i, a in ins if i == "CMD"))[0] == "serve"
    runs = [a for i, a in ins if i == "RUN"]
    assert any("deploy verify-bundle /opt/modelyard/bundle" in r for r in runs)  # fails the build if tampered
    pull = instructions(render_dockerfile(PULL, base="python:3.11-slim-bookworm", tag="t", vendored=True))
    assert not any("bundle/" in a for i, a in pull if i == "COPY")


def test_model_packages_are_pinned_from_the_manifest_not_the_environment() -> None:
    pins = pin_requirements(MANIFEST)
    assert pins.from_manifest == {"scikit-learn": "1.4.2", "numpy": "1.26.4", "pandas": "2.2.2",
                                  "scipy": "1.13.1", "joblib": "1.4.2", "pyarrow": "16.1.0"}
    env_names = {re.sub(r"\[.*\]", "", k).lower() for k in pins.from_environment}
    assert not env_names & {"scikit-learn", "numpy", "pandas", "scipy", "joblib", "pyarrow", "modelyard"}
    # modelyard's own runtime dependencies (and theirs) are pinned exactly, extras kept
    assert {"fastapi", "sqlalchemy", "typer", "starlette"} <= env_names
    assert any(k.startswith("uvicorn[standard]") for k in pins.from_environment)
    assert not {"pytest", "ruff", "hypothesis"} & env_names  # dev extras stay out of the image
    text = pins.text("house-prices", 3, None)
    assert "scikit-learn==1.4.2" in text.splitlines()
    assert all(line.startswith("#") or "==" in line for line in text.splitlines())


def test_a_manifest_without_package_versions_cannot_be_pinned() -> None:
    with pytest.raises(DeployError, match="package versions"):
        pin_requirements(manifest_of({"name": "m", "version": 1, "lineage": {}}))


def test_base_image_follows_the_python_the_model_was_trained_on() -> None:
    assert base_image(manifest_of({"lineage": {"environment": {"python": "3.12.7"}}})) == "python:3.12-slim-bookworm"


def _ignored(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel.split("/")[0], p) for p in patterns)


def test_root_dockerfile_copies_only_what_the_context_holds() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    ins = instructions((ROOT / "Dockerfile").read_text())
    sources = [s for i, a in ins if i == "COPY" and "--from" not in a for s in a.split()[:-1]]
    assert sources == ["pyproject.toml", "README.md", "src/"]
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src.rstrip("/"), patterns), f"{src} is excluded by .dockerignore"
    assert json.loads(next(a for i, a in ins if i == "ENTRYPOINT")) == ["modelyard"]
    assert [a for i, a in ins if i == "USER"] == ["10001:10001"]
    assert "HEALTHCHECK" in {i for i, _ in ins} and "STOPSIGNAL" in {i for i, _ in ins}
