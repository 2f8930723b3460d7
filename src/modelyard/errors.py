"""One exception root, each class carrying its context and an HTTP status.

The server maps any ``ModelyardError`` to ``{"error": {"code", "message", "field", "row"}}`` in one place.

    ModelyardError
    ├── ConfigError
    ├── SpecError                  a training spec that cannot be used
    ├── DataSourceError            data that cannot be read
    ├── SchemaError                input that does not fit the model's schema (422)
    ├── BundleError
    │   └── IntegrityError         a checksum mismatch: the artifact is refused
    ├── NotFoundError (404)
    │   ├── ModelNotFoundError
    │   └── VersionNotFoundError
    ├── RegistryError
    ├── LineageMismatchError       reproduce found different data or predictions
    ├── RolloutError (409)         a promotion or rollback that cannot be done as asked
    │   └── GateFailedError        a candidate failed a promotion gate (the reasons are in the message)
    ├── PredictionError            the model itself failed on valid input
    └── ExplainError               an explanation that cannot be computed or does not add up
        └── ExplainerUnavailableError   the optional ``shap`` package is not installed (501)
"""

from __future__ import annotations

from typing import Any


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose."""

    status_code: int = 500
    code: str = "modelyard_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update({k: v for k, v in self.context.items() if v is not None})
        return body


class ConfigError(ModelyardError):
    status_code = 500
    code = "config_error"


class SpecError(ModelyardError):
    status_code = 400
    code = "spec_error"


class DataSourceError(ModelyardError):
    status_code = 400
    code = "data_source_error"


class SchemaError(ModelyardError):
    """Input rows that do not fit the schema; ``field`` and ``row`` say where."""

    status_code = 422
    code = "schema_error"

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message, field=field, row=row)
        self.field = field
        self.row = row


class BadRequestError(ModelyardError):
    status_code = 400
    code = "bad_request"


class BundleError(ModelyardError):
    status_code = 500
    code = "bundle_error"


class IntegrityError(BundleError):
    """A file whose SHA-256 differs from the record: never loaded (pickle would run its code)."""

    code = "integrity_error"

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message, file=file)
        self.file = file


class NotFoundError(ModelyardError):
    status_code = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class VersionNotFoundError(NotFoundError):
    code = "version_not_found"


class RegistryError(ModelyardError):
    status_code = 500
    code = "registry_error"


class LineageMismatchError(ModelyardError):
    status_code = 409
    code = "lineage_mismatch"


class RolloutError(ModelyardError):
    status_code = 409
    code = "rollout_error"


class GateFailedError(RolloutError):
    code = "gate_failed"

    def __init__(self, message: str, *, reasons: list[str] | None = None, model: str | None = None) -> None:
        super().__init__(message, model=model)
        self.reasons = reasons or []


class PredictionError(ModelyardError):
    status_code = 500
    code = "prediction_error"


class PayloadTooLargeError(ModelyardError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailableError(ModelyardError):
    status_code = 503
    code = "unavailable"


class BatchError(ModelyardError):
    """A batch run that cannot go on: a bad source, an output table of another shape, a key used twice."""

    status_code = 400
    code = "batch_error"


class RunBusyError(BatchError):
    """Another process holds this run id right now: leave its record alone."""

    status_code = 409
    code = "run_busy"


class StreamError(ModelyardError):
    """A broker that cannot be reached or used as configured."""

    status_code = 503
    code = "stream_error"


class ExplainError(ModelyardError):
    """An explanation that cannot be computed, or whose attributions do not add up to the prediction."""

    status_code = 500
    code = "explain_error"


class ExplainerUnavailableError(ExplainError):
    """Explanations need the optional ``shap`` package (``pip install 'modelyard[explain]'``)."""

    status_code = 501
    code = "explainer_unavailable"
