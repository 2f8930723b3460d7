"""Kubernetes manifests: valid against the current schemas (plain and kustomize), and wired together."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.deploy import (
    BatchJob,
    DeployError,
    K8sOptions,
    StreamConsumer,
    k8s_name,
    manifests,
    secret_example,
)
from modelyard.deploy.k8s import render_plain, write_kustomize, write_plain
from tests.deploy_tools import k8s_validate, kustomize, load_docs


def full_options(**overrides: Any) -> K8sOptions:
    values: dict[str, Any] = dict(
        model="house-prices", image="registry.example:5000/ml/modelyard-house-prices:v3", namespace="ml",
        artifacts_claim="modelyard-artifacts",
        batch=BatchJob("0 * * * *", "SELECT * FROM houses", "scored_houses"),
        stream=StreamConsumer("nats://nats:4222", "houses.in", "houses.scored", replicas=2),
    )
    values.update(overrides)
    return K8sOptions(**values)


def by_kind(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    pod = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
    return pod["spec"]["containers"][0]


def test_plain_manifests_validate_against_the_current_kubernetes_schemas(tmp_path: Path) -> None:
    opts = full_options()
    files = write_plain(opts, tmp_path)
    docs = load_docs(files[0])
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget", "CronJob", "Deployment"]
    version = k8s_validate(docs)
    assert tuple(int(p) for p in version.split(".")[:2]) >= (1, 30)
    k8s_validate(load_docs(tmp_path / "secret.example.yaml"))
    assert [d for d in yaml.safe_load_all(render_plain(opts)) if d] == docs  # stdout and --out agree
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)


def test_kustomize_output_renders_and_validates(tmp_path: Path) -> None:
    opts = full_options()
    write_kustomize(opts, tmp_path)
    rendered = kustomize(tmp_path)
    k8s_validate(rendered)
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "CronJob", "Deployment"])
    assert "Secret" not in kinds  # the example Secret is never applied by `kubectl apply -k`
    config = by_kind(rendered, "ConfigMap")
    # the generator's hash suffix: a config change rolls the pods
    assert config["metadata"]["name"].startswith("house-prices-config-")
    for workload in (by_kind(rendered, "Deployment", "house-prices"), by_kind(rendered, "CronJob")):
        assert container(workload)["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert all(d["metadata"]["namespace"] == "ml" for d in rendered)
    assert container(by_kind(rendered, "Deployment", "house-prices"))["image"] == opts.image


def test_kustomize_image_override_works_like_any_kustomization(tmp_path: Path) -> None:
    write_kustomize(full_options(namespace=None), tmp_path)
    kz = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kz["images"] == [{"name": "registry.example:5000/ml/modelyard-house-prices", "newTag": "v3"}]
    kz["images"][0]["newTag"] = "v4"
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kz))
    rendered = kustomize(tmp_path)
    assert container(by_kind(rendered, "Deployment", "house-prices"))["image"].endswith(":v4")
    assert all("namespace" not in d["metadata"] for d in rendered)


def test_validation_catches_a_broken_manifest() -> None:
    import kubernetes_validate

    deployment = copy.deepcopy(by_kind(manifests(full_options()), "Deployment", "house-prices"))
    container(deployment)["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate([deployment])
    hpa = copy.deepcopy(by_kind(manifests(full_options()), "HorizontalPodAutoscaler"))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate([hpa])


def test_server_is_probed_scraped_and_given_time_to_flush() -> None:
    docs = manifests(full_options(grace_seconds=60))
    deployment = by_kind(docs, "Deployment", "house-prices")
    c = container(deployment)
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["args"][:1] == ["serve"] and c["args"][c["args"].index("--port") + 1] == str(port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert int(c["lifecycle"]["preStop"]["exec"]["command"][1]) < 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in deployment["spec"]  # owned by the HPA


def test_selectors_and_references_point_at_the_right_objects() -> None:
    opts = full_options()
    docs = manifests(opts)
    deployment = by_kind(docs, "Deployment", "house-prices")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels
    service = by_kind(docs, "Service")
    assert service["spec"]["selector"] == pod_labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "house-prices"}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    stream = by_kind(docs, "Deployment", "house-prices-stream")
    assert stream["spec"]["template"]["metadata"]["labels"] != pod_labels  # the Service never routes to it
    secret = secret_example(opts)
    for workload in (deployment, by_kind(docs, "CronJob"), stream):
        for env in container(workload)["env"]:
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    config = by_kind(docs, "ConfigMap")
    assert config["data"]["MODELYARD_ARTIFACT_ROOT"] == "/var/lib/modelyard-artifacts"
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert {"/var/lib/modelyard-artifacts", config["data"]["MODELYARD_HOME"], "/tmp"} <= mounts


def test_batch_and_stream_run_the_documented_commands() -> None:
    docs = manifests(full_options())
    cron = by_kind(docs, "CronJob")
    assert cron["spec"]["schedule"] == "0 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert container(cron)["args"] == ["score", "house-prices", "--from", "SELECT * FROM houses",
                                       "--to", "scored_houses", "--db", "$(SCORE_DATABASE_URL)"]
    assert "SCORE_DATABASE_URL" in {e["name"] for e in container(cron)["env"]}
    stream = by_kind(docs, "Deployment", "house-prices-stream")
    assert stream["spec"]["replicas"] == 2
    assert container(stream)["args"] == ["stream", "house-prices", "--broker", "nats://nats:4222",
                                         "--in", "houses.in", "--out", "houses.scored"]


def test_without_batch_or_stream_only_the_server_is_written() -> None:
    kinds = [d["kind"] for d in manifests(full_options(batch=None, stream=None))]
    assert kinds == ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


@pytest.mark.parametrize("overrides, message", [
    ({"min_replicas": 5, "max_replicas": 2}, "replicas"),
    ({"grace_seconds": 5}, "grace-period"),
    ({"cpu_request": "lots"}, "quantity"),
    ({"cpu_target": 0}, "cpu-target"),
    ({"batch": BatchJob("hourly", "SELECT 1", "t")}, "cron"),
])
def test_unusable_options_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=message):
        full_options(**overrides)


@pytest.mark.parametrize("name, expected", [
    ("house-prices", "house-prices"), ("House_Prices v2", "house-prices-v2"), ("3d-model", "m-3d-model"),
])
def test_model_names_become_valid_kubernetes_names(name: str, expected: str) -> None:
    assert k8s_name(name) == expected
    assert len(k8s_name("x" * 200)) <= 52
    with pytest.raises(DeployError):
        k8s_name("___")
