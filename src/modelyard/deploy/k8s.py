"""Kubernetes manifests for one model: a probed, autoscaled server, plus batch and stream workers on request.

Everything is built as plain dicts and written through PyYAML. Stateless replicas share one PostgreSQL
registry and prediction log (the database URL comes from a Secret) and one artifact store (a shared volume).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.deploy._yaml import dump, dump_all
from modelyard.deploy.common import (
    APP_UID,
    HEALTH_PATH,
    IMAGE_CACHE,
    IMAGE_HOME,
    METRICS_PATH,
    PORT,
    READY_PATH,
    DeployError,
    k8s_name,
    split_image,
)

PRESTOP_SECONDS = 5
ARTIFACT_MOUNT = "/var/lib/modelyard-artifacts"
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


@dataclass(frozen=True)
class BatchJob:
    """A CronJob running ``modelyard score``; the scored database's URL comes from the Secret."""

    schedule: str
    query: str
    table: str
    db_key: str = "score-database-url"


@dataclass(frozen=True)
class StreamConsumer:
    """A Deployment of ``modelyard stream`` consumers (a JetStream consumer group scales by replicas)."""

    broker: str
    subject_in: str
    subject_out: str
    replicas: int = 1


@dataclass(frozen=True)
class K8sOptions:
    model: str
    image: str
    app: str = ""
    namespace: str | None = None
    min_replicas: int = 2
    max_replicas: int = 10
    cpu_target: int = 70
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    workers: int = 1
    grace_seconds: int = 45
    secret: str = ""
    artifacts_claim: str | None = None
    extra_config: dict[str, str] = field(default_factory=dict)
    batch: BatchJob | None = None
    stream: StreamConsumer | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "app", k8s_name(self.app or self.model))
        object.__setattr__(self, "secret", self.secret or f"{self.app}-secrets")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise DeployError(f"replicas must satisfy 1 <= min ({self.min_replicas}) <= max "
                              f"({self.max_replicas})")
        if not 1 <= self.cpu_target <= 100:
            raise DeployError(f"--cpu-target is a percentage of the request, got {self.cpu_target}")
        if self.grace_seconds < PRESTOP_SECONDS + 10:
            raise DeployError(f"--grace-period {self.grace_seconds}s leaves the server under 10 s to "
                              "finish requests and flush the prediction log after the "
                              f"{PRESTOP_SECONDS}s pre-stop pause")
        for q in (self.cpu_request, self.cpu_limit, self.memory_request, self.memory_limit):
            if not _QUANTITY.match(q):
                raise DeployError(f"'{q}' is not a Kubernetes quantity (e.g. 250m, 1, 512Mi, 2Gi)")
        if self.batch and len(self.batch.schedule.split()) != 5:
            raise DeployError(f"--batch-schedule '{self.batch.schedule}' is not a 5-field cron expression")
        if self.stream and self.stream.replicas < 1:
            raise DeployError("--stream-replicas must be at least 1")

    @property
    def config_name(self) -> str:
        return f"{self.app}-config"


def _labels(opts: K8sOptions, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "modelyard", "app.kubernetes.io/instance": opts.app,
            "app.kubernetes.io/component": component}


def _meta(opts: K8sOptions, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = {**_labels(opts, component), "app.kubernetes.io/part-of": "modelyard"}
    return meta


def config_data(opts: K8sOptions) -> dict[str, str]:
    data = {
        "MODELYARD_HOME": IMAGE_HOME,
        "MODELYARD_CACHE_DIR": IMAGE_CACHE,
        "MODELYARD_SPILL_DIR": f"{IMAGE_HOME}/spill",
        "MODELYARD_RELOAD_INTERVAL": "2",
        "MODELYARD_LOG_FLUSH_INTERVAL": "0.5",
    }
    if opts.artifacts_claim:
        data["MODELYARD_ARTIFACT_ROOT"] = ARTIFACT_MOUNT
    data.update(opts.extra_config)
    return data


def _secret_env(opts: K8sOptions, *, admin: bool) -> list[dict[str, Any]]:
    # optional: a baked image also runs on its embedded SQLite registry when the Secret is absent
    pairs = [("MODELYARD_DATABASE_URL", "database-url")]
    if admin:  # only the server has an admin API
        pairs.append(("MODELYARD_ADMIN_TOKEN", "admin-token"))
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": opts.secret, "key": key, "optional": True}}}
            for env, key in pairs]


