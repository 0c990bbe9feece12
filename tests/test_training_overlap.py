"""`crsrisk evaluate` on rows the model was trained on: counted, refused, or labelled apparent."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.contract.fingerprint import row_hashes
from crsrisk.contract.validate import validate
from crsrisk.evaluation.validation import (
    APPARENT,
    EXTERNAL,
    EvaluationError,
    evaluate_model,
    rows_seen_in_training,
)
from crsrisk.simulate.cohort import simulate_cohort

runner = CliRunner()


def test_row_hashes_match_the_same_rows_whatever_the_file_id_or_order(tmp_path) -> None:
    baseline = simulate_cohort(300, seed=4).baseline
    baseline.to_csv(tmp_path / "c.csv", index=False)
    baseline.to_parquet(tmp_path / "c.parquet", index=False)
    from_csv = validate(pd.read_csv(tmp_path / "c.csv", dtype="str")).valid
    from_parquet = validate(pd.read_parquet(tmp_path / "c.parquet")).valid
    hashes = row_hashes(from_parquet)
    assert len(set(hashes)) == 300 and all(len(h) == 16 for h in hashes)
    assert list(row_hashes(from_csv)) == list(hashes)
    renamed = from_parquet.assign(patient_id="OTHER-" + from_parquet["patient_id"])
    assert list(row_hashes(renamed.iloc[::-1])) == list(hashes[::-1])
    changed = from_parquet.copy()
    changed.loc[changed.index[0], "crp_mg_l"] = 999.0
    assert row_hashes(changed)[0] != hashes[0] and list(row_hashes(changed)[1:]) == list(
        hashes[1:])
    with pytest.raises(ValueError, match="missing columns"):
        row_hashes(from_parquet.drop(columns=["crp_mg_l"]))


@pytest.fixture(scope="module")
def champion(trained):
    return trained.load()


@pytest.fixture(scope="module")
def training_rows(trained):
    valid = validate(trained.cohort.baseline).valid
    from crsrisk.contract.grading import resolve_labels

    return valid, resolve_labels(valid).severe


def test_the_model_records_its_training_rows(champion, training_rows) -> None:
    valid, _ = training_rows
    recorded = champion.info["training_row_hashes"]
    assert isinstance(recorded, list) and all(isinstance(h, str) for h in recorded)
    assert len(recorded) == len(valid)
    assert rows_seen_in_training(champion, valid) == len(valid)
    other = validate(simulate_cohort(500, seed=2).baseline).valid
    assert rows_seen_in_training(champion, other) == 0


def test_evaluating_on_training_rows_is_refused_unless_allowed(champion, training_rows) -> None:
    valid, severe = training_rows
    with pytest.raises(EvaluationError, match="were seen in training"):
        evaluate_model(champion, valid, severe, n_boot=20, comparators=False, subgroups=False)
    apparent = evaluate_model(champion, valid, severe, n_boot=20, comparators=False,
                              subgroups=False, allow_training_rows=True)
    assert apparent.validation == APPARENT
    assert apparent.rows_seen_in_training == len(valid)
    assert any(APPARENT in note for note in apparent.notes)


def test_a_few_training_rows_are_counted_not_refused(champion, training_rows) -> None:
    valid, severe = training_rows
    other = validate(simulate_cohort(1000, seed=2).baseline)
    from crsrisk.contract.grading import resolve_labels

    mixed = pd.concat([valid.iloc[:100], other.valid], ignore_index=True)
    labels = pd.concat([severe.iloc[:100], resolve_labels(other.valid).severe],
                       ignore_index=True)
    result = evaluate_model(champion, mixed, labels, n_boot=20, comparators=False,
                            subgroups=False)
    assert result.validation == EXTERNAL and result.rows_seen_in_training == 100
    assert any(note.startswith("100 of 1,100 rows (9%) were seen in training")
               for note in result.notes)


@pytest.fixture
def store(trained, tmp_path, monkeypatch):
    import mlflow

    shutil.copy(trained.folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained.cohort.baseline.to_csv(tmp_path / "training.csv", index=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return tmp_path, MlflowClient(uri, uri)


def test_cli_refuses_training_rows_with_exit_2(store) -> None:
    result = runner.invoke(app, ["evaluate", "--data", "training.csv", "--n-boot", "20",
                                 "--no-log"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "2,000 of 2,000 rows (100%) were seen in training" in result.output
    assert "--allow-training-rows" in result.output


def test_cli_says_apparent_everywhere_when_allowed(store) -> None:
    folder, client = store
    result = runner.invoke(app, ["evaluate", "--data", "training.csv", "--n-boot", "20",
                                 "--out", "metrics.json", "--allow-training-rows"])
    assert result.exit_code == 0, result.output
    assert f"warning: {APPARENT}" in result.output
    payload = json.loads((folder / "metrics.json").read_text())
    assert payload["data"]["validation"] == APPARENT
    assert payload["data"]["rows_seen_in_training"] == 2000
    assert any(APPARENT in note for note in payload["notes"])
    tags = client.get_run(payload["tracking"]["run_id"]).data.tags
    assert tags["validation"] == APPARENT


def test_cli_explains_every_n_a(store, champion, monkeypatch) -> None:
    import dataclasses

    import crsrisk.mlops.loading
    from crsrisk.modeling.riskmodel import Tiers

    folder, _ = store
    # A low threshold of 0 leaves no patient below it: the NPV there is undefined.
    lowered = dataclasses.replace(champion, tiers=Tiers(0.0, champion.tiers.high))
    monkeypatch.setattr(crsrisk.mlops.loading, "load_model", lambda _uri: lowered)
    simulate_cohort(600, seed=9).baseline.to_csv(folder / "other.csv", index=False)
    result = runner.invoke(app, ["evaluate", "--data", "other.csv", "--n-boot", "20",
                                 "--no-log", "--out", "m.json"])
    assert result.exit_code == 0, result.output
    assert "npv_low               n/a (no patient below the low threshold (0.000))" in (
        result.output)
    payload = json.loads((folder / "m.json").read_text())
    assert payload["metrics"]["npv_low"]["estimate"] is None
    for name, metric in payload["metrics"].items():
        if metric["estimate"] is None:
            assert any(note.startswith(f"{name} n/a: ") for note in payload["notes"]), name
