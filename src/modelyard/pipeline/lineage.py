"""What a model was made from: the code, the packages and the interpreter (and, for an online version, the
stream range it learnt), as a manifest section."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from modelyard.bundle import Environment, GitState, Lineage

CORE_PACKAGES = ("modelyard", "scikit-learn", "numpy", "pandas", "scipy", "joblib", "pyarrow")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in (*CORE_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


_KNOWN_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def distribution_of(module_path: str) -> str | None:
    """The installed distribution that provides ``module_path``'s top-level package, or None."""
    root = module_path.split(".", 1)[0]
    if root in _KNOWN_DISTRIBUTIONS:
        return _KNOWN_DISTRIBUTIONS[root]
    try:  # most packages are distributed under their import name (xgboost, lightgbm, ...)
        return metadata.distribution(root).metadata["Name"] or root
    except metadata.PackageNotFoundError:
        dists = _packages_distributions().get(root)  # the slow scan of every installed distribution
        return dists[0] if dists else None


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def git_state(directory: Path | None) -> GitState | None:
    cwd = str(directory or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return GitState(commit=commit, dirty=bool(dirty))


def environment(estimator_path: str | None = None) -> Environment:
    extra: tuple[str, ...] = ()
    if estimator_path:
        dist = distribution_of(estimator_path)
        if dist:
            extra = (dist,)
    return Environment(
        python=sys.version.split()[0],
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        packages=package_versions(extra),
    )


class StreamLineage(BaseModel):
    """What an online version learnt from: the exact range of one JetStream subject, and how it was split.

    Stored in the manifest's lineage under ``stream`` (lineage sections keep keys they do not type), so
    ``modelyard reproduce`` replays ``first_seq``..``last_seq`` of ``subject`` on top of ``parent_version``.
    ``messages`` = ``learnt`` + ``held_out`` + ``dead_lettered``: the counts of the range, each event once.
    """

    model_config = ConfigDict(extra="allow")

    broker: str
    stream: str
    subject: str
    consumer: str
    first_seq: int
    last_seq: int
    messages: int
    learnt: int
    held_out: int
    dead_lettered: int
    parent_version: int | None = None
    dead_letter_subject: str | None = None


def stream_lineage(lineage: Lineage) -> StreamLineage | None:
    """The stream range of an online version, None for a batch-trained one."""
    raw = (lineage.model_extra or {}).get("stream")
    return StreamLineage.model_validate(raw) if raw is not None else None
