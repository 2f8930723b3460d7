"""A continuous-deployment pipeline for a model project: train, gate, publish, build and push, canary.

The same steps come twice: as a GitHub Actions workflow and as a plain shell script for any other CI. Both
talk to the shared registry through ``MODELYARD_DATABASE_URL`` and ``MODELYARD_ARTIFACT_ROOT``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from modelyard.deploy._yaml import dump
from modelyard.deploy.common import DeployError, k8s_name

_VERSION_OF_JSON = 'python3 -c "import json,sys; print(json.load(sys.stdin)[\'version\'])"'


@dataclass(frozen=True)
class CIOptions:
    model: str
    spec: str = "spec.toml"
    image: str = ""
    install: str = "modelyard"
    python: str = "3.11"
    branch: str = "main"
    canary_weight: float = 0.1
    gate_against: str = "production"

    def __post_init__(self) -> None:
        if not 0.0 < self.canary_weight <= 1.0:
            raise DeployError(f"--canary-weight must be in (0, 1], got {self.canary_weight}")
        if not self.image:
            object.__setattr__(self, "image", f"ghcr.io/OWNER/modelyard-{k8s_name(self.model)}")


def _steps(opts: CIOptions) -> dict[str, str]:
    """Each pipeline step as a shell snippet, shared by the workflow and the script (same commands)."""
    q = shlex.quote
    return {
        "train": (f'version=$(modelyard train {q(opts.spec)} --json --reason "CI build $BUILD_ID" '
                  f"| {_VERSION_OF_JSON})"),
        "check": f'modelyard check "$MODEL" "$VERSION" --against {q(opts.gate_against)}',
        "publish": ('modelyard alias set "$MODEL" "$VERSION" candidate '
                    f'--reason "passed the gates against {opts.gate_against} in CI build $BUILD_ID"'),
        "context": 'modelyard deploy docker "$MODEL@$VERSION" --out build/image',
        "promote": f'modelyard promote "$MODEL" "$VERSION" --to canary --weight {opts.canary_weight}',
    }


def workflow(opts: CIOptions) -> dict[str, Any]:
    """The GitHub Actions workflow as data (dumped with PyYAML, so the file is valid YAML)."""
    steps = _steps(opts)
    setup = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": opts.python}},
        {"name": "Install modelyard", "run": f"python -m pip install {shlex.quote(opts.install)}"},
    ]
    version = "${{ needs.train.outputs.version }}"
    image = "${{ env.IMAGE }}"
    return {
        "name": f"modelyard {opts.model}",
        "on": {"push": {"branches": [opts.branch]}, "workflow_dispatch": {}},
        "permissions": {"contents": "read"},
        "concurrency": {"group": f"modelyard-{k8s_name(opts.model)}", "cancel-in-progress": False},
        "env": {
            "MODEL": opts.model,
            "IMAGE": opts.image,
            "BUILD_ID": "${{ github.run_id }}",
            "MODELYARD_DATABASE_URL": "${{ secrets.MODELYARD_DATABASE_URL }}",
            "MODELYARD_ARTIFACT_ROOT": "${{ vars.MODELYARD_ARTIFACT_ROOT }}",
            "MODELYARD_ACTOR": "github-actions/${{ github.actor }}",
        },
        "jobs": {
            "train": {
                "name": "Train, check gates, publish",
                "runs-on": "ubuntu-latest",
                "outputs": {"version": "${{ steps.train.outputs.version }}"},
                "steps": [
                    *setup,
                    {"name": "Train (publishes an unaliased version)", "id": "train",
                     "run": f'{steps["train"]}\necho "version=$version" >> "$GITHUB_OUTPUT"\n'},
                    {"name": f"Check gates against {opts.gate_against}",
                     "env": {"VERSION": "${{ steps.train.outputs.version }}"}, "run": steps["check"]},
                    {"name": "Publish as candidate", "env": {"VERSION": "${{ steps.train.outputs.version }}"},
                     "run": steps["publish"]},
                ],
            },
            "image": {
                "name": "Build and push the image",
                "needs": "train",
                "runs-on": "ubuntu-latest",
                "permissions": {"contents": "read", "packages": "write"},
                "env": {"VERSION": version},
                "steps": [
                    *setup,
                    {"name": "Write the build context (bundle verified, dependencies pinned)",
                     "run": steps["context"]},
                    {"uses": "docker/setup-buildx-action@v3"},
                    {"uses": "docker/login-action@v3", "with": {
                        "registry": "ghcr.io", "username": "${{ github.actor }}",
                        "password": "${{ secrets.GITHUB_TOKEN }}"}},
                    {"uses": "docker/build-push-action@v6", "with": {
                        "context": "build/image", "push": True,
                        "tags": f"{image}:v{version}\n{image}:${{{{ github.sha }}}}\n"}},
                ],
            },
            "promote": {
                "name": "Promote to canary",
                "needs": ["train", "image"],
                "runs-on": "ubuntu-latest",
                "environment": "production",
                "env": {"VERSION": version},
                "steps": [*setup, {"name": f"Canary at {opts.canary_weight:g}", "run": steps["promote"]}],
            },
        },
    }


def render_workflow(opts: CIOptions) -> str:
    return ("# Generated by `modelyard deploy ci`. Secrets: MODELYARD_DATABASE_URL; variables:\n"
            "# MODELYARD_ARTIFACT_ROOT (a filesystem the runner shares with the servers).\n"
            + dump(workflow(opts)))


def render_script(opts: CIOptions) -> str:
    """The same pipeline for any CI that runs a shell: ``bash modelyard-pipeline.sh``."""
    steps = _steps(opts)
    q = shlex.quote
    return f"""#!/usr/bin/env bash
