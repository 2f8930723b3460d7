"""Property-based runs against a real server on PostgreSQL: whatever a client sends, never a 5xx.

hypothesis sends complete rows with arbitrary JSON values to the model itself. (schemathesis, with every
check and its stateful phase, runs from the server's own OpenAPI document in test_serve_schemathesis.py.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.config import Settings
from tests.integration.serving import fresh_pg_database
from tests.support import Server, served_model

pytestmark = pytest.mark.postgres
RELAXED = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve_openapi")
    with fresh_pg_database() as url:
        settings_ = Settings(home=folder / ".modelyard", database_url=url)
        with served_model(folder, settings_, MODELYARD_MAX_BODY_BYTES="100000") as running:
            yield running


HOUSE_COLUMNS = ["area_sqm", "bedrooms", "bathrooms", "year_built", "year_renovated", "lot_sqm",
                 "garage_spaces", "floors", "distance_center_km", "school_rating", "crime_index",
                 "neighborhood", "house_type", "condition", "heating", "has_pool"]
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["Harbor", "detached", "good", "gas", "no", "1e308", "NaN", "-0", " 12 "]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
ROWS = st.lists(st.fixed_dictionaries({c: ANY_VALUE for c in HOUSE_COLUMNS}), min_size=1, max_size=4)


def test_arbitrary_values_in_complete_rows_get_an_answer_or_a_422(server: Server) -> None:
    statuses: set[int] = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(rows=ROWS, protocol=st.sampled_from(["v1", "v2"]))
        def check(rows: list[dict[str, Any]], protocol: str) -> None:
            if protocol == "v1":
                r = client.post("/v1/models/house-prices/predict", json={"instances": rows})
            else:
                r = client.post("/v2/models/house-prices/infer", json={"inputs": [
                    {"name": c, "shape": [len(rows)], "datatype": "BYTES", "data": [row[c] for row in rows]}
                    for c in HOUSE_COLUMNS]})
            statuses.add(r.status_code)
            assert r.status_code in (200, 422 if protocol == "v1" else 400), (r.status_code, r.text[:300])
            if r.status_code == 200:
                values = r.json()["predictions"] if protocol == "v1" else r.json()["outputs"][0]["data"]
                assert len(values) == len(rows)
                assert all(isinstance(v, float) and math.isfinite(v) for v in values)
            elif protocol == "v1":
                error = r.json()["error"]
                assert error["code"] == "schema_error" and error["field"], error
            else:  # the Open Inference Protocol's one-string error, the column named inside it
                error = r.json()["error"]
                assert isinstance(error, str) and "(field " in error, error

        check()
    assert 422 in statuses and 400 in statuses
