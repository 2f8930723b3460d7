"""The layer contract of DESIGN.md and ruff hold on every run of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return path


def test_layers_follow_design() -> None:
    result = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize(("module", "library"), [("monitor/window.py", "sqlalchemy"), ("predlog/records.py", "alembic"),
                                                 ("rollout/policy.py", "fastapi"), ("batch/chunk.py", "nats"),
                                                 ("runtime/partial.py", "uvicorn"), ("monitor/drift.py", "duckdb")])
def test_a_forbidden_library_import_breaks_a_contract(tmp_path: Path, module: str, library: str) -> None:
    """The forbidden contracts can fail: a copy of the package with one stray import does not pass."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "modelyard" / module
    target.write_text(target.read_text() + f"\nimport {library}  # noqa\n")
    result = subprocess.run([_tool("lint-imports")], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"})
    package = "modelyard." + module.split("/")[0]
    assert result.returncode != 0 and f"{package} is not allowed to import {library}" in result.stdout, (
        result.stdout[-3000:])


def test_ruff_is_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "src", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_test_command_and_ci_pass_shellcheck() -> None:
    scripts = [ROOT / "scripts" / "test", ROOT / ".ci" / "run"]
    result = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "exec scripts/test" in scripts[1].read_text()  # CI runs exactly the README's test command




@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([_tool("mypy"), "--strict", "src/modelyard"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