# Generated by `modelyard deploy ci`: train -> check gates -> publish -> build and push -> canary.
# Needs MODELYARD_DATABASE_URL and MODELYARD_ARTIFACT_ROOT (the shared registry) in the environment,
# modelyard installed ({opts.install}) and a container tool logged in to the image registry.
set -euo pipefail

MODEL=${{MODEL:-{q(opts.model)}}}
IMAGE=${{IMAGE:-{q(opts.image)}}}
BUILD_ID=${{BUILD_ID:-$(date -u +%Y%m%dT%H%M%SZ)}}
CONTAINER_TOOL=${{CONTAINER_TOOL:-docker}}
export MODEL IMAGE BUILD_ID

echo "== train"
{steps["train"]}
VERSION=$version
export VERSION
echo "trained $MODEL version $VERSION"

echo "== check gates"
{steps["check"]}

echo "== publish"
{steps["publish"]}

echo "== build and push the image"
{steps["context"]}
"$CONTAINER_TOOL" build -t "$IMAGE:v$VERSION" build/image
"$CONTAINER_TOOL" push "$IMAGE:v$VERSION"

echo "== promote to canary"
{steps["promote"]}
"""


def modelyard_invocations(script: str) -> list[list[str]]:
    """Every ``modelyard ...`` (or ``python -m modelyard ...``) command line in a shell snippet, as tokens.

    Used by the tests to prove each command a generated pipeline runs exists.
    """
    found: list[list[str]] = []
    for raw in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(raw, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        start = True
        for i, tok in enumerate(tokens):
            if start:
                rest = None
                if tok == "modelyard":
                    rest = tokens[i + 1:]
                elif tok in ("python", "python3") and tokens[i + 1:i + 3] == ["-m", "modelyard"]:
                    rest = tokens[i + 3:]
                if rest is not None:
                    end = next((j for j, t in enumerate(rest) if t and set(t) <= set("|&;()")), len(rest))
                    found.append(rest[:end])
            start = bool(tok) and set(tok) <= set("|&;()")  # a new command begins after | && ; $( (
    return found