def _pod(opts: K8sOptions, component: str, args: list[str], *, server: bool = False,
         extra_env: list[dict[str, Any]] | None = None, restart: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": component,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [{"configMapRef": {"name": opts.config_name}}],
        "env": _secret_env(opts, admin=server) + (extra_env or []),
        "resources": {"requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
                      "limits": {"cpu": opts.cpu_limit, "memory": opts.memory_limit}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "home", "mountPath": IMAGE_HOME},
                         {"name": "cache", "mountPath": IMAGE_CACHE},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes: list[dict[str, Any]] = [{"name": "home", "emptyDir": {}}, {"name": "cache", "emptyDir": {}},
                                     {"name": "tmp", "emptyDir": {}}]
    if opts.artifacts_claim:
        container["volumeMounts"].append({"name": "artifacts", "mountPath": ARTIFACT_MOUNT, "readOnly": True})
        volumes.append({"name": "artifacts",
                        "persistentVolumeClaim": {"claimName": opts.artifacts_claim, "readOnly": True}})
    if server:
        container["ports"] = [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
        probe = {"port": "http", "scheme": "HTTP"}
        container["startupProbe"] = {"httpGet": {"path": HEALTH_PATH, **probe}, "periodSeconds": 2,
                                     "failureThreshold": 90, "timeoutSeconds": 3}
        container["livenessProbe"] = {"httpGet": {"path": HEALTH_PATH, **probe}, "periodSeconds": 10,
                                      "failureThreshold": 3, "timeoutSeconds": 3}
        container["readinessProbe"] = {"httpGet": {"path": READY_PATH, **probe}, "periodSeconds": 5,
                                       "failureThreshold": 2, "timeoutSeconds": 3}
        # let the Service drop this pod before SIGTERM, so no request arrives after the flush began
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": opts.grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID,
                            "fsGroup": APP_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if restart:
        spec["restartPolicy"] = restart
    if server:
        spec["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": _labels(opts, component)}}]
    return spec


def server_args(opts: K8sOptions) -> list[str]:
    return ["serve", "--host", "0.0.0.0", "--port", str(PORT), "--workers", str(opts.workers)]


def config_map(opts: K8sOptions) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(opts, opts.config_name, "config"),
            "data": config_data(opts)}


def server_resources(opts: K8sOptions) -> list[dict[str, Any]]:
    """Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget of the REST server."""
    labels = _labels(opts, "server")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(opts, opts.app, "server"),
        "spec": {  # no replicas: the HPA owns the count, and re-applying must not reset it
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                    "prometheus.io/path": METRICS_PATH}},
                "spec": _pod(opts, "server", server_args(opts), server=True),
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(opts, opts.app, "server"),
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(opts, opts.app, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": opts.app},
            "minReplicas": opts.min_replicas, "maxReplicas": opts.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": opts.cpu_target}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]},
                "scaleDown": {"stabilizationWindowSeconds": 300,
                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]},
            },
        },
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(opts, opts.app, "server"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }
    return [deployment, service, hpa, pdb]


def batch_cronjob(opts: K8sOptions, job: BatchJob) -> dict[str, Any]:
    env = [{"name": "SCORE_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": opts.secret, "key": job.db_key}}}]
    args = ["score", opts.model, "--from", job.query, "--to", job.table, "--db", "$(SCORE_DATABASE_URL)"]
    labels = _labels(opts, "batch")
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(opts, f"{opts.app}-score", "batch"),
        "spec": {
            "schedule": job.schedule, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {"backoffLimit": 2, "template": {
                "metadata": {"labels": labels},
                "spec": _pod(opts, "batch", args, extra_env=env, restart="Never")}}},
        },
    }


