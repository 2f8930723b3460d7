"""`modelyard deploy k8s` and `modelyard deploy ci` as a user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.config import Settings
from tests.conftest import cli_env, run_cli, train_and_publish
from tests.deploy_tools import k8s_validate, kustomize
from tests.unit.test_deploy_k8s import container


@pytest.fixture
def published(house_spec: Path, sqlite_settings: Settings) -> Settings:
    assert train_and_publish(house_spec, sqlite_settings) == 1
    return sqlite_settings


def test_k8s_command_writes_manifests_that_validate(published: Settings, tmp_path: Path) -> None:
    plain = run_cli("deploy", "k8s", "house-prices", settings=published)
    assert plain.returncode == 0, plain.stderr
    docs = [d for d in yaml.safe_load_all(plain.stdout) if d]
    k8s_validate(docs)
    server = next(d for d in docs if d["kind"] == "Deployment")
    assert container(server)["image"] == "modelyard-house-prices:v1"  # the tag `deploy docker` suggests
    out = tmp_path / "k8s"
    kz = run_cli("deploy", "k8s", "house-prices", "--format", "kustomize", "--out", str(out),
                 "--namespace", "ml", "--batch-schedule", "*/15 * * * *", "--batch-from",
                 "SELECT * FROM houses", "--batch-to", "scored", settings=published)
    assert kz.returncode == 0, kz.stderr
    rendered = kustomize(out)
    k8s_validate(rendered)
    assert {d["kind"] for d in rendered} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget", "CronJob"}


@pytest.mark.parametrize("args, message", [
    (["--format", "kustomize"], "--out"),
    (["--batch-schedule", "0 * * * *"], "--batch-from"),
    (["--stream-in", "a.in"], "--stream-broker"),
    (["--format", "helm"], "kustomize"),
    (["--min-replicas", "3", "--max-replicas", "2"], "replicas"),
])
def test_k8s_command_refuses_incomplete_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["deploy", "k8s", "house-prices", "--image", "x/y:1", *args])
    assert result.exit_code == 1
    assert message in result.output


def test_k8s_command_names_a_missing_model(sqlite_settings: Settings) -> None:
    env = {k: v for k, v in cli_env(sqlite_settings).items() if k.startswith("MODELYARD_")}
    result = CliRunner().invoke(app, ["deploy", "k8s", "no-such-model"], env=env)
    assert result.exit_code == 1 and "no-such-model" in result.output
    offline = CliRunner().invoke(app, ["deploy", "k8s", "no-such-model", "--image", "x/y:1"], env=env)
    assert offline.exit_code == 0 and "image: x/y:1" in offline.output  # --image: no registry needed


def test_ci_command_writes_a_workflow_and_script_for_the_spec(house_spec: Path) -> None:
    result = run_cli("deploy", "ci", "--out", str(house_spec.parent), "--image", "ghcr.io/acme/house-prices")
    assert result.returncode == 0, result.stderr
    wf = yaml.safe_load((house_spec.parent / ".github" / "workflows" / "modelyard.yml").read_text())
    assert wf["env"]["MODEL"] == "house-prices" and wf["env"]["IMAGE"] == "ghcr.io/acme/house-prices"
    script = house_spec.parent / "ci" / "modelyard-pipeline.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    no_spec = CliRunner().invoke(app, ["deploy", "ci", "--out", str(house_spec.parent / "nowhere")])
    assert no_spec.exit_code == 1 and "--name" in no_spec.output
