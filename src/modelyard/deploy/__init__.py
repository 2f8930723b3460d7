"""Deployment files: container build contexts, Kubernetes manifests, CI/CD pipelines (see docs/deploy.md)."""

from __future__ import annotations

from modelyard.deploy.ci import CIOptions, modelyard_invocations, render_script, render_workflow, workflow
from modelyard.deploy.common import BundleLock, DeployError, default_image, k8s_name
from modelyard.deploy.docker import pin_requirements, render_dockerfile, write_context
from modelyard.deploy.k8s import (
    BatchJob,
    K8sOptions,
    StreamConsumer,
    manifests,
    render_plain,
    secret_example,
    write_kustomize,
    write_plain,
)

__all__ = [
    "BatchJob",
    "BundleLock",
    "CIOptions",
    "DeployError",
    "K8sOptions",
    "StreamConsumer",
    "default_image",
    "k8s_name",
    "manifests",
    "modelyard_invocations",
    "pin_requirements",
    "render_dockerfile",
    "render_plain",
    "render_script",
    "render_workflow",
    "secret_example",
    "workflow",
    "write_context",
    "write_kustomize",
    "write_plain",
]
