"""The issue's yardstick: 100k rows PostgreSQL → PostgreSQL, every key once, values as in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelyard
from modelyard.batch import score
from modelyard.config import Settings
from tests.batchstream_helpers import house_bundle_once, houses_input, publish, read_sql, write_table


@pytest.fixture(scope="session")
def house_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_bundle_once(tmp_path_factory)


@pytest.mark.postgres
@pytest.mark.slow
def test_100k_rows_postgres_to_postgres_every_key_once_equal_to_in_process(house_bundle: Path,
                                                                            pg_settings: Settings) -> None:
    publish(house_bundle, pg_settings)
    url = pg_settings.resolved_database_url
    frame = houses_input(100_000, seed=21)
    write_table(url, "houses_100k", frame)
    result = score("house-prices", source="SELECT * FROM houses_100k", target="scores_100k",
                   settings=pg_settings, key="id", chunk_size=10_000)
    assert (result.rows_scored, result.rows_rejected, result.row_count) == (100_000, 0, 100_000)
    out = read_sql(url, "SELECT id, prediction, version FROM scores_100k ORDER BY id")
    assert out["id"].tolist() == frame["id"].tolist()  # every key, once, nothing else
    expected = modelyard.load("house-prices", settings=pg_settings).predict(frame.drop(columns=["id"]))
    np.testing.assert_allclose(out["prediction"].to_numpy(), expected, rtol=1e-9)
    assert set(out["version"]) == {1}
