from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import DataSourceError, SpecError
from modelyard.pipeline import load_spec, train
from modelyard.pipeline.build import build_pipeline

GOOD = """
name = "m"
[data]
source = "d.csv"
target = "y"
[features]
numeric = ["x"]
[model]
estimator = "sklearn.linear_model.Ridge"
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(30)))
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_good_spec_loads_and_builds_one_pipeline(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    pipe = build_pipeline(spec)
    assert [name for name, _ in pipe.steps] == ["preprocess", "model"]
    assert spec.base_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD.replace("sklearn.linear_model.Ridge", "sklearn.linear_model.Nope"), "unknown estimator"),
        (GOOD.replace('name = "m"', 'name = "m"\n[broken'), "not valid TOML"),
        (GOOD.replace('target = "y"', ""), "data.target"),
        (GOOD + "\n[selection]\nmethod = 'magic'\n", "selection.method"),
        (GOOD.replace('numeric = ["x"]', 'numeric = ["x"]\ncategorical = ["x"]'), "listed twice"),
        (GOOD.replace("[model]", "[model]\nparams = { alpha_typo = 1 }"), "alpha_typo"),
    ],
)
def test_bad_spec_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        build_pipeline(load_spec(path))
    assert needle in err.value.message
    assert "\n" not in err.value.message


def test_unknown_column_and_missing_file_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('numeric = ["x"]', 'numeric = ["x", "z"]'))
    with pytest.raises(SpecError, match="'z' is not a column"):
        train(load_spec(path))
    path.write_text(GOOD.replace("d.csv", "missing.csv"))
    with pytest.raises(DataSourceError, match="does not exist"):
        train(load_spec(path))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
