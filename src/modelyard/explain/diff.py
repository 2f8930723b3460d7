"""A differential explanation: the same row through two versions, column by column.

The change of the answer splits exactly into the change of the base value plus the change of every
column's attribution, so the columns with the largest |change| are the ones that changed the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard.explain.result import OutputExplanation, RowExplanation

CHANGED_SHARE = 0.8  # the columns that together account for this share of the total |change|


@dataclass
class ColumnChange:
    column: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class ExplanationDiff:
    before: RowExplanation
    after: RowExplanation
    label: Any
    columns: list[ColumnChange]  # largest |delta| first

    @property
    def comparable(self) -> bool:
        return self.before.space == self.after.space

    def _outputs(self) -> tuple[OutputExplanation, OutputExplanation]:
        return _output(self.before, self.label), _output(self.after, self.label)

    @property
    def changed(self) -> list[str]:
        """The columns that changed the answer: the fewest, largest changes covering ``CHANGED_SHARE``."""
        total = sum(abs(c.delta) for c in self.columns)
        out: list[str] = []
        covered = 0.0
        for c in self.columns:
            if total <= 0 or covered >= CHANGED_SHARE * total:
                break
            out.append(c.column)
            covered += abs(c.delta)
        return out

    def to_json(self) -> dict[str, Any]:
        a, b = self._outputs()
        return {
            "label": self.label,
            "space": {"before": self.before.space, "after": self.after.space},
            "comparable": self.comparable,
            "before": {"version": self.before.version, "prediction": self.before.prediction,
                       "explainer": self.before.explainer, "base_value": a.base_value, "value": a.value},
            "after": {"version": self.after.version, "prediction": self.after.prediction,
                      "explainer": self.after.explainer, "base_value": b.base_value, "value": b.value},
            "value_change": b.value - a.value,
            "base_value_change": b.base_value - a.base_value,
            "changed_columns": self.changed,
            "columns": [{"column": c.column, "before": c.before, "after": c.after, "change": c.delta}
                        for c in self.columns],
        }


def _output(row: RowExplanation, label: Any) -> OutputExplanation:
    return next((o for o in row.outputs if o.label == label), row.primary)


def diff(before: RowExplanation, after: RowExplanation) -> ExplanationDiff:
    """Compare the explanation of one row by two versions (for classifiers: the class ``before`` predicted)."""
    label = before.primary.label
    a, b = _output(before, label), _output(after, label)
    names = list(dict.fromkeys([*a.attributions, *b.attributions]))
    columns = [ColumnChange(c, a.attributions.get(c, 0.0), b.attributions.get(c, 0.0)) for c in names]
    columns.sort(key=lambda c: -abs(c.delta))
    return ExplanationDiff(before, after, label, columns)
