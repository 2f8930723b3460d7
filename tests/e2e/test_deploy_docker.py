"""`modelyard deploy docker` and the image's start step, run as the container would (minus the engine)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from modelyard.bundle import sha256_file
from modelyard.config import Settings
from modelyard.registry import Registry
from tests.conftest import cli_env, run_cli, train_and_publish
from tests.deploy_tools import hadolint_errors, house_project
from tests.unit.test_deploy_docker import instructions


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory,
          houses_frame: pd.DataFrame) -> Iterator[tuple[Settings, Path]]:
    """One trained registry and one baked build context for the module; tests work on copies."""
    root = tmp_path_factory.mktemp("deploy-docker")
    settings = Settings(home=root / ".modelyard")
    assert train_and_publish(house_project(root / "project", houses_frame), settings) == 1
    out = root / "image"
    result = run_cli("deploy", "docker", "house-prices@production", "--out", str(out), settings=settings)
    assert result.returncode == 0, result.stderr
    assert "docker build -t modelyard-house-prices:v1" in result.stdout
    yield settings, out


@pytest.fixture
def published(built: tuple[Settings, Path], tmp_path: Path) -> Settings:
    shutil.copytree(built[0].home, tmp_path / ".modelyard")
    return Settings(home=tmp_path / ".modelyard")


@pytest.fixture
def context(built: tuple[Settings, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(built[1], tmp_path / "image"))


def start(ctx: Path, *command: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    """The image's ENTRYPOINT + COMMAND, with the image's paths mapped into the build context and modelyard
    imported from the context's vendored copy (as the image's PYTHONPATH does)."""
    dockerfile = instructions((ctx / "Dockerfile").read_text())
    entry = json.loads(next(a for i, a in dockerfile if i == "ENTRYPOINT"))
    entry = [str(ctx / "bundle.lock.json") if a == "/opt/modelyard/bundle.lock.json" else a for a in entry]
    assert entry[:3] == ["python", "-m", "modelyard"]
    return subprocess.run([sys.executable, *entry[1:], *command], capture_output=True, text=True, timeout=120,
                          env=cli_env(settings, PYTHONPATH=str(ctx)))


def test_context_bakes_the_verified_bundle_with_pinned_packages(context: Path, published: Settings) -> None:
    registry = Registry(published)
    record = registry.resolve("house-prices@production")
    for name in ("Dockerfile", ".dockerignore", "requirements.txt", "bundle.lock.json", "README.md"):
        assert (context / name).is_file(), name
    source = registry.bundle_dir(record)
    assert {p.name: sha256_file(p) for p in (context / "bundle").iterdir()} == \
        {p.name: sha256_file(p) for p in source.iterdir()}
    assert all(p.stat().st_mode & stat.S_IROTH for p in (context / "bundle").iterdir())  # non-root reads
    lock = json.loads((context / "bundle.lock.json").read_text())
    assert lock["manifest_sha256"] == record.manifest_sha256 and lock["version"] == 1
    lines = (context / "requirements.txt").read_text().splitlines()
    pins = dict(ln.split("==") for ln in lines if "==" in ln)
    for name, version in record.manifest.lineage.environment.packages.items():
        if name != "modelyard":  # vendored from source, not installed from an index
            assert pins[name] == version, name
    assert hadolint_errors(context / "Dockerfile") == []
    ignored = (context / ".dockerignore").read_text().split()
    for i, args in instructions((context / "Dockerfile").read_text()):
        if i == "COPY" and "--from" not in args:
            src = args.split()[0]
            assert (context / src).exists(), f"COPY {src}: not in the build context"
            assert src.rstrip("/") not in ignored
    assert (context / "modelyard" / "cli" / "deploy.py").is_file()


def test_start_step_verifies_seeds_then_runs_the_command(context: Path, tmp_path: Path) -> None:
    fresh = Settings(home=tmp_path / "container-home")  # what a new container has: nothing
    first = start(context, "models", "list", "--json", settings=fresh)
    assert first.returncode == 0, first.stderr
    assert "verified house-prices v1" in first.stderr
    assert "published into the embedded registry" in first.stderr
    assert json.loads(first.stdout)[0]["aliases"] == {"production": 1}
    again = start(context, "models", "list", "--json", settings=fresh)
    assert again.returncode == 0, again.stderr
    assert "already serves it" in again.stderr and json.loads(again.stdout)[0]["versions"] == 1
    assert "modelyard" in (context / "modelyard" / "__init__.py").read_text()
    (context / "modelyard" / "__main__.py").write_text("raise SystemExit(42)\n")
    assert start(context, "models", "list", settings=fresh).returncode == 42  # the vendored copy is what runs


@pytest.mark.parametrize("damage", ["changed", "extra", "missing"])
def test_start_refuses_a_tampered_bundle_and_runs_nothing(context: Path, tmp_path: Path, damage: str) -> None:
    bundle = context / "bundle"
    if damage == "changed":
        (bundle / "reference.parquet").write_bytes((bundle / "reference.parquet").read_bytes()[:-1] + b"\0")
    elif damage == "extra":
        (bundle / "evil.py").write_text("print('hi')")
    else:
        (bundle / "model.joblib").unlink()
    fresh = Settings(home=tmp_path / "container-home")
    result = start(context, "models", "list", "--json", settings=fresh)
    assert result.returncode == 1
    named = {"changed": "reference.parquet", "extra": "evil.py", "missing": "model.joblib"}[damage]
    assert named in result.stderr
    assert result.stdout == ""  # the command never ran
    assert not (fresh.home / "registry.db").exists()  # and nothing was published


def test_pull_image_fetches_and_verifies_from_the_registry(published: Settings, tmp_path: Path) -> None:
    out = tmp_path / "pull"
    result = run_cli("deploy", "docker", "house-prices@production", "--pull", "--out", str(out),
                     settings=published)
    assert result.returncode == 0, result.stderr
    assert not (out / "bundle").exists()
    assert not any("bundle/" in a for i, a in instructions((out / "Dockerfile").read_text()) if i == "COPY")
    assert hadolint_errors(out / "Dockerfile") == []
    ok = start(out, "models", "list", "--json", settings=published)
    assert ok.returncode == 0, ok.stderr
    assert "pulled and verified house-prices@production (version 1)" in ok.stderr
    record = Registry(published).resolve("house-prices@production")
    shutil.rmtree(published.resolved_cache_dir)
    archive = Registry(published).store.fetch(record.archive_sha256)
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    bad = start(out, "models", "list", settings=published)
    assert bad.returncode == 1 and "corrupt" in bad.stderr and bad.stdout == ""


def test_pinned_requirements_resolve_for_the_image_platform(built: tuple[Settings, Path],
                                                            tmp_path: Path) -> None:
    """What the Dockerfile's `pip install -r requirements.txt` would do, asked of the package index without
    installing: every pin exists as a Linux x86-64 wheel for the image's Python, and they fit together."""
    context = built[1]
    base = next(a for i, a in instructions((context / "Dockerfile").read_text()) if i == "FROM")
    python = base.split(":")[1].split("-")[0]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64", "--python-version", python, "--target", str(tmp_path / "t"),
         "-r", str(context / "requirements.txt")],
        capture_output=True, text=True, timeout=600)
    unreachable = ("Max retries exceeded", "Could not fetch URL", "Temporary failure in name resolution")
    if result.returncode != 0 and any(u in result.stdout + result.stderr for u in unreachable):
        pytest.skip("the package index is not reachable from here: " + result.stderr[-300:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Would install" in result.stdout and "scikit-learn" in result.stdout
