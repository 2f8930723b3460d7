"""schemathesis with every check, and its stateful phase, against a real ``modelyard serve`` of the example
model: the OpenAPI document says what the server accepts and answers (statuses, content types, error shapes)
and no input gets a 5xx.

It runs as a user would run it, the ``st`` command line against ``/openapi.json`` (phases coverage, fuzzing
and stateful; derandomized; a few examples per operation), so a failure prints schemathesis' own report with
a curl line to reproduce it. The 500s it (and probing by hand) found are pinned by direct requests below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, served_model

DEFAULT_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # positive_data_acceptance's own
# positive_data_acceptance: which rows a model takes (its columns and their types, whether it is a classifier
# with probabilities) is data of each model, published at GET /v1/models/{name} and GET /v2/models/{name},
# not part of the document, which describes {name} for every model at once. A body the document allows can
# therefore still not fit the model named: v1 answers that 422 and V2 400 (the protocol has no other client
# error for it). Only for these operations, and only that status, is added to what the check accepts;
# every other check, and this one everywhere else, runs as schemathesis ships it.
CONFIG = f"""
[[operations]]
include-path-regex = '^/v1/models/\\{{name\\}}/(predict|explain)$'
checks.positive_data_acceptance.expected-statuses = {json.dumps([*DEFAULT_ACCEPTED, "422"])}

[[operations]]
include-path-regex = '^/v2/models/.*/infer$'
checks.positive_data_acceptance.expected-statuses = {json.dumps([*DEFAULT_ACCEPTED, "400"])}

[[operations]]
include-path-regex = '^/v1/feedback$'
checks.positive_data_acceptance.expected-statuses = {json.dumps([*DEFAULT_ACCEPTED, "400", "422"])}
"""
# /v1/feedback likewise: whether an outcome is right depends on what was logged and on the model (an outcome
# by key needs a served model with that input column; `actual` must be a number for a regressor and one of
# the classes for a classifier): 422 for the wrong type, 400 for a key that names no column of the model.
MAX_EXAMPLES = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with served_model(tmp_path_factory.mktemp("serve_schemathesis")) as running:
        yield running


def schemathesis_run(server: Server, folder: Path) -> tuple[dict[str, object], str]:
    """``st run`` with every check and every phase; its JSON report and its text output."""
    config, report = folder / "schemathesis.toml", folder / "report.json"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{server.url}/openapi.json", "--checks", "all", "--generation-deterministic",
               "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--request-timeout", "20",
               "--no-color", "--report", "json",
               "--report-json-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=folder)
    assert report.exists(), done.stdout + done.stderr
    return json.loads(report.read_text()), done.stdout + done.stderr


def test_schemathesis_with_every_check_and_the_stateful_phase_finds_nothing(server: Server,
                                                                           tmp_path: Path) -> None:
    report, output = schemathesis_run(server, tmp_path)
    phases = report["phases"]
    assert isinstance(phases, dict)
    for phase in ("coverage", "fuzzing", "stateful"):
        assert phases[phase]["status"] != "skip", (phase, phases[phase], output[-3000:])
    failures = {f["code"]: f["count"] for f in report["failures"]}  # type: ignore[attr-defined]
    print("\nschemathesis:", report["test_cases"], "failures per check:", failures or "none")
    assert not failures and not report["errors"], output[-12000:]
    assert report["exit_code"] == 0, output[-12000:]
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(("path", "status"), [
    ("/v2/models/house-prices/versions/%C2%B2", 404),  # '²'.isdigit() is true, int('²') raised
    ("/v2/models/house-prices/versions/%C2%B2/ready", 404),
    ("/v2/models/house-prices%40v%C2%B2", 404),
    ("/v2/models/house-prices/versions/" + "9" * 5000, 404),  # int() refuses 4,300 digits
    ("/v2/models/house-prices/versions/%E0%A5%A7", 404),  # '१' (Devanagari 1) named version 1
    ("/v2/models/house-prices/versions/1", 200),
])
def test_odd_version_path_parameters_are_a_404_in_the_protocols_shape(server: Server, path: str,
                                                                      status: int) -> None:
    r = httpx.get(server.url + path, timeout=30)
    assert r.status_code == status, (path, r.text[:300])
    if status == 404:
        assert isinstance(r.json()["error"], str)


@pytest.mark.parametrize("declared", [b"\xb2", b"9" * 5000])
def test_an_odd_inference_header_content_length_is_a_400_naming_it(server: Server, declared: bytes) -> None:
    r = httpx.post(f"{server.url}/v2/models/house-prices/infer", content=b'{"inputs": []}',
                   headers={"Inference-Header-Content-Length": declared}, timeout=30)
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"], r.text[:300]


def test_v2_data_nested_a_thousand_lists_deep_is_a_400_naming_the_input(server: Server) -> None:
    body = ('{"inputs": [{"name": "area_sqm", "shape": [1], "datatype": "FP64", "data": '
            + "[" * 1000 + "1" + "]" * 1000 + "}]}")
    r = httpx.post(f"{server.url}/v2/models/house-prices/infer", content=body, timeout=30)
    assert r.status_code == 400 and "(field area_sqm)" in r.json()["error"], r.text[:300]


HOUSE = {"area_sqm": 120, "bedrooms": 3, "bathrooms": 2, "year_built": 1990, "year_renovated": None,
         "lot_sqm": 300, "garage_spaces": 1, "floors": 2, "distance_center_km": 5.5, "school_rating": 7.5,
         "crime_index": 2.1, "neighborhood": "Harbor", "house_type": "detached", "condition": "good",
         "heating": "gas", "has_pool": "no"}


def test_explaining_more_rows_than_the_explainer_takes_is_a_413_not_a_500(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/models/house-prices/explain", json={"instances": [HOUSE] * 10_001},
                   timeout=60)
    assert r.status_code == 413 and r.json()["error"]["field"] == "instances", r.text[:300]
