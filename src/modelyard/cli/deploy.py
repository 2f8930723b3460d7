"""`modelyard deploy ...`: build contexts, Kubernetes manifests, CI pipelines, and the image's start step.

``deploy_app`` is a plain typer sub-app: another module adds a command with ``deploy_app.command("x")(fn)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from modelyard.bundle import MANIFEST, Manifest, verify_bundle
from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.config import Settings
from modelyard.deploy import (
    BatchJob,
    BundleLock,
    CIOptions,
    DeployError,
    K8sOptions,
    StreamConsumer,
    default_image,
    render_plain,
    render_script,
    render_workflow,
    write_context,
    write_kustomize,
    write_plain,
)
from modelyard.deploy.common import LOCK_PATH
from modelyard.errors import IntegrityError
from modelyard.registry import Registry, parse_ref

deploy_app = typer.Typer(rich_markup_mode=None, help="Containers, Kubernetes manifests and CI pipelines for a model.",
                         no_args_is_help=True)

SEED_EVENT = "deploy_seed"


@deploy_app.command("docker")
@friendly
def docker_cmd(
    ref: str = typer.Argument(..., metavar="NAME[@ALIAS|@VERSION]"),
    out: Path = typer.Option(..., "--out", help="Folder for the build context (created; must be empty)."),
    tag: str | None = typer.Option(None, "--tag", help="Image tag shown in the build command."),
    pull: bool = typer.Option(False, "--pull", help="Bake no bundle: pull REF from the registry at start."),
    modelyard_requirement: str | None = typer.Option(
        None, "--modelyard-requirement",
        help="Install modelyard from an index (e.g. 'modelyard==0.1.0') instead of copying this source."),
    base: str | None = typer.Option(None, "--base-image", help="Default: python:X.Y-slim of the manifest."),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out folder."),
) -> None:
    """Write a Docker build context: multi-stage Dockerfile, pinned requirements, the verified bundle."""
    registry = Registry(settings())
    record = registry.resolve(ref)
    name, selector = parse_ref(ref)
    alias = selector if isinstance(selector, str) else "production"
    pull_ref = ref if "@" in ref else f"{name}@{alias}"
    lock = BundleLock(name=name, ref=pull_ref if pull else f"{name}@{record.version}",
                      mode="pull" if pull else "baked", version=None if pull else record.version,
                      manifest_sha256=None if pull else record.manifest_sha256,
                      archive_sha256=None if pull else record.archive_sha256, alias=alias)
    tag = tag or default_image(name, None if pull else record.version)
    warnings = write_context(out, manifest=record.manifest, lock=lock,
                             bundle_dir=None if pull else registry.bundle_dir(record), tag=tag,
                             modelyard_requirement=modelyard_requirement, base=base, force=force)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    what = f"pulls {pull_ref} at start" if pull else f"bakes in {name} v{record.version} (checksums verified)"
    console.print(f"wrote the build context to {out}: the image {what}")
    console.print(f"build: docker build -t {tag} {out}")
    console.print(f"run:   docker run --rm -p 8000:8000 {tag}")


@deploy_app.command("k8s")
@friendly
def k8s_cmd(
    ref: str = typer.Argument(..., metavar="NAME[@ALIAS|@VERSION]"),
    out: Path | None = typer.Option(None, "--out", help="Folder for the files; else print plain YAML."),
    fmt: str = typer.Option("plain", "--format", help="plain (one multi-document file) or kustomize."),
    image: str | None = typer.Option(None, "--image", help="Default: the tag `deploy docker` suggests."),
    app: str | None = typer.Option(None, "--app", help="Kubernetes name (default: from the model name)."),
    namespace: str | None = typer.Option(None, "--namespace"),
    min_replicas: int = typer.Option(2, "--min-replicas"),
    max_replicas: int = typer.Option(10, "--max-replicas"),
    cpu_target: int = typer.Option(70, "--cpu-target", help="HPA target, % of the CPU request."),
    cpu: str = typer.Option("250m", "--cpu", help="CPU request."),
    cpu_limit: str = typer.Option("1", "--cpu-limit"),
    memory: str = typer.Option("512Mi", "--memory", help="Memory request."),
    memory_limit: str = typer.Option("1Gi", "--memory-limit"),
    workers: int = typer.Option(1, "--workers", help="Server worker processes per pod."),
    grace: int = typer.Option(45, "--grace-period", help="Seconds to finish requests and flush the log."),
    secret: str | None = typer.Option(None, "--secret", help="Secret with database-url and admin-token."),
    artifacts_claim: str | None = typer.Option(None, "--artifacts-claim",
                                               help="PVC holding the shared artifact store."),
    batch_schedule: str | None = typer.Option(None, "--batch-schedule", help="Cron for a scoring CronJob."),
    batch_from: str | None = typer.Option(None, "--batch-from", help="SQL query the CronJob scores."),
    batch_to: str | None = typer.Option(None, "--batch-to", help="Table the CronJob writes."),
    stream_broker: str | None = typer.Option(None, "--stream-broker", help="nats://... (stream consumers)."),
    stream_in: str | None = typer.Option(None, "--stream-in"),
    stream_out: str | None = typer.Option(None, "--stream-out"),
    stream_replicas: int = typer.Option(1, "--stream-replicas"),
) -> None:
    """Kubernetes manifests: probed Deployment, Service, HPA, PDB, ConfigMap; CronJob, stream on request."""
    name, _ = parse_ref(ref)
    if image is None:
        record = Registry(settings()).resolve(ref)
        image = default_image(name, record.version)
    batch_opts = [batch_schedule, batch_from, batch_to]
    if any(batch_opts) and not all(batch_opts):
        raise DeployError("a batch CronJob needs --batch-schedule, --batch-from and --batch-to together")
    stream_opts = [stream_broker, stream_in, stream_out]
    if any(stream_opts) and not all(stream_opts):
        raise DeployError("stream consumers need --stream-broker, --stream-in and --stream-out together")
    if fmt not in ("plain", "kustomize"):
        raise DeployError(f"--format is 'plain' or 'kustomize', not '{fmt}'")
    opts = K8sOptions(
        model=name, image=image, app=app or "", namespace=namespace, min_replicas=min_replicas,
        max_replicas=max_replicas, cpu_target=cpu_target, cpu_request=cpu, cpu_limit=cpu_limit,
        memory_request=memory, memory_limit=memory_limit, workers=workers, grace_seconds=grace,
        secret=secret or "", artifacts_claim=artifacts_claim,
        batch=BatchJob(batch_schedule, batch_from, batch_to) if all(batch_opts) else None,  # type: ignore[arg-type]
        stream=(StreamConsumer(stream_broker, stream_in, stream_out, stream_replicas)  # type: ignore[arg-type]
                if all(stream_opts) else None),
    )
    if out is None:
        if fmt == "kustomize":
            raise DeployError("--format kustomize writes several files: give --out DIR")
        sys.stdout.write(render_plain(opts))
        return
    files = write_kustomize(opts, out) if fmt == "kustomize" else write_plain(opts, out)
    for f in files:
        console.print(f"wrote {f}")
    apply = f"kubectl apply -k {out}" if fmt == "kustomize" else f"kubectl apply -f {files[0]}"
    console.print(f"create the Secret '{opts.secret}' (see {out / 'secret.example.yaml'}), then: {apply}")


@deploy_app.command("ci")
@friendly
def ci_cmd(
    out: Path = typer.Option(..., "--out", help="Project folder: writes .github/workflows/ and ci/."),
    spec: str = typer.Option("spec.toml", "--spec", help="The training spec, relative to the project."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: read from the spec)."),
    image: str | None = typer.Option(None, "--image", help="Image repository (ghcr.io/acme/house-prices)."),
    install: str = typer.Option("modelyard", "--install", help="What CI pip-installs to get modelyard."),
    python: str = typer.Option("3.11", "--python"),
    branch: str = typer.Option("main", "--branch", help="Branch whose pushes run the pipeline."),
    canary_weight: float = typer.Option(0.1, "--canary-weight"),
) -> None:
    """A GitHub Actions workflow and a plain shell script: train, gates, publish, image, canary."""
    if name is None:
        spec_path = out / spec
        if not spec_path.exists():
            raise DeployError(f"no spec at {spec_path} to read the model name from: pass --name or --spec")
        from modelyard.pipeline import load_spec

        name = load_spec(spec_path).name
    opts = CIOptions(model=name, spec=spec, image=image or "", install=install, python=python, branch=branch,
                     canary_weight=canary_weight)
    wf = out / ".github" / "workflows" / "modelyard.yml"
    script = out / "ci" / "modelyard-pipeline.sh"
    wf.parent.mkdir(parents=True, exist_ok=True)
    script.parent.mkdir(parents=True, exist_ok=True)
    wf.write_text(render_workflow(opts))
    script.write_text(render_script(opts))
    script.chmod(0o755)
    console.print(f"wrote {wf} and {script} for model {name}")


def _verify_exact(bundle: Path, manifest_sha256: str | None) -> Manifest:
    """verify_bundle, and also refuse files the manifest does not list (they would ride along on publish)."""
    manifest = verify_bundle(bundle, manifest_sha256)
    extra = sorted(p.name for p in bundle.iterdir() if p.name != MANIFEST and p.name not in manifest.files)
    if extra:
        raise IntegrityError(f"{bundle} holds files its manifest does not list: {', '.join(extra)}",
                             file=extra[0])
    return manifest


@deploy_app.command("verify-bundle")
@friendly
def verify_cmd(
    bundle: Path = typer.Argument(..., help="An unpacked bundle folder."),
    lock: Path | None = typer.Option(None, "--lock", help="bundle.lock.json (expected manifest hash)."),
    manifest_sha256: str | None = typer.Option(None, "--manifest-sha256"),
) -> None:
    """Check every file of a bundle against its manifest (and the manifest against the recorded hash)."""
    expected = manifest_sha256 or (BundleLock.read(lock).manifest_sha256 if lock else None)
    manifest = _verify_exact(bundle, expected)
    pinned = f", manifest sha256 {expected[:16]}..." if expected else " (manifest hash not pinned)"
    console.print(f"ok: {manifest.name} v{manifest.version}, "
                  f"{len(manifest.files)} files match{pinned}")


def _seed(bundle: Path, lock: BundleLock, s: Settings) -> str:
    """Publish the baked bundle into the embedded registry once, pointing the lock's alias at it."""
    registry = Registry(s)
    for e in registry.events(lock.name, limit=1000):
        if e.kind == SEED_EVENT and (e.details or {}).get("manifest_sha256") == lock.manifest_sha256:
            return f"the embedded registry already serves it as version {(e.details or {}).get('version')}"
    reason = f"baked image of {lock.name} v{lock.version} (manifest sha256 {lock.manifest_sha256})"
    version = registry.publish(bundle, name=lock.name, alias=lock.alias, reason=reason)
    registry.record_event(lock.name, SEED_EVENT, alias=lock.alias, reason=reason, details={
        "manifest_sha256": lock.manifest_sha256, "source_version": lock.version, "version": version})
    return f"published into the embedded registry as version {version}@{lock.alias}"


