"""Every `modelyard ...` command the generated CI files and manifests run exists; the pipeline script runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.config import Settings
from modelyard.deploy import CIOptions, modelyard_invocations, render_script, render_workflow
from modelyard.deploy.k8s import manifests
from modelyard.registry import Registry
from tests.conftest import cli_env, run_cli, train_and_publish
from tests.deploy_tools import command_path, workflow_runs
from tests.unit.test_deploy_k8s import container, full_options


def _all_command_paths() -> list[list[str]]:
    opts = CIOptions(model="house-prices")
    found = [inv for run in workflow_runs(render_workflow(opts)) for inv in modelyard_invocations(run)]
    found += modelyard_invocations(render_script(opts))
    found += [container(d)["args"] for d in manifests(full_options())
              if d["kind"] in ("Deployment", "CronJob")]
    unique: dict[str, list[str]] = {}
    for inv in found:
        path, _ = command_path(inv)
        unique.setdefault(" ".join(path), path)
    return list(unique.values())


def test_the_generated_files_run_the_commands_we_expect() -> None:
    paths = {" ".join(p) for p in _all_command_paths()}
    assert paths == {"train", "check", "alias set", "deploy docker", "promote", "serve", "score", "stream"}


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p))
def test_every_modelyard_command_in_the_generated_files_exists(path: list[str]) -> None:
    assert command_path(path)[1], f"`modelyard {' '.join(path)}` is not a command of the CLI"
    result = run_cli(*path, "--help", timeout=120)
    assert result.returncode == 0, f"`modelyard {' '.join(path)} --help` failed:\n{result.stderr}"
    assert "Usage" in result.stdout


def test_generated_pipeline_script_runs_end_to_end(house_spec: Path, sqlite_settings: Settings,
                                                   tmp_path: Path) -> None:
    """train → gates → publish → context + image (recorded: no Docker engine here) → canary."""
    assert train_and_publish(house_spec, sqlite_settings) == 1  # production, for the gates to compare with
    project = house_spec.parent
    assert run_cli("deploy", "ci", "--out", str(project)).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "modelyard"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelyard "$@"\n')
    tool_log = tmp_path / "container-tool.log"
    recorder = bin_dir / "record-container-tool"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> "{tool_log}"\n')
    for f in (shim, recorder):
        f.chmod(0o755)
    env = cli_env(sqlite_settings, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                  CONTAINER_TOOL=str(recorder), IMAGE="registry.test/house-prices", BUILD_ID="test-1")
    result = subprocess.run(["bash", "ci/modelyard-pipeline.sh"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    aliases = Registry(sqlite_settings).aliases("house-prices")
    assert aliases["candidate"].version == 2 and aliases["canary"].version == 2
    assert aliases["canary"].weight == pytest.approx(0.1)
    assert aliases["production"].version == 1
    assert tool_log.read_text().splitlines() == ["build -t registry.test/house-prices:v2 build/image",
                                                 "push registry.test/house-prices:v2"]
    assert (project / "build" / "image" / "Dockerfile").is_file()
