"""The training spec: one TOML file names the data, the features, the preprocessing, the estimator.

Every field is checked here, before any data is read, so a bad spec costs one clear line and leaves
nothing behind in the registry.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelyard.durations import parse_duration
from modelyard.errors import ModelyardError, SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    source: str = Field(description="A CSV or Parquet path (relative to the spec), or a SQLAlchemy URL.")
    query: str | None = Field(default=None, description="SQL to run when source is a database URL; it may "
                              "hold {window_start} / {window_end}, bound as parameters (never formatted in).")
    target: str
    window: str | None = Field(default=None, description="The moving window a windowed query reads when "
                               "none is given (`modelyard retrain --window`), e.g. 30d.")

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value, what="data.window")
            except ModelyardError as exc:
                raise ValueError(exc.message) from None
        return value


class FeaturesSpec(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)


class PreprocessingSpec(_Strict):
    numeric_imputer: Literal["mean", "median", "most_frequent", "constant"] = "median"
    scaler: Literal["standard", "robust", "minmax", "none"] = "standard"
    categorical_imputer: Literal["most_frequent", "constant"] = "constant"
    one_hot_min_frequency: int | float | None = None
    max_categories: int | None = None


class SelectionSpec(_Strict):
    method: Literal["none", "k_best", "variance", "from_model"] = "none"
    k: int | None = None
    threshold: float | None = None


class ModelSpec(_Strict):
    estimator: str = Field(description="Import path, e.g. sklearn.ensemble.RandomForestRegressor.")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _importable(cls, value: str) -> str:
        resolve_estimator(value)
        return value


class TrainingSpec(_Strict):
    """How the estimator learns: ``batch`` (``fit`` on [data]) or ``online`` (``partial_fit`` on labelled events
    from a stream, ``modelyard learn``; see pipeline/online.py)."""

    mode: Literal["batch", "online"] = "batch"
    warmup: int = Field(default=1000, ge=1, description="Online: events the preprocessing is fitted on first.")
    batch_size: int = Field(default=1000, ge=1, description="Online: events per partial_fit call.")
    publish_every: int | None = Field(default=10_000, ge=1, description="Online: a version every N events.")
    publish_minutes: float | None = Field(default=None, gt=0, description="Online: ... or every T minutes.")
    holdout_every: int = Field(default=10, ge=2, description="Online: events whose stream sequence is a "
                               "multiple of this are held out (never learnt): the version's metrics.")
    holdout_rows: int = Field(default=2000, ge=2, description="Online: held-out events kept per version.")
    preprocessing: Literal["frozen", "incremental"] = Field(
        default="frozen", description="Online: frozen after the warm-up, or scalers with partial_fit keep "
        "learning.")
    classes: list[Any] | None = Field(default=None, description="Online classifiers: every label.")
    fast_path: bool = True
    importance: bool = True


class SplitSpec(_Strict):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    stratify: bool = False


class SchemaSpec(_Strict):
    unseen_categories: Literal["allow", "reject"] = "allow"


class BudgetSpec(_Strict):
    """What one fit may use; a fit over either bound is stopped (``BudgetExceededError``)."""

    max_seconds: float | None = Field(default=None, gt=0)
    max_memory_mb: float | None = Field(default=None, gt=0)

    @property
    def limited(self) -> bool:
        return self.max_seconds is not None or self.max_memory_mb is not None


class TrainSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 42
    description: str | None = None
    data: DataSpec
    features: FeaturesSpec
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    model: ModelSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    metrics: list[str] = Field(default_factory=list)
    schema_: SchemaSpec = Field(default_factory=SchemaSpec, alias="schema")
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    base_dir: Path | None = Field(default=None, exclude=True)

    @property
    def feature_names(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude={"base_dir"})


def resolve_estimator(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise SpecError(f"estimator '{path}' is not an import path like sklearn.linear_model.Ridge")
    try:
        module = importlib.import_module(module_name)
        estimator: type = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"unknown estimator '{path}': {exc}") from exc
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise SpecError(f"'{path}' is not an estimator: it has no fit/predict")
    return estimator


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    ctx = first.get("ctx", {}).get("error")
    if isinstance(ctx, SpecError):
        msg = ctx.message
    return f"{where}: {msg}"


def parse_spec(data: dict[str, Any], *, base_dir: Path | None = None, origin: str = "spec") -> TrainSpec:
    try:
        spec = TrainSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{origin}: {_explain(exc)}") from None
    spec.base_dir = base_dir
    if not spec.feature_names:
        raise SpecError(f"{origin}: features: name at least one numeric or categorical feature")
    dupes = {f for f in spec.feature_names if spec.feature_names.count(f) > 1}
    if dupes:
        raise SpecError(f"{origin}: features: {sorted(dupes)} listed twice")
    if spec.data.target in spec.feature_names:
        raise SpecError(f"{origin}: the target '{spec.data.target}' is also listed as a feature")
    if spec.training.mode == "online" and not hasattr(resolve_estimator(spec.model.estimator), "partial_fit"):
        raise SpecError(f"{origin}: training.mode = 'online' needs an estimator with partial_fit (SGDRegressor, "
                        f"SGDClassifier, a naive Bayes, PassiveAggressive*, MiniBatchKMeans); "
                        f"{spec.model.estimator} has none")
    return spec


def load_spec(path: str | Path) -> TrainSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, base_dir=path.parent.resolve(), origin=str(path))
