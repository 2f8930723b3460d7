"""The typed manifest: bundles of older formats still load, newer ones are refused, round trips are exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelyard.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    PREDICTION_COLUMN,
    CategoricalProfile,
    Manifest,
    NumericProfile,
    load_bundle,
    read_manifest,
    verify_bundle,
    write_manifest,
)
from modelyard.errors import BundleError
from modelyard.runtime import Model

DATA = Path(__file__).parent / "data"
FORMAT1 = DATA / "bundle_format1"


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    """A copy of the format-1 bundle written by modelyard before the typed manifest."""
    return Path(shutil.copytree(FORMAT1, tmp_path / "bundle"))


def test_the_fixture_is_a_format_1_bundle_written_by_the_old_code() -> None:
    raw = json.loads((FORMAT1 / MANIFEST).read_text())
    assert raw["format_version"] == 1 and "global_importance" not in raw and "training_cost" not in raw


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_format_1_bundle_loads_and_predicts_what_it_predicted_when_published(
    old_bundle: Path, fast_path: bool
) -> None:
    bundle = load_bundle(old_bundle)
    manifest = bundle.manifest
    assert (manifest.format_version, manifest.name, manifest.task) == (1, "house-prices", "regression")
    assert manifest.global_importance is None and manifest.training_cost is None
    assert manifest.lineage.data is not None and len(manifest.lineage.data.sha256 or "") == 64
    assert manifest.lineage.environment is not None and "scikit-learn" in manifest.lineage.environment.packages
    assert isinstance(manifest.reference and manifest.reference.inputs["area_sqm"], NumericProfile)
    assert isinstance(manifest.reference and manifest.reference.inputs["neighborhood"], CategoricalProfile)
    model = Model.load(bundle, fast_path=fast_path)
    assert model.fast_path == ("onnx" if fast_path else "sklearn")
    reference = bundle.reference()
    np.testing.assert_allclose(model.predict(bundle.reference_inputs()), reference[PREDICTION_COLUMN],
                               rtol=1e-9)


def test_a_manifest_without_format_version_counts_as_format_1(old_bundle: Path) -> None:
    raw = json.loads((old_bundle / MANIFEST).read_text())
    del raw["format_version"]
    (old_bundle / MANIFEST).write_text(json.dumps(raw))
    assert verify_bundle(old_bundle).format_version == 1
    assert Model(load_bundle(old_bundle)).predict(load_bundle(old_bundle).reference_inputs()).shape == (48,)


def test_the_manifest_an_old_registry_stored_on_publish_still_parses() -> None:
    raw = json.loads((DATA / "manifest_format1_published.json").read_text())
    manifest = Manifest.from_dict(raw)
    assert (manifest.version, manifest.published_by) == (1, raw["published_by"])
    assert manifest.serves_onnx and manifest.fast_path is not None and manifest.fast_path.max_abs_diff == 0.0


def test_a_rewritten_manifest_is_format_2_and_round_trips_exactly(old_bundle: Path) -> None:
    old = read_manifest(old_bundle)
    new = write_manifest(old_bundle, old)
    assert new.format_version == FORMAT_VERSION == 2
    again = read_manifest(old_bundle)
    assert again == new and Manifest.from_dict(again.to_dict()) == again
    assert again.model_dump(exclude={"format_version"}) == old.model_dump(exclude={"format_version"})
    load_bundle(old_bundle)  # the files it lists still match


def test_unknown_keys_are_kept_as_they_were_through_a_rewrite(old_bundle: Path) -> None:
    raw = json.loads((old_bundle / MANIFEST).read_text())
    raw["team"] = {"owner": "pricing"}
    raw["lineage"]["ticket"] = "PRICE-12"
    raw["reference"]["inputs"]["area_sqm"]["note"] = "sq m"
    (old_bundle / MANIFEST).write_text(json.dumps(raw))
    write_manifest(old_bundle, read_manifest(old_bundle))
    written = json.loads((old_bundle / MANIFEST).read_text())
    assert written["team"] == {"owner": "pricing"} and written["lineage"]["ticket"] == "PRICE-12"
    assert written["reference"]["inputs"]["area_sqm"]["note"] == "sq m"


def test_new_optional_fields_round_trip(old_bundle: Path) -> None:
    manifest = read_manifest(old_bundle).model_copy(update={
        "global_importance": {"area_sqm": 0.7, "bedrooms": 0.3}})
    manifest = Manifest.from_dict({**manifest.to_dict(), "training_cost": {
        "wall_seconds": 1.5, "cpu_seconds": 2.0, "peak_memory_mb": 310.2}})
    write_manifest(old_bundle, manifest)
    back = read_manifest(old_bundle)
    assert back.global_importance == {"area_sqm": 0.7, "bedrooms": 0.3}
    assert back.training_cost is not None and back.training_cost.peak_memory_mb == 310.2


def test_a_newer_format_is_refused_with_a_clear_error(old_bundle: Path) -> None:
    raw = json.loads((old_bundle / MANIFEST).read_text())
    raw.update(format_version=FORMAT_VERSION + 1, modelyard_version="9.0.0")
    (old_bundle / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError) as err:
        load_bundle(old_bundle)
    assert err.value.context["file"] == MANIFEST
    assert f"bundle format {FORMAT_VERSION + 1}, written by 9.0.0" in err.value.message
    assert f"reads formats 1 to {FORMAT_VERSION}: upgrade modelyard" in err.value.message
    with pytest.raises(BundleError, match="upgrade modelyard"):
        Manifest.from_dict(raw)


@pytest.mark.parametrize("bad", [0, "2", None, True])
def test_a_format_version_that_is_not_a_positive_integer_is_refused(bad: object) -> None:
    raw = json.loads((FORMAT1 / MANIFEST).read_text())
    with pytest.raises(BundleError, match="format_version"):
        Manifest.from_dict({**raw, "format_version": bad})


def test_a_manifest_missing_a_required_section_names_it() -> None:
    raw = json.loads((FORMAT1 / MANIFEST).read_text())
    del raw["input_schema"]
    with pytest.raises(BundleError, match="input_schema"):
        Manifest.from_dict(raw)
