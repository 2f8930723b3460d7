"""One exception root, each class carrying its context and an HTTP status.

The server maps any ``ModelyardError`` to ``{"error": {"code", "message", "field", "row"}}`` in one place.

    ModelyardError
    ├── ConfigError
    ├── SpecError                  a training spec that cannot be used
    ├── DataSourceError            data that cannot be read
    ├── BudgetExceededError        a fit ran over the spec's [budget] (seconds or memory) and was stopped
    ├── SchemaError                input that does not fit the model's schema (422), with every
    │                              ``SchemaProblem`` (row, field, reason) found
    ├── BundleError
    │   └── IntegrityError         a checksum mismatch: the artifact is refused
    ├── BadRequestError (400)
    │   └── OutcomeError (422)     an outcome whose value is of the wrong type for the model
    ├── NotFoundError (404)
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   └── UnknownRequestError    an outcome naming a request id (or entity key) nothing logged
    ├── RegistryError
    ├── ServiceUnavailableError (503)
    │   └── StoreUnavailable       the registry database cannot be reached
    ├── LineageMismatchError       reproduce found different data or predictions
    ├── RolloutError (409)         a promotion or rollback that cannot be done as asked
    │   └── GateFailedError        a candidate failed a promotion gate (the reasons are in the message)
    ├── PredictionError            the model itself failed on valid input
    ├── ServiceUnavailableError (503)
    │   └── LogUnavailableError    the prediction log cannot be written: refused, with Retry-After
    └── ExplainError               an explanation that cannot be computed or does not add up
        └── ExplainerUnavailableError   the optional ``shap`` package is not installed (501)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal


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


class BudgetExceededError(ModelyardError):
    """A fit went over the spec's ``[budget]``; ``limit`` names it (``max_seconds`` or ``max_memory_mb``),
    ``used`` is what the fit had used when it was stopped, ``allowed`` the bound."""

    status_code = 422
    code = "budget_exceeded"

    def __init__(self, message: str, *, limit: str, used: float, allowed: float,
                 model: str | None = None) -> None:
        super().__init__(message, limit=limit, used=used, allowed=allowed, model=model)
        self.limit = limit
        self.used = used
        self.allowed = allowed


@dataclass(frozen=True)
class SchemaProblem:
    """One reason input does not fit the schema: where (``row``, ``field``) and why (``reason``).

    ``scope`` says how the problem reads: ``"value"`` (the value of column ``field`` in ``row`` is wrong),
    ``"row"`` (the row itself is: not an object, a column missing) or ``"request"`` (no single row's).
    """

    reason: str
    field: str | None = None
    row: int | None = None
    scope: Literal["value", "row", "request"] = "request"

    @property
    def message(self) -> str:
        """``column 'area' row 3: 'big' is not a number``, ``row 3 is missing column 'area'``, ..."""
        return self.describe()

    def describe(self, subject: str | None = None) -> str:
        """The problem as a sentence; with ``subject`` (say ``"the message"``) it names no row number."""
        row = None if subject is not None else self.row
        if self.scope == "value" and self.field is not None:
            return f"column '{self.field}'{'' if row is None else f' row {row}'}: {self.reason}"
        if self.scope == "row":
            if row is not None:
                return f"row {row} is {self.reason}"
            if subject is not None:
                return f"{subject} is {self.reason}"
        return self.reason

    def at_row(self, row: int | None) -> SchemaProblem:
        """The same problem numbered as ``row`` (a chunk's row 3 is row 1003 of the whole input)."""
        return replace(self, row=row)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason}


class SchemaError(ModelyardError):
    """Input rows that do not fit the schema: every ``problem`` found, each with its row, field and reason.

    ``field`` and ``row`` are the first problem's; the message is built from the problems. Raised with only
    a message (``SchemaError("...", field="instances")``) it holds one problem of request scope.
    """

    status_code = 422
    code = "schema_error"

    def __init__(self, message: str | None = None, *, field: str | None = None, row: int | None = None,
                 problems: Sequence[SchemaProblem] | None = None) -> None:
        found = list(problems or ())
        if not found:
            found = [SchemaProblem(message or "the input does not fit the schema", field, row, "request")]
        first = found[0]
        super().__init__(message or _summary(found), field=first.field, row=first.row)
        self.problems: list[SchemaProblem] = found
        self.field = first.field
        self.row = first.row

    def problems_at(self, row: int | None) -> list[SchemaProblem]:
        """The problems of one row (every problem when ``row`` is None)."""
        return [p for p in self.problems if row is None or p.row == row]


def _summary(problems: Sequence[SchemaProblem], shown: int = 3) -> str:
    first, rest = problems[0].message, problems[1:]
    if not rest:
        return first
    more = "; ".join(p.message for p in rest[: shown - 1])
    tail = f"; and {len(rest) - (shown - 1)} more" if len(rest) > shown - 1 else ""
    return f"{first} (and {len(rest)} more problem{'s' if len(rest) > 1 else ''}: {more}{tail})"


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


class OutcomeError(BadRequestError):
    status_code = 422
    code = "invalid_outcome"


class NotFoundError(ModelyardError):
    status_code = 404
    code = "not_found"


class UnknownRequestError(NotFoundError):
    code = "unknown_request"


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


class StoreUnavailable(ServiceUnavailableError):
    """The registry's database cannot be reached or used right now (raised by ``registry`` in place of the
    database driver's errors): retry shortly. The driver's error is its ``__cause__``."""
class LogUnavailableError(ServiceUnavailableError):
    """The prediction log cannot be written (segment folder full or unwritable): the request is refused
    rather than answered unlogged. ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    code = "prediction_log_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **context: Any) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


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
