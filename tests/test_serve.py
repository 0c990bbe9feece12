"""`crsrisk serve`: the REST answer equals batch scoring; a bad row gets HTTP 400 naming it."""

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


def test_rest_answer_equals_batch_scoring(server, wire, trained, monkeypatch):
    status, body = request(f"{server}/invocations", split_payload(wire))
    assert status == 200, body
    got = pd.DataFrame(json.loads(body)["predictions"])

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    expected, rejected = score(wire, load_model(trained.model_uri))
    assert rejected.empty
    assert got["patient_id"].tolist() == expected["patient_id"].tolist()
    np.testing.assert_allclose(got["risk"], expected["risk"], rtol=0, atol=1e-9)
    for column in ("risk_tier", "top_drivers", "planning", "model_name", "model_version"):
        assert got[column].tolist() == expected[column].tolist()

    status, body = request(f"{server}/invocations", split_payload(wire, drivers=False))
    assert status == 200, body
    without = pd.DataFrame(json.loads(body)["predictions"])
    assert without["top_drivers"].isna().all()
    np.testing.assert_allclose(without["risk"], expected["risk"], rtol=0, atol=1e-9)


def test_bad_row_gets_400_naming_column_and_rule(server, wire):
    bad = wire.copy()
    bad.loc[3, "age_years"] = 150.0
    status, body = request(f"{server}/invocations", split_payload(bad))
    assert status == 400
    message = json.loads(body)["message"]
    assert "row 4: age_years must be between 0 and 110" in message
    assert "1 row(s) break the data contract" in message


def test_missing_required_column_gets_400(server, wire):
    status, body = request(f"{server}/invocations", split_payload(wire.drop(columns="product")))
    assert status == 400
    assert "product" in json.loads(body)["message"]
