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
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import fast_config

runner = CliRunner()


def write_config(folder: Path, **overrides) -> Path:
    config = fast_config(folder, **overrides)
    data = config.model_dump(mode="json", exclude={"score"})
    data["tracking"] = {"experiment": "crs-severe", "model_name": "crs-severe"}  # defaults
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
def home(workdir):
    """The per-user folder (CRSRISK_HOME) of the trainings: the default store lives there."""
    return workdir / "home"


@pytest.fixture(scope="module")
def two_trainings(workdir, home):
    """Train twice from the working directory with the per-user default store."""
    config = write_config(workdir)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("CRSRISK_HOME", str(home))
        first = run("train", "--data", "cohort.csv", "--events", "events.csv",
                    "--config", config)
        second = run("train", "--data", "cohort.csv", "--config", config)
    return first, second


def test_train_prints_uri_and_version_and_makes_the_first_champion(two_trainings, workdir,
                                                                    home):
    first, second = two_trainings
    assert first.exit_code == 0, first.output
    assert "models:/crs-severe/1 version 1" in first.output
    assert "version 1 is the first champion" in first.output
    # The per-user store, said once, not the working directory.
    assert first.output.count(f"tracking store: sqlite:///{home / 'mlflow.db'}") == 1
    assert (home / "mlflow.db").is_file() and (home / "mlartifacts").is_dir()
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlartifacts").exists()
    # Progress in a pipe: one line per candidate, with its search steps and folds.
    assert "candidate 1/3 m_easix: 1 search step x 3 folds" in first.output
    assert "candidate 3/3 xgboost: 1 search step x 3 folds" in first.output
    assert second.exit_code == 0, second.output
    assert "version 2 stays challenger" in second.output  # same data: not better
    assert "crsrisk promote 2 --reason" in second.output


