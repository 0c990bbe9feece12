"""`crsrisk train` end to end: one MLflow run, the registry, aliases, audit trail, no leaks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.config import CONFIG_DIR
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import fast_config

runner = CliRunner()


def write_config(folder: Path, **overrides) -> Path:
    config = fast_config(folder, **overrides)
    data = config.model_dump(mode="json", exclude={"score"})
    data["tracking"] = {"experiment": "crs-severe", "model_name": "crs-severe"}  # defaults
    data["score_config"] = str(CONFIG_DIR / "score.yaml")
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("work")
    cohort = simulate_cohort(1200, seed=21)
    cohort.baseline.to_csv(folder / "cohort.csv", index=False)
    cohort.events.to_csv(folder / "events.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def two_trainings(workdir):
    """Train twice in the working directory with the embedded default store."""
    config = write_config(workdir)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = run("train", "--data", "cohort.csv", "--events", "events.csv",
                    "--config", config)
        second = run("train", "--data", "cohort.csv", "--config", config)
    return first, second


def test_train_prints_uri_and_version_and_makes_the_first_champion(two_trainings, workdir):
    first, second = two_trainings
    assert first.exit_code == 0, first.output
    assert "models:/crs-severe/1 version 1" in first.output
    assert "version 1 is the first champion" in first.output
    assert (workdir / "mlflow.db").is_file() and (workdir / "mlartifacts").is_dir()
    assert second.exit_code == 0, second.output
    assert "version 2 stays challenger" in second.output  # same data: not better
    assert "crsrisk promote 2 --reason" in second.output


@pytest.fixture
def client(workdir, two_trainings, monkeypatch):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri, uri)


def test_run_holds_config_fingerprint_versions_candidates_and_plots(client):
    version = client.get_model_version("crs-severe", "1")
    run = client.get_run(version.tags["run_id"])
    assert run.data.params["cv.folds"] == "3"
    tags = run.data.tags
    assert len(tags["data_sha256"]) == 64 and tags["data_rows"] == "1200"
    assert tags["contract_version"] == "1" and tags["mapping_fingerprint"] == "none"
    assert tags["lib.xgboost"] == "3.2.0" and tags["lib.mlflow"] == "3.17.2"
    assert "git_commit" in tags
    assert {"test_auroc", "cv_log_loss", "test_auroc_lower"} <= set(run.data.metrics)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["logistic", "m_easix", "xgboost"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/roc_test.png", "plots/calibration_test.png",
                         "plots/instability.png"}
    assert float(version.tags["metric.test_auroc"]) > 0.6


def test_same_data_same_seed_same_metrics(client):
    one = client.get_model_version("crs-severe", "1").tags
    two = client.get_model_version("crs-severe", "2").tags
    assert one["metric.test_log_loss"] == two["metric.test_log_loss"]
    assert one["metric.cv_auroc"] == two["metric.cv_auroc"]
    # The second run had no events table; every label was ASTCT already, so the data agree.
    assert one["data_sha256"] == two["data_sha256"]


def test_signature_round_trips_and_model_returns_the_score_table(client, workdir):
    from crsrisk.contract.validate import validate
    from crsrisk.mlops.pyfunc import signature, to_wire

    model = mlflow.pyfunc.load_model("models:/crs-severe@champion")
    assert model.metadata.signature == signature()
    valid = validate(pd.read_csv(workdir / "cohort.csv", dtype=str).head(5)).valid
    scores = model.predict(to_wire(valid))
    assert list(scores.columns) == ["patient_id", "risk", "risk_lower", "risk_upper",
                                    "risk_tier", "top_drivers", "planning", "model_name",
                                    "model_version"]
    assert (scores["risk_lower"] <= scores["risk"]).all()
    assert (scores["risk"] <= scores["risk_upper"]).all()
    assert scores["model_version"].unique().tolist() == ["1"]


def test_promote_and_audit_trail(client, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    config = workdir / "train.yaml"
    result = run("promote", "2", "--reason", "external validation at site B", "--config",
                 config)
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias("crs-severe", "champion").version) == "2"
    listing = run("models", "--config", config)
    assert "external validation at site B" in listing.output
    assert "first champion" in listing.output
    trail_lines = listing.output.split("alias changes:")[1].strip().splitlines()
    assert "test_auroc" in trail_lines[0] and "test_log_loss" in trail_lines[0]
    auroc = client.get_model_version("crs-severe", "2").tags["metric.test_auroc"]
    assert f"{float(auroc):.4f}" in trail_lines[-1]  # the promotion row carries its metrics
    missing = run("promote", "9", "--reason", "x", "--config", config)
    assert missing.exit_code == 2 and "has no version 9" in missing.output
    no_reason = run("promote", "1", "--reason", " ", "--config", config)
    assert no_reason.exit_code == 2 and "needs a reason" in no_reason.output


def test_store_holds_no_patient_id_and_no_raw_row(client, workdir):
    cohort = pd.read_csv(workdir / "cohort.csv", dtype=str)
    ids = cohort["patient_id"].tolist()
    raw_rows = cohort.head(50).to_csv(index=False, header=False).splitlines()
    files = [workdir / "mlflow.db", *(p for p in (workdir / "mlartifacts").rglob("*")
                                      if p.is_file())]
    assert len(files) > 10
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert "SIM-0" not in text, f"a patient id is stored in {path}"
        assert not any(row in text for row in raw_rows), f"a raw row is stored in {path}"
    example = next((workdir / "mlartifacts").rglob("serving_input_example.json"))
    assert "EXAMPLE-1" in example.read_text()
    assert not any(i in example.read_text() for i in ids[:100])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda df: df.assign(crs_max_grade=0), "no severe CRS events"),
        (lambda df: df.assign(crs_max_grade=3), "Every one of the"),
        (lambda df: df.assign(crp_mg_l=""), "crp_mg_l is missing for every row"),
        (lambda df: df.assign(crs_grading_scale="Penn"), "--events"),
        (lambda df: df.drop(columns=["crs_max_grade", "crs_grading_scale"]), "crs_max_grade"),
    ],
)
def test_bad_training_input_exits_2_with_one_sentence(workdir, tmp_path, monkeypatch, edit,
                                                      message):
    monkeypatch.chdir(tmp_path)
    table = edit(pd.read_csv(workdir / "cohort.csv", dtype=str).head(300))
    table.to_csv(tmp_path / "bad.csv", index=False)
    result = run("train", "--data", tmp_path / "bad.csv", "--config", write_config(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged for unusable input


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_training_against_a_real_mlflow_server(tmp_path, monkeypatch):
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.mlops.registry import connect, list_versions
    from crsrisk.mlops.tracking import log_and_register
    from crsrisk.modeling.train import train_models

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start within 60 s")
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        config = fast_config(tmp_path, candidates=("m_easix", "logistic"))
        cohort = simulate_cohort(800, seed=4)
        valid = validate(cohort.baseline).valid
        labels = resolve_labels(valid)
        result = train_models(valid, labels.severe, config)
        store = connect(config.tracking)
        assert store.uri == url
        registered = log_and_register(store, result, config, valid, labels.severe, {})
        assert registered.champion and registered.version == "1"
        versions = list_versions(store)
        assert versions["aliases"].tolist() == ["champion,challenger"]
        loaded = mlflow.pyfunc.load_model("models:/crs-severe@champion")
        assert loaded.metadata.signature is not None
        assert json.loads(json.dumps(versions.to_dict("records")))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
