"""Exported model folders: offline scoring, and one-sentence refusals of anything tampered."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.contract.validate import validate
from crsrisk.io import read_table
from crsrisk.mlops.export import MANIFEST, ExportError, export_model, verify
from crsrisk.mlops.loading import load_model
from crsrisk.mlops.pyfunc import to_wire
from crsrisk.scoring.core import score
from tests.conftest import baseline_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "crs-severe-v1"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        manifest = export_model(trained.model_uri, folder)
        registered = load_model(trained.model_uri)
    return folder, manifest, registered


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No tracking store: MLFLOW_TRACKING_URI names a database that does not exist."""
    nowhere = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{nowhere}")
    yield
    assert not nowhere.exists()


@pytest.fixture
def copy(exported, tmp_path):
    """A fresh copy of the export, to damage."""
    target = tmp_path / "copy"
    shutil.copytree(exported[0], target)
    return target


def one_sentence(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_manifest_lists_every_file_with_its_checksum(exported):
    folder, manifest, registered = exported
    assert manifest["contract_version"] == registered.contract_version == "1"
    assert manifest["model_version"] == str(registered.version)
    assert {"MLmodel", "artifacts/risk_model/booster.ubj"} <= set(manifest["files"])
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert verify(folder) == json.loads((folder / MANIFEST).read_text())


def test_exported_model_scores_offline_like_the_registered_one(exported, offline):
    folder, _, registered = exported
    table = baseline_frame(3)
    got, _ = score(table, folder)
    expected, _ = score(table, registered)
    pd.testing.assert_frame_equal(got, expected)
    # It is a plain MLflow model folder too.
    wire = to_wire(validate(table).valid)
    pyfunc = mlflow.pyfunc.load_model(str(folder)).predict(wire)
    np.testing.assert_allclose(pyfunc["risk"], expected["risk"], rtol=0, atol=1e-12)


def test_flipped_byte_is_refused_naming_the_file(copy):
    booster = copy / "artifacts" / "risk_model" / "booster.ubj"
    data = bytearray(booster.read_bytes())
    data[len(data) // 2] ^= 0x01
    booster.write_bytes(bytes(data))
    with pytest.raises(ExportError) as exc:
        load_model(copy)
    assert "booster.ubj does not match its checksum" in one_sentence(exc)


def test_other_contract_version_is_refused(copy):
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["contract_version"] = "2"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError) as exc:
        load_model(copy)
    assert "built for data contract version 2" in one_sentence(exc)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda f: (f / MANIFEST).unlink(), "has no crsrisk-manifest.json"),
        (lambda f: (f / MANIFEST).write_text("{not json"), "is corrupted"),
        (lambda f: (f / MANIFEST).write_text('{"files": {"../x": "0"}}'), "is corrupted"),
        (lambda f: (f / "MLmodel").unlink(), "lacks MLmodel"),
        (lambda f: (f / "artifacts" / "extra.py").write_text("import os"), "not in the"),
    ],
    ids=["no manifest", "corrupt manifest", "escaping path", "missing file", "added file"],
)
def test_damaged_exports_are_refused_in_one_sentence(copy, damage, words):
    damage(copy)
    with pytest.raises(ExportError) as exc:
        verify(copy)
    assert words in one_sentence(exc)


def test_export_never_overwrites(exported, trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    with pytest.raises(ExportError, match="already exists"):
        export_model(trained.model_uri, exported[0])


def test_cli_export_then_score_offline(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    folder = tmp_path / "models" / "v1"
    result = runner.invoke(app, ["export", "--model", trained.model_uri, "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert "exported crs-severe version 1" in result.output
    source = tmp_path / "in.csv"
    baseline_frame(2).to_csv(source, index=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    result = runner.invoke(app, ["score", str(source), "--out", str(tmp_path / "s.csv"),
                                 "--model", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(read_table(tmp_path / "s.csv")) == 6
    assert not (tmp_path / "absent.db").exists()