@deploy_app.command("start")
@friendly
def start_cmd(
    command: list[str] | None = typer.Argument(None, help="The modelyard command to run afterwards."),
    lock: Path = typer.Option(Path(LOCK_PATH), "--lock", help="The image's bundle.lock.json."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Default: bundle/ next to the lock file."),
) -> None:
    """The container's start step: verify (or pull and verify) the bundle, then exec `modelyard COMMAND`."""
    spec = BundleLock.read(lock)
    s = settings()
    if spec.mode == "baked":
        folder = bundle or lock.parent / "bundle"
        manifest = _verify_exact(folder, spec.manifest_sha256)
        err_console.print(f"verified {spec.name} v{spec.version}: {len(manifest.files)} files match "
                          f"manifest sha256 {str(spec.manifest_sha256)[:16]}...", highlight=False)
        if s.database_url:
            err_console.print("a shared registry is configured (MODELYARD_DATABASE_URL): it is what "
                              "gets served", highlight=False)
        else:
            err_console.print(_seed(folder, spec, s), highlight=False)
    else:
        registry = Registry(s)
        record = registry.resolve(spec.ref)
        registry.bundle_dir(record)  # fetches, unpacks and verifies: fail before serving anything
        err_console.print(f"pulled and verified {spec.ref} (version {record.version})", highlight=False)
    if command:
        sys.stdout.flush()
        sys.stderr.flush()
        # exec, not a child: the server is PID 1's direct successor and receives SIGTERM itself
        os.execv(sys.executable, [sys.executable, "-m", "modelyard", *command])
