from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from modelyard.bundle import MODEL_FILE, load_bundle, pack, verify_bundle, write_bundle
from modelyard.errors import IntegrityError
from tests.manifests import manifest_of


def _bundle(tmp_path: Path) -> Path:
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})
    model = LinearRegression().fit(X, [2.0, 4.0, 6.0, 8.0])
    directory = tmp_path / "b"
    write_bundle(directory, pipeline=model, manifest=manifest_of({"name": "lin"}), reference=X)
    return directory


def test_manifest_lists_the_checksum_of_every_file(tmp_path: Path) -> None:
    directory = _bundle(tmp_path)
    manifest = verify_bundle(directory)
    assert set(manifest.files) == {MODEL_FILE, "reference.parquet"}
    assert load_bundle(directory).pipeline_.predict(pd.DataFrame({"a": [5.0]}))[0] == pytest.approx(10.0)


@pytest.mark.parametrize("name", [MODEL_FILE, "reference.parquet"])
def test_one_flipped_byte_is_refused_and_named(tmp_path: Path, name: str) -> None:
    directory = _bundle(tmp_path)
    data = bytearray((directory / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (directory / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        load_bundle(directory)
    assert err.value.file == name and name in err.value.message


def test_a_changed_manifest_is_refused_against_the_registry_checksum(tmp_path: Path) -> None:
    directory = _bundle(tmp_path)
    with pytest.raises(IntegrityError) as err:
        verify_bundle(directory, expected_manifest_sha256="0" * 64)
    assert err.value.file == "manifest.json"


def test_pack_is_deterministic(tmp_path: Path) -> None:
    directory = _bundle(tmp_path)
    assert pack(directory) == pack(directory)
