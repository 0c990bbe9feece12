"""Latency of one-patient REST requests to `crsrisk serve`, against the bare model's predict.

    python bench/rest_latency.py --n 300        # after make demo: the store's champion
    MLFLOW_TRACKING_URI=sqlite:////path/mlflow.db python bench/rest_latency.py --model URI

Starts ``crsrisk serve`` on 127.0.0.1 with a free port, sends ``--n`` requests of one simulated
patient each (JSON ``dataframe_split``, drivers on unless ``--no-drivers``) on one kept-alive
connection, prints p50 and p95, then stops the server. In the same run it times the bare model
on one row of its ready-made model matrix (the XGBoost booster on one thread, or the logistic
regression's dot product): the floor that parsing, the contract check, drivers and HTTP are
added to. It also calls the server's handler in this process on the same bodies (parse the
request, the model's predict, the JSON answer) and prints its wall time and its CPU time: on a
shared machine, where other work stretches wall times several-fold, the CPU time is the figure
to compare between versions.

Measured 2026-12-03 on a quiet 2-core machine (load < 1), 300 requests, drivers on, both
trees run back to back with this script (`PYTHONPATH=<tree>/src`):

    model (store)                      before (82dfb2f)       after
    XGBoost, 2,000 simulated patients  p50 42.7 / p95 45.8    p50 15.4 / p95 17.2 ms
    logistic, make demo's champion     p50 39.9 / p95 42.8    p50 14.9 / p95 18.2 ms

The bare model's one-row predict is 0.26 ms (booster) and 0.005 ms (logistic). What closed
the gap: a small clean request is validated cell by cell in plain Python (contract.small,
about 3 ms instead of 23), XGBoost gets one code matrix per request instead of three, and
the answer table and planning texts are built once.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from crsrisk.contract.spec import OUTCOME_NAMES
from crsrisk.contract.validate import validate
from crsrisk.mlops.loading import load_model
from crsrisk.mlops.pyfunc import to_wire
from crsrisk.mlops.serving import parse_request, to_json
from crsrisk.modeling.adapters import xgboost_matrix
from crsrisk.simulate.cohort import simulate_cohort

STARTUP_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(ms: list[float]) -> str:
    p50 = statistics.median(ms)
    p95 = float(np.percentile(ms, 95))
    return f"p50 {p50:8.3f} ms   p95 {p95:8.3f} ms"


@contextlib.contextmanager
def server(model: str, port: int):
    """`crsrisk serve` in its own process group, stopped with SIGTERM (SIGKILL if need be)."""
    log = Path(tempfile.mkdtemp(prefix="crsrisk-bench-")) / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "crsrisk", "serve", "--model", model, "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                sys.exit(f"crsrisk serve exited ({process.returncode}): {log.read_text()}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"no answer on /ping within {STARTUP_S} s: {log.read_text()}")
            time.sleep(0.25)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def rest_times(port: int, bodies: list[bytes], warmup: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    times = []
    for i, body in enumerate(bodies):
        start = time.perf_counter()
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            sys.exit(f"HTTP {response.status}: {answer[:300]!r}")
        if i >= warmup:
            times.append(elapsed)
    connection.close()
    return times


def bare_times(model: str, wire, n: int) -> tuple[str, list[float]]:
    """The floor: the bare model's prediction for one row of its ready-made model matrix."""
    risk_model = load_model(model)
    design = risk_model.design(validate(wire.head(1)).valid)
    adapter = risk_model.adapter
    if risk_model.kind == "xgboost":
        booster = adapter.booster
        booster.set_param({"nthread": 1})
        matrix = xgboost_matrix(design, booster.feature_names)
        label = "bare booster inplace_predict, one row, one thread"

        def predict() -> None:
            booster.inplace_predict(matrix)
    elif risk_model.kind == "logistic":
        x = design.to_numpy(dtype="float64")
        label = "bare logistic regression (numpy), one row"

        def predict() -> None:
            1 / (1 + np.exp(-(x @ adapter.coef + adapter.intercept)))
    else:
        sys.exit(f"no bare reference for a {risk_model.kind} model: register an xgboost or "
                 "logistic champion")
    times = []
    for _ in range(n):
        start = time.perf_counter()
        predict()
        times.append((time.perf_counter() - start) * 1000)
    return label, times


def handler_times(model: str, bodies: list[bytes], warmup: int
                  ) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of the server's work on each body, in this process."""
    pyfunc = mlflow.pyfunc.load_model(model)
    wall, cpu = [], []
    for i, body in enumerate(bodies):
        start, start_cpu = time.perf_counter(), time.thread_time()
        table, params = parse_request(body, "application/json")
        to_json(pyfunc.predict(table, params=params))
        if i >= warmup:
            cpu.append((time.thread_time() - start_cpu) * 1000)
            wall.append((time.perf_counter() - start) * 1000)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/crs-severe@champion")
    parser.add_argument("--n", type=int, default=300, help="requests (after 20 warm-up ones)")
    parser.add_argument("--no-drivers", action="store_true")
    args = parser.parse_args()
    warmup = 20
    cohort = simulate_cohort(args.n + warmup, seed=3).baseline.drop(columns=list(OUTCOME_NAMES))
    wire = to_wire(validate(cohort).valid).reset_index(drop=True)
    params = {"drivers": False} if args.no_drivers else {}
    bodies = []
    for i in range(len(wire)):
        split = json.loads(wire.iloc[[i]].to_json(orient="split", index=False))
        bodies.append(json.dumps({"dataframe_split": split, "params": params}).encode())
    port = free_port()
    with server(args.model, port):
        rest = rest_times(port, bodies, warmup)
    label, bare = bare_times(args.model, wire, len(rest))
    wall, cpu = handler_times(args.model, bodies, warmup)
    drivers = "off" if args.no_drivers else "on"
    print(f"REST, one patient per request, drivers {drivers} ({len(rest)} requests): "
          f"{percentiles(rest)}")
    print(f"{label + ':':57s}{percentiles(bare)}")
    print(f"handler in-process (parse, predict, JSON), wall time:     {percentiles(wall)}")
    print(f"handler in-process (parse, predict, JSON), CPU time:      {percentiles(cpu)}")
    print(f"REST p50 / bare model p50: {statistics.median(rest) / statistics.median(bare):.1f}x")


if __name__ == "__main__":
    main()
