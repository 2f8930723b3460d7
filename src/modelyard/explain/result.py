"""What an explanation says: per output (a class, or the regression value), a base value and one
attribution per input column that add up to the model's output, and how closely they did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPACES = {
    "raw": "the model's own output (the predicted value)",
    "probability": "predicted probability of the class",
    "log_odds": "log-odds of the class (log(p / (1 - p)))",
    "margin": "raw margin of the class before the softmax (log-odds up to a constant)",
}


@dataclass
class OutputExplanation:
    """Attributions for one output: ``base_value + sum(attributions) == value`` within ``tolerance``."""

    label: Any
    base_value: float
    value: float
    attributions: dict[str, float]
    max_abs_error: float
    tolerance: float

    @property
    def additive(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def ranked(self) -> list[tuple[str, float]]:
        """(column, contribution), largest |contribution| first; ties keep the schema's order."""
        return sorted(self.attributions.items(), key=lambda kv: -abs(kv[1]))

    def to_json(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "label": self.label,
            "base_value": self.base_value,
            "value": self.value,
            "additivity": {"max_abs_error": self.max_abs_error, "tolerance": self.tolerance,
                           "passed": self.additive},
            "attributions": [{"column": c, "input": inputs.get(c), "contribution": v} for c, v in self.ranked()],
        }


@dataclass
class RowExplanation:
    """One row: the prediction and, for classifiers, one ``OutputExplanation`` per class, predicted first."""

    model: str
    version: int | None
    row: int
    inputs: dict[str, Any]
    prediction: Any
    explainer: str
    explainer_detail: str
    space: str
    outputs: list[OutputExplanation] = field(default_factory=list)
    probabilities: dict[str, float] | None = None

    @property
    def additive(self) -> bool:
        return all(o.additive for o in self.outputs)

    @property
    def primary(self) -> OutputExplanation:
        return self.outputs[0]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": {"name": self.model, "version": self.version},
            "row": self.row,
            "prediction": self.prediction,
            "explainer": self.explainer,
            "explainer_detail": self.explainer_detail,
            "space": self.space,
            "space_meaning": SPACES.get(self.space, self.space),
            "additive": self.additive,
            "inputs": self.inputs,
            "outputs": [o.to_json(self.inputs) for o in self.outputs],
        }
        if self.probabilities is not None:
            body["probabilities"] = self.probabilities
        return body
