"""`crsrisk evaluate`, `recalibrate` and `report` end to end on a copy of the shared registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import private_store, use_store
from tests.conftest import run_cli as run


@pytest.fixture(scope="module")
def store(trained, tmp_path_factory):
    """A private copy of the shared registry with a second cohort, labelled and not."""
    folder = tmp_path_factory.mktemp("store")
    uri = private_store(trained, folder)
    second = simulate_cohort(1500, seed=2)
    second.baseline.to_csv(folder / "second.csv", index=False)
    second.events.to_csv(folder / "second_events.csv", index=False)
    second.baseline.drop(columns=["crs_max_grade", "crs_grading_scale"]).to_csv(
        folder / "unlabelled.csv", index=False)
    return folder, uri


@pytest.fixture
def env(store, monkeypatch):
    folder, uri = store
    return folder, use_store(folder, uri, monkeypatch)


def every_text_of_run(client: MlflowClient, run_id: str, folder: Path) -> str:
    run_ = client.get_run(run_id)
    parts = [json.dumps(run_.data.tags), json.dumps(run_.data.params)]
    local = Path(client.download_artifacts(run_id, "", str(folder)))
    parts += [p.read_text(errors="ignore") for p in local.rglob("*") if p.is_file()]
    return "\n".join(parts)


def test_evaluate_writes_intervals_and_links_the_run(env, tmp_path):
    folder, client = env
    result = run("evaluate", "--data", "second.csv", "--events", "second_events.csv",
                 "--out", "metrics.json", "--n-boot", "200")
    assert result.exit_code == 0, result.output
    payload = json.loads((folder / "metrics.json").read_text())
    auroc = payload["metrics"]["auroc"]
    assert auroc["lower"] <= auroc["estimate"] <= auroc["upper"]
    assert payload["model"]["version"] == "1" and payload["data"]["rows_valid"] == 1500
    assert payload["tracking"]["linked_version"] == "crs-severe/1"
    run_id = payload["tracking"]["run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["run_type"] == "evaluation" and tags["evaluation_of"] == "crs-severe/1"
    assert tags["data_sha256"] == payload["data"]["data_sha256"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["auroc_lower"] <= metrics["auroc"] <= metrics["auroc_upper"]
    version_tags = client.get_model_version("crs-severe", "1").tags
    assert version_tags[f"evaluation.{run_id}"].startswith("auroc ")
    assert "SIM-" not in every_text_of_run(client, run_id, tmp_path)
    assert "auroc" in result.output and "linked to registered version" in result.output


def test_evaluate_prints_json_when_no_out_is_given(env):
    result = run("evaluate", "--data", "second.csv", "--n-boot", "20", "--no-log")
    assert result.exit_code == 0, result.output
    start = result.stdout.index("{")
    payload = json.loads(result.stdout[start:])
    assert set(payload["metrics"]["brier"]) == {"estimate", "lower", "upper"}
    assert "tracking" not in payload


def test_evaluate_an_exported_model(env, tmp_path, monkeypatch):
    from crsrisk.mlops.export import export_model

    folder, client = env
    exported = tmp_path / "exported"
    export_model("models:/crs-severe/1", exported)
    result = run("evaluate", "--data", "second.csv", "--model", exported, "--n-boot", "20",
                 "--out", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "matched by name, version, training-data fingerprint" in result.output
    # Where there is no store: evaluated, not logged, and no store created (evaluate only reads).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    result = run("evaluate", "--data", "second.csv", "--model", exported, "--n-boot", "20",
                 "--out", tmp_path / "nowhere.json")
    assert result.exit_code == 0, result.output
    assert f"not logged: There is no tracking store at {tmp_path / 'other.db'}" in result.output
    assert not (tmp_path / "other.db").exists()
    # Elsewhere, with a store that never saw the model: logged, not linked, JSON written.
    from crsrisk.config import TrackingConfig
    from crsrisk.mlops.registry import connect

    connect(TrackingConfig())  # the other store, created by someone else
    result = run("evaluate", "--data", "second.csv", "--model", exported, "--n-boot", "20",
                 "--out", tmp_path / "elsewhere.json")
    assert result.exit_code == 0, result.output
    assert "not linked to a model version" in result.output
    assert json.loads((tmp_path / "elsewhere.json").read_text())["tracking"]["run_id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--data", "nowhere.csv"], "nowhere.csv"),
        (["evaluate", "--data", "second.csv", "--out", "metrics.txt"], ".json"),
        (["evaluate", "--data", "unlabelled.csv"], "crs_max_grade"),
        (["evaluate", "--data", "second.csv", "--model", "models:/crs-severe/77"], "loaded"),
        (["report", "--out", "report.pdf"], ".html"),
        (["recalibrate", "--data", "unlabelled.csv"], "crs_max_grade"),
    ],
)
def test_unusable_input_exits_2_with_one_sentence(env, args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "error:" in result.output


def test_recalibrate_registers_a_challenger_and_the_report_says_so(env, tmp_path):
    from crsrisk.mlops.loading import load_model
    from crsrisk.modeling.riskmodel import Recalibrated

    folder, client = env
    result = run("recalibrate", "--data", "second.csv", "--site", "site B", "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "after (3-fold CV)" in result.output
    version = result.stdout.strip().split()[-1]
    assert str(client.get_model_version_by_alias("crs-severe", "challenger").version) == version
    assert str(client.get_model_version_by_alias("crs-severe", "champion").version) == "1"
    tags = client.get_model_version("crs-severe", version).tags
    assert tags["recalibrated_from"] == "crs-severe/1" and "version_in_scores" not in tags
    assert "metric.recal_cv_calibration_slope" in tags
    model = load_model(f"models:/crs-severe/{version}")
    assert isinstance(model.calibrator, Recalibrated) and model.version == version
    assert "SIM-" not in every_text_of_run(client, tags["run_id"], tmp_path)

    report = folder / "recalibrated.html"
    result = run("report", "--model", f"models:/crs-severe/{version}", "--out", report)
    assert result.exit_code == 0, result.output
    document = report.read_text()
    assert "was <b>recalibrated</b> from crs-severe/1 on site B" in document
    assert "Candidates of the training run" in document  # followed back to version 1's run


def test_report_command_with_data(env):
    folder, _ = env
    result = run("report", "--data", "second.csv", "--out", "report.html", "--n-boot", "50")
    assert result.exit_code == 0, result.output
    document = (folder / "report.html").read_text()
    assert document.count('<img src="data:image/png;base64,') >= 7
    assert "report written to report.html" in result.output
