"""`crsrisk serve`: one answer per row, equal to batch scoring, in strict JSON; a bad row is
answered as rejected with its problems; only an unusable request gets HTTP 400, repeating no
row."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from crsrisk.contract.validate import validate
from crsrisk.mlops.loading import load_model
from crsrisk.mlops.pyfunc import to_wire
from crsrisk.scoring.core import score

STARTUP_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url: str, payload: dict | None = None, timeout: float = 60) -> tuple[int, str]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """`crsrisk serve` on a free loopback port, stopped (with its children) at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.uri}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "crsrisk", "serve", "--model", trained.model_uri,
             "--port", str(port)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}): {log.read_text()}")
            try:
                if request(f"{base}/ping", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on /ping within {STARTUP_S} s: {log.read_text()}")
            time.sleep(0.25)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def wire(trained) -> pd.DataFrame:
    """Twenty patients as a client sends them: numbers as JSON numbers, text as strings."""
    valid = validate(trained.cohort.baseline.head(20)).valid
    return to_wire(valid).reset_index(drop=True)


def split_payload(frame: pd.DataFrame, **params) -> dict:
    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    if params:
        payload["params"] = params
    return payload


def strict_json(body: str) -> dict:
    """The body parsed as strict JSON: NaN or Infinity fail the test."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} in a JSON answer")

    return json.loads(body, parse_constant=refuse)


def predictions(body: str) -> pd.DataFrame:
    return pd.DataFrame(strict_json(body)["predictions"])


def assert_equals_batch(got: pd.DataFrame, table: pd.DataFrame, trained, monkeypatch) -> None:
    """Scored rows of a REST answer equal `crsrisk.score` of the same table."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    expected, rejected = score(table, load_model(trained.model_uri))
    scored = got[got["status"] == "scored"].reset_index(drop=True)
    assert len(scored) == len(expected) == len(table) - rejected["row_number"].nunique()
    assert scored["patient_id"].tolist() == expected["patient_id"].tolist()
    np.testing.assert_allclose(scored["risk"], expected["risk"], rtol=0, atol=1e-12)
    for column in ("risk_tier", "top_drivers", "planning", "model_name", "model_version"):
        assert scored[column].tolist() == expected[column].tolist(), column


def test_rest_answer_equals_batch_scoring(server, wire, trained, monkeypatch):
    status, body = request(f"{server}/invocations", split_payload(wire))
    assert status == 200, body
    got = predictions(body)
    assert got["status"].tolist() == ["scored"] * len(wire)
    assert got["problems"].isna().all()
    assert_equals_batch(got, wire, trained, monkeypatch)

    status, body = request(f"{server}/invocations", split_payload(wire, drivers=False))
    assert status == 200, body
    without = predictions(body)
    assert without["top_drivers"].isna().all()  # null, not NaN: strict_json checked
    np.testing.assert_allclose(without["risk"], got["risk"], rtol=0, atol=0)


def test_json_ints_bools_strings_and_nulls(server, wire, trained, monkeypatch):
    """What JSON clients send: whole numbers as ints, true/false, numbers as text, nulls."""
    table = wire.astype(object)
    table["ecog"] = [None if pd.isna(v) else int(v) for v in wire["ecog"]]
    table["prior_lines"] = [None if pd.isna(v) else int(v) for v in wire["prior_lines"]]
    for name in ("bridging_therapy", "bulky_disease", "hlh_history", "prior_autoimmune_disease"):
        table[name] = [{"true": True, "false": False}.get(v) for v in wire[name]]
    table["age_years"] = [f"{v:g}" for v in wire["age_years"]]
    table["il6_pg_ml"] = None
    payload = {"dataframe_split": {"columns": list(table.columns),
                                   "data": table.to_numpy().tolist()}}
    status, body = request(f"{server}/invocations", payload)
    assert status == 200, body
    got = predictions(body)
    assert got["status"].tolist() == ["scored"] * len(wire)
    assert_equals_batch(got, table, trained, monkeypatch)

    records = {"dataframe_records": table.head(3).to_dict("records")}
    status, body = request(f"{server}/invocations", records)
    assert status == 200, body
    assert predictions(body)["risk"].tolist() == got["risk"].head(3).tolist()


def test_bad_rows_are_answered_per_row(server, wire, trained, monkeypatch):
    """Before: one bad row made the whole request HTTP 400. Now each row is answered."""
    bad = wire.astype({"ldh_u_l": object})
    bad.loc[3, "age_years"] = 150.0
    bad.loc[11, "ldh_u_l"] = "high"
    status, body = request(f"{server}/invocations", split_payload(bad))
    assert status == 200, body
    got = predictions(body)
    assert got["patient_id"].tolist() == wire["patient_id"].tolist()
    assert got.index[got["status"] == "rejected"].tolist() == [3, 11]
    assert got.loc[[3, 11], "risk"].isna().all()
    assert json.loads(got.loc[3, "problems"]) == [
        {"column": "age_years", "rule": "must be between 0 and 110", "value": "150"}
    ]
    assert json.loads(got.loc[11, "problems"]) == [
        {"column": "ldh_u_l", "rule": "must be a number", "value": "high"}
    ]
    assert_equals_batch(got, bad, trained, monkeypatch)


def test_strict_param_rejects_what_is_otherwise_blanked(server, wire, trained, monkeypatch):
    """A blanked value is named in its scored row's problems; with strict the row is rejected,
    as `crsrisk score --strict` and `crsrisk.score(strict=True)` do."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    table = wire.head(4).assign(crp_mg_l=[25.0, 5000.0, 8.0, 12.0])
    status, body = request(f"{server}/invocations", split_payload(table))
    assert status == 200, body
    lenient = predictions(body)
    assert lenient["status"].tolist() == ["scored"] * 4
    assert json.loads(lenient.loc[1, "problems"]) == [
        {"column": "crp_mg_l", "rule": "must be between 0 and 1000", "value": "5000"}
    ]
    status, body = request(f"{server}/invocations", split_payload(table, strict=True))
    assert status == 200, body
    strict = predictions(body)
    assert strict["status"].tolist() == ["scored", "rejected", "scored", "scored"]
    assert strict.loc[1, "risk"] is None or np.isnan(strict.loc[1, "risk"])
    assert json.loads(strict.loc[1, "problems"]) == json.loads(lenient.loc[1, "problems"])
    expected, rejected = score(table, load_model(trained.model_uri), strict=True)
    assert rejected["row_number"].tolist() == [2] and rejected["action"].tolist() == ["rejected"]
    np.testing.assert_array_equal(strict["risk"].dropna().to_numpy(), expected["risk"].to_numpy())


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (lambda w: split_payload(w.drop(columns="product")), 400,
         "lacks required column(s) product"),
        (lambda w: split_payload(w.head(0)), 400, "has no data rows"),
        (lambda w: {"inputs": [1, 2, 3]}, 400, "takes a table"),
        (lambda w: {"rows": split_payload(w)["dataframe_split"]}, 400, "exactly one of"),
        (lambda w: {"dataframe_split": {"columns": ["patient_id"], "data": [["P1", 2]]}}, 400,
         "must have 1 values"),
        (lambda w: {**split_payload(w), "params": {"drivers": "perhaps"}}, 400, "drivers"),
        (lambda w: b"{not json", 400, "not valid JSON"),
    ],
    ids=["required column absent", "no rows", "not a table", "unknown key", "ragged rows",
         "bad param", "not JSON"],
)
def test_unusable_request_gets_400_without_rows(server, wire, payload, status, words):
    data = payload(wire)
    if isinstance(data, bytes):
        req = urllib.request.Request(f"{server}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as error:
            with error:
                got_status, body = error.code, error.read().decode()
        else:
            pytest.fail("accepted a body that is not JSON")
    else:
        got_status, body = request(f"{server}/invocations", data)
    assert got_status == status, body
    answer = strict_json(body)
    assert answer["error_code"] == "BAD_REQUEST"
    assert words in answer["message"]
    assert not any(pid in body for pid in wire["patient_id"])


def test_csv_body_and_content_type(server, wire):
    csv = wire.head(4).to_csv(index=False).encode()
    req = urllib.request.Request(f"{server}/invocations", data=csv,
                                 headers={"Content-Type": "text/csv"})
    with urllib.request.urlopen(req, timeout=60) as response:
        got = predictions(response.read().decode())
    assert got["status"].tolist() == ["scored"] * 4
    req = urllib.request.Request(f"{server}/invocations", data=csv,
                                 headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    refused.value.close()
    assert refused.value.code == 415
    status, body = request(f"{server}/version")
    assert status == 200 and json.loads(body)["model_version"] == "1"