def stream_deployment(opts: K8sOptions, stream: StreamConsumer) -> dict[str, Any]:
    args = ["stream", opts.model, "--broker", stream.broker, "--in", stream.subject_in,
            "--out", stream.subject_out]
    labels = _labels(opts, "stream")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(opts, f"{opts.app}-stream", "stream"),
        "spec": {"replicas": stream.replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": _pod(opts, "stream", args)}},
    }


def workloads(opts: K8sOptions) -> list[dict[str, Any]]:
    docs = server_resources(opts)
    if opts.batch:
        docs.append(batch_cronjob(opts, opts.batch))
    if opts.stream:
        docs.append(stream_deployment(opts, opts.stream))
    return docs


def manifests(opts: K8sOptions) -> list[dict[str, Any]]:
    """Every resource of the plain format, ConfigMap first."""
    return [config_map(opts), *workloads(opts)]


def secret_example(opts: K8sOptions) -> dict[str, Any]:
    """The Secret the workloads reference, with placeholders: create the real one outside version control."""
    data = {"database-url": "postgresql://modelyard:CHANGE-ME@postgres:5432/modelyard",
            "admin-token": "CHANGE-ME"}
    if opts.batch:
        data[opts.batch.db_key] = "postgresql://reader:CHANGE-ME@warehouse:5432/analytics"
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(opts, opts.secret, "config"),
            "type": "Opaque", "stringData": data}


def _header(opts: K8sOptions, extra: str = "") -> str:
    return (f"Generated by `modelyard deploy k8s {opts.model}`. The Secret '{opts.secret}' is referenced,\n"
            f"not included: see secret.example.yaml.{extra}")


def render_plain(opts: K8sOptions) -> str:
    return dump_all(manifests(opts), header=_header(opts, " Apply: kubectl apply -f THIS-FILE"))


def write_plain(opts: K8sOptions, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    main, secret = out / f"{opts.app}.yaml", out / "secret.example.yaml"
    main.write_text(render_plain(opts))
    secret.write_text(dump_all([secret_example(opts)], header="A template: fill in and apply it once, "
                                                             "never commit the real values."))
    return [main, secret]


def write_kustomize(opts: K8sOptions, out: Path) -> list[Path]:
    """A kustomization: one file per resource, the ConfigMap from a generator (a change rolls the pods)."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for doc in workloads(opts):
        kind = doc["kind"].lower()
        stem = {"horizontalpodautoscaler": "hpa", "poddisruptionbudget": "pdb"}.get(kind, kind)
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        fname = f"{stem}.yaml" if component == "server" else f"{component}-{stem}.yaml"
        doc = {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "namespace"}}
        files[fname] = doc
    repo, tag, digest = split_image(opts.image)
    image: dict[str, str] = {"name": repo}
    if digest:
        image["digest"] = digest
    elif tag:
        image["newTag"] = tag
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        **({"namespace": opts.namespace} if opts.namespace else {}),
        "resources": list(files),
        "configMapGenerator": [{"name": opts.config_name,
                                "literals": [f"{k}={v}" for k, v in config_data(opts).items()],
                                "options": {"labels": {**_labels(opts, "config"),
                                                       "app.kubernetes.io/part-of": "modelyard"}}}],
        "images": [image],
    }
    written = []
    for fname, doc in files.items():
        (out / fname).write_text(dump(doc))
        written.append(out / fname)
    (out / "kustomization.yaml").write_text(
        "# Generated by `modelyard deploy k8s`. Render: kubectl kustomize . ; apply: kubectl apply -k .\n"
        + dump(kustomization))
    (out / "secret.example.yaml").write_text(dump_all([secret_example(opts)], header=(
        "Not listed in kustomization.yaml on purpose: fill in and apply it once, never commit real values.")))
    return [*written, out / "kustomization.yaml", out / "secret.example.yaml"]
