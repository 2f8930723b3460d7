"""Fixtures that start real things: a fresh SQLite home, a fresh PostgreSQL database, trained models."""

from __future__ import annotations

import os

# One OpenMP thread per process (set before scikit-learn loads): the suite runs on xdist workers beside the
# servers it starts, and OpenMP's spinning threads on an oversubscribed machine make a 5 s fit take minutes.
if os.environ.get("MODELYARD_TEST_OPENMP_DEFAULT") != "1":  # a test that needs OpenMP's own default sets it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# shap's model-agnostic explainer runs numba kernels that are compiled on first use in every process (not
# cached: shap does not ask numba to): about 20 s of CPU per test worker, CLI run and server that explains or
# publishes a non-tree model. The tests run them as plain Python, the same code; MODELYARD_TEST_NUMBA_JIT=1
# compiles them as users' processes do.
if os.environ.get("MODELYARD_TEST_NUMBA_JIT") != "1":
    os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from modelyard.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
EXAMPLES = ROOT / "examples"
PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

sys.path.insert(0, str(EXAMPLES / "house_prices"))
from generate import generate as generate_houses  # noqa: E402


def cli_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    if settings is not None:
        env["MODELYARD_HOME"] = str(settings.home)
        if settings.database_url:
            env["MODELYARD_DATABASE_URL"] = settings.database_url
        if settings.artifact_root:
            env["MODELYARD_ARTIFACT_ROOT"] = str(settings.artifact_root)
    env.update(extra)
    return env


def run_cli(*args: str, settings: Settings | None = None, cwd: Path | None = None, timeout: float = 300,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m modelyard ARGS`` as a user would, from this checkout's source."""
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=cli_env(settings, **extra_env),
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / ".modelyard")


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    import psycopg

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: start it (see .ci/run)")
    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from modelyard.registry.db import get_engine

    try:
        get_engine(url).dispose()  # engines are cached per URL: close ours before dropping the database
    except Exception:
        pass
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(home=tmp_path / ".modelyard", database_url=pg_url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The same test on the embedded SQLite default and on PostgreSQL."""
    if request.param == "sqlite":
        return Settings(home=tmp_path / ".modelyard")
    return Settings(home=tmp_path / ".modelyard", database_url=request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def houses_frame() -> pd.DataFrame:
    return generate_houses(3000, seed=11)


@pytest.fixture
def house_spec(tmp_path: Path, houses_frame: pd.DataFrame) -> Path:
    """A copy of the house-price example spec on 3000 rows, in its own folder."""
    folder = tmp_path / "house_prices"
    folder.mkdir()
    houses_frame.to_csv(folder / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
    (folder / "spec.toml").write_text(spec)
    return folder / "spec.toml"


@pytest.fixture
def cancer_spec(tmp_path: Path) -> Path:
    folder = tmp_path / "breast_cancer"
    folder.mkdir()
    subprocess.run([sys.executable, str(EXAMPLES / "breast_cancer" / "generate.py"), "--out",
                    str(folder / "breast_cancer.csv")], check=True, capture_output=True)
    (folder / "spec.toml").write_text((EXAMPLES / "breast_cancer" / "spec.toml").read_text())
    return folder / "spec.toml"


_TRAINED: dict[str, Path] = {}  # the spec folder's content hash -> a bundle trained from it (this process)


def _spec_key(spec_path: Path) -> str:
    """The hash of every file beside the spec (the spec and its data): equal folders train equal bundles."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in spec_path.parent.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest() + ":" + spec_path.name


def train_and_publish(spec_path: Path, settings: Settings, alias: str | None = "production") -> int:
    """Train a spec in-process and publish it; return the version.

    Training is seeded, so a spec folder trained once in this process is not trained again: its bundle is
    published from a cache (the registry copies a bundle when it publishes it)."""
    import atexit
    import shutil
    import tempfile

    from modelyard.pipeline import load_spec, train
    from modelyard.registry import Registry

    key = _spec_key(spec_path)
    bundle = _TRAINED.get(key)
    if bundle is None or not bundle.exists():
        cache = Path(tempfile.mkdtemp(prefix="modelyard-test-bundle-"))
        atexit.register(shutil.rmtree, cache, True)
        train(load_spec(spec_path)).write_bundle(cache / "b")
        bundle = _TRAINED[key] = cache / "b"
    return Registry(settings).publish(bundle, alias=alias)