def test_evaluate_names_the_store_once_and_why(two_trainings, workdir, home):
    """mlflow exports MLFLOW_TRACKING_URI once a store is set: the same store is not announced
    a second time as if the user had set that variable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("CRSRISK_HOME", str(home))
        result = run("evaluate", "--data", "cohort.csv", "--events", "events.csv",
                     "--allow-training-rows", "--out", workdir / "metrics.json")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("tracking store:")]
    assert lines == [f"tracking store: sqlite:///{home / 'mlflow.db'} (the per-user store; "
                     "MLFLOW_TRACKING_URI or CRSRISK_HOME chooses another)"], lines


@pytest.fixture
def client(home, two_trainings, monkeypatch):
    uri = f"sqlite:///{home / 'mlflow.db'}"
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
    from crsrisk.mlops.pyfunc import OUTPUT_COLUMNS, signature, to_wire

    model = mlflow.pyfunc.load_model("models:/crs-severe@champion")
    assert model.metadata.signature == signature()
    valid = validate(pd.read_csv(workdir / "cohort.csv", dtype=str).head(5)).valid
    scores = model.predict(to_wire(valid))
    # The score table with each row's status and problems (one answer per input row).
    assert list(scores.columns) == list(OUTPUT_COLUMNS)
    assert scores["status"].tolist() == ["scored"] * 5
    assert (scores["risk_lower"] <= scores["risk"]).all()
    assert (scores["risk"] <= scores["risk_upper"]).all()
    assert scores["model_version"].unique().tolist() == ["1"]
    # The data scientist's first move: the CSV as pandas reads it (int64, bool, float, text).
    as_read = model.predict(pd.read_csv(workdir / "cohort.csv").head(5))
    np.testing.assert_array_equal(as_read["risk"], scores["risk"])


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


def test_store_holds_no_patient_id_and_no_raw_row(client, workdir, home):
    cohort = pd.read_csv(workdir / "cohort.csv", dtype=str)
    ids = cohort["patient_id"].tolist()
    raw_rows = cohort.head(50).to_csv(index=False, header=False).splitlines()
    files = [home / "mlflow.db", *(p for p in (home / "mlartifacts").rglob("*")
                                   if p.is_file())]
    assert len(files) > 10
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert "SIM-0" not in text, f"a patient id is stored in {path}"
        assert not any(row in text for row in raw_rows), f"a raw row is stored in {path}"
    example = next((home / "mlartifacts").rglob("serving_input_example.json"))
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
    monkeypatch.setenv("CRSRISK_HOME", str(tmp_path / "home"))
    table = edit(pd.read_csv(workdir / "cohort.csv", dtype=str).head(300))
    table.to_csv(tmp_path / "bad.csv", index=False)
    result = run("train", "--data", tmp_path / "bad.csv", "--config", write_config(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing logged for bad input


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


# ------------------------------------------------------------------------------------------
# Where the store is, and what happens when it cannot be used
# ------------------------------------------------------------------------------------------


def test_store_resolution_order(tmp_path, monkeypatch):
    from crsrisk.config import TrackingConfig, load_train_config
    from crsrisk.mlops.registry import locate_store

    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    monkeypatch.chdir(project / "sub")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CRSRISK_HOME", str(tmp_path / "home"))
    # 4. Nothing configured: the per-user store, never the working directory.
    where = locate_store()
    assert where.uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert where.artifact_location == (tmp_path / "home" / "mlartifacts").as_uri()
    assert "per-user" in where.source
    # 3. A crsrisk.toml of the project (here one folder up), paths relative to that file.
    (project / "crsrisk.toml").write_text('[tracking]\nuri = "sqlite:///stores/team.db"\n')
    where = locate_store()
    assert where.uri == f"sqlite:///{project / 'stores' / 'team.db'}"
    assert where.source == f"from {project / 'crsrisk.toml'}"
    # 2. The config's tracking.uri, relative to the config file, wins over the project file.
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.yaml").write_text("tracking:\n  uri: sqlite:///runs/mine.db\n")
    config = load_train_config(configs / "train.yaml")
    where = locate_store(config.tracking)
    assert where.uri == f"sqlite:///{configs / 'runs' / 'mine.db'}"
    assert where.artifact_location == (configs / "runs" / "mlartifacts").as_uri()
    assert str(configs / "train.yaml") in where.source
    # 1. MLFLOW_TRACKING_URI wins over everything.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert locate_store(config.tracking).uri == "http://tracking.example:5000"
    assert locate_store(TrackingConfig()).source == "from MLFLOW_TRACKING_URI"


def test_read_only_commands_create_no_store_and_name_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CRSRISK_HOME", str(home))
    database = home / "mlflow.db"
    simulate_cohort(30, seed=2).baseline.to_csv(tmp_path / "in.csv", index=False)
    commands = [
        ("models",),
        ("promote", "1", "--reason", "x"),
        ("score", "in.csv", "--out", "s.csv"),
        ("export", "--out", "exported"),
        ("stratify", "in.csv", "--out", "strata.csv"),
        ("evaluate", "--data", "in.csv"),
        ("report", "--out", "r.html"),
    ]
    for command in commands:
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert f"There is no tracking store at {database}" in result.output, command
        assert f"tracking store: sqlite:///{database}" in result.output, command
    assert list(tmp_path.iterdir()) == [tmp_path / "in.csv"]  # no store, no output, no folder


def test_a_missing_folder_store_is_not_created_by_reading(tmp_path, monkeypatch):
    folder = tmp_path / "mlruns"
    for uri in (folder.as_uri(), str(folder)):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for command in (("models",), ("export", "--out", tmp_path / "exported")):
            result = run(*command)
            assert result.exit_code == 2, (uri, command, result.output)
            assert f"There is no tracking store at {folder}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_tracking_uri_naming_a_plain_file_exits_3(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    simulate_cohort(30, seed=2).baseline.to_csv(tmp_path / "in.csv", index=False)
    for uri in (f"sqlite:///{notes}", str(notes), notes.as_uri()):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for command in (("models",), ("score", tmp_path / "in.csv", "--out", tmp_path / "s.csv"),
                        ("train", "--data", tmp_path / "in.csv")):
            result = run(*command)
            assert result.exit_code == 3, (uri, command, result.output)
            assert str(notes) in result.output
            assert "crsrisk train" not in result.output
    assert notes.read_text() == "not a database\n"


def test_an_unsupported_tracking_uri_exits_3_without_training_advice(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    result = run("models")
    assert result.exit_code == 3, result.output
    assert "unsupported scheme foo://" in result.output
    assert "crsrisk train" not in result.output


def test_an_unreachable_tracking_server_exits_3_in_seconds(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    simulate_cohort(30, seed=2).baseline.to_csv(tmp_path / "in.csv", index=False)
    for command in (("models",), ("score", tmp_path / "in.csv", "--out", tmp_path / "s.csv"),
                    ("train", "--data", tmp_path / "in.csv")):
        start = time.monotonic()
        result = run(*command)
        elapsed = time.monotonic() - start
        assert result.exit_code == 3, (command, result.output)
        assert f"The tracking server {url}" in result.output
        assert "cannot be reached" in result.output
        assert "crsrisk train" not in result.output
        assert elapsed < 20, f"{command} took {elapsed:.0f} s"
    assert not (tmp_path / "s.csv").exists()


def _no_training(*args, **kwargs):
    raise AssertionError("training started although the store cannot be written")


@pytest.mark.parametrize("fault", ["not a folder", "permission denied"])
def test_an_unwritable_store_is_found_before_training(workdir, tmp_path, monkeypatch, fault):
    monkeypatch.setattr("crsrisk.modeling.train.train_models", _no_training)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if fault == "not a folder":
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        monkeypatch.setenv("CRSRISK_HOME", str(blocker / "store"))
        expected = f"{blocker} is a file, not a folder"
    else:  # tests run as root here, where chmod cannot make a folder unwritable
        import tempfile as real_tempfile

        monkeypatch.setenv("CRSRISK_HOME", str(tmp_path / "home"))

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(tmp_path / "home"))

        monkeypatch.setattr(real_tempfile, "TemporaryFile", refuse)
        expected = "Permission denied"
    start = time.monotonic()
    result = run("train", "--data", workdir / "cohort.csv", "--config",
                 write_config(tmp_path))
    assert result.exit_code == 3, result.output
    assert "cannot be written" in result.output and expected in result.output
    assert "read " not in result.output  # failed before reading the data
    assert time.monotonic() - start < 10


def test_a_store_failing_while_logging_exits_3(workdir, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    def disk_full(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database or disk is full\n[SQL: ...]")

    monkeypatch.setattr("crsrisk.mlops.tracking.log_and_register", disk_full)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CRSRISK_HOME", str(tmp_path / "home"))
    result = run("train", "--data", workdir / "cohort.csv", "--config",
                 write_config(tmp_path, candidates=("m_easix",)))
    assert result.exit_code == 3, result.output
    assert "refused the run ((sqlite3.OperationalError) database or disk is full)" in \
        result.output
    assert str(tmp_path / "home" / "mlflow.db") in result.output


def test_two_first_trainings_at_once_on_a_new_store_both_succeed(workdir, tmp_path):
    """Two `crsrisk train` processes initialise one new SQLite store: the lock serialises it."""
    import os

    config = write_config(tmp_path, candidates=("m_easix",))
    env = {**os.environ, "CRSRISK_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    command = [sys.executable, "-m", "crsrisk", "train", "--data", str(workdir / "cohort.csv"),
               "--config", str(config)]
    processes = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "Traceback" not in err
    versions = sorted(out.strip().rsplit(" ", 1)[-1] for out, _ in outputs)
    assert versions == ["1", "2"]


# ------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------


def test_train_models_reports_every_candidate_step_and_fold(tmp_path):
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.modeling.train import train_models

    config = fast_config(tmp_path, candidates=("m_easix", "logistic"))
    config = config.model_copy(update={"search": config.search.model_copy(
        update={"logistic_c": (0.3, 3.0)})})
    valid = validate(simulate_cohort(600, seed=8).baseline).valid
    steps = []
    train_models(valid, resolve_labels(valid).severe, config, progress=steps.append)
    seen = [(s.candidate, s.candidate_number, s.candidates, s.step, s.steps, s.fold, s.folds)
            for s in steps]
    assert seen == [("m_easix", 1, 2, 1, 1, f, 3) for f in (1, 2, 3)] + [
        ("logistic", 2, 2, step, 2, f, 3) for step in (1, 2) for f in (1, 2, 3)]


def test_training_progress_draws_a_bar_on_a_terminal_only(monkeypatch, capsys):
    from crsrisk.cli import common
    from crsrisk.modeling.train import TrainingStep

    events = [TrainingStep("xgboost", 1, 1, s, 2, f, 3) for s in (1, 2) for f in (1, 2, 3)]
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    with common.training_progress() as report:
        for event in events:
            report(event)
    drawn = capsys.readouterr().err
    assert "\rcandidate 1/1 xgboost:" in drawn and "/6 [" in drawn  # a redrawn tqdm bar of 6 fits
    assert "search steps x" not in drawn  # not the line for pipes
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: False)
    with common.training_progress() as report:
        for event in events:
            report(event)
    assert capsys.readouterr().err == "candidate 1/1 xgboost: 2 search steps x 3 folds\n"
