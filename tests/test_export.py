"""Exported model folders: offline scoring, and one-sentence refusals of anything tampered."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.contract.validate import validate
from crsrisk.errors import ModelError
from crsrisk.io import read_table
from crsrisk.mlops.export import (
    MANIFEST,
    RISK_MODEL_FOLDER,
    SIGNING_KEY_VARIABLE,
    ExportError,
    export_model,
    verify,
)
from crsrisk.mlops.loading import load_model
from crsrisk.mlops.pyfunc import to_wire
from crsrisk.scoring.core import score
from tests.conftest import baseline_frame
from tests.test_riskmodel import pickles_in, plant_pickle

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
    assert {"MLmodel", "artifacts/risk_model/booster.ubj",
            "artifacts/risk_model/model.json"} <= set(manifest["files"])
    assert "signature" not in manifest  # no CRSRISK_SIGNING_KEY: checksums only
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


# -- no pickle in a model ---------------------------------------------------------------------

MLFLOW_PICKLE = "python_model.pkl"


def test_the_risk_model_folder_holds_no_pickle(exported, trained):
    folder, manifest, _ = exported
    assert pickles_in(folder / RISK_MODEL_FOLDER) == []
    assert {n for n in manifest["files"] if n.startswith("artifacts/risk_model/")} == {
        "artifacts/risk_model/booster.ubj", "artifacts/risk_model/model.json"}
    registered = [p for p in (trained.folder / "mlartifacts").rglob("risk_model") if p.is_dir()]
    assert registered
    for risk_model in registered:
        assert pickles_in(risk_model) == []


@pytest.mark.parametrize("where", ["exported model", "registry artefacts"])
def test_no_pickle_anywhere_in_a_model_artefact(where, exported, trained):
    folder = exported[0] if where == "exported model" else trained.folder / "mlartifacts"
    # The PythonModel is logged as code (models from code), so not even MLflow's own
    # python_model.pkl is there.
    assert pickles_in(folder) == []


def test_planted_pickle_in_an_export_is_refused_without_running(copy, tmp_path):
    marker = tmp_path / "ran"
    planted = copy / RISK_MODEL_FOLDER / "risk_model.joblib"
    plant_pickle(planted, marker)
    with pytest.raises(ExportError) as exc:
        load_model(copy)
    assert "risk_model.joblib is not in the export's manifest" in one_sentence(exc)
    # Whoever can write the folder can recompute its checksums: the loader still refuses.
    manifest = json.loads((copy / MANIFEST).read_text())
    name = (RISK_MODEL_FOLDER / "risk_model.joblib").as_posix()
    manifest["files"][name] = hashlib.sha256(planted.read_bytes()).hexdigest()
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert verify(copy)
    with pytest.raises(ModelError) as exc:
        load_model(copy)
    assert "risk_model.joblib is not part of a saved crsrisk model" in one_sentence(exc)
    assert not marker.exists()


# -- signed exports -----------------------------------------------------------------------------

KEY = "test-signing-key-7f3a9c"


@pytest.fixture(scope="module")
def signed(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed") / "crs-severe-v1"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        patch.setenv(SIGNING_KEY_VARIABLE, KEY)
        manifest = export_model(trained.model_uri, folder)
    return folder, manifest


@pytest.fixture
def signed_copy(signed, tmp_path):
    target = tmp_path / "signed"
    shutil.copytree(signed[0], target)
    return target


def _hmac(manifest: dict, key: str) -> str:
    """The documented recipe: HMAC-SHA256 of the manifest without its signature, as canonical
    JSON (sorted keys, no spaces)."""
    content = {k: v for k, v in manifest.items() if k != "signature"}
    message = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def test_signed_export_loads_and_scores_with_its_key(signed, exported, offline, monkeypatch):
    folder, manifest = signed
    assert manifest["signature"] == {"algorithm": "HMAC-SHA256", "value": _hmac(manifest, KEY)}
    monkeypatch.setenv(SIGNING_KEY_VARIABLE, KEY)
    got, _ = score(baseline_frame(2), folder)
    expected, _ = score(baseline_frame(2), exported[2])
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("another-key", "does not match its signature"),
        (None, "is signed: set CRSRISK_SIGNING_KEY"),
        ("  ", "CRSRISK_SIGNING_KEY is set but empty"),
    ],
    ids=["wrong key", "no key", "empty key"],
)
def test_signed_export_needs_its_key(signed_copy, monkeypatch, key, words):
    if key is None:
        monkeypatch.delenv(SIGNING_KEY_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SIGNING_KEY_VARIABLE, key)
    with pytest.raises(ExportError) as exc:
        load_model(signed_copy)
    assert words in one_sentence(exc)


@pytest.mark.parametrize("forged", ["old signature kept", "signature removed"])
def test_recomputed_manifest_without_the_key_is_refused(signed_copy, tmp_path, monkeypatch,
                                                         forged):
    marker = tmp_path / "ran"
    planted = signed_copy / RISK_MODEL_FOLDER / "model.json"
    plant_pickle(planted, marker)  # the model's own file swapped for a pickle
    manifest = json.loads((signed_copy / MANIFEST).read_text())
    manifest["files"][(RISK_MODEL_FOLDER / "model.json").as_posix()] = hashlib.sha256(
        planted.read_bytes()).hexdigest()
    if forged == "signature removed":
        del manifest["signature"]
    (signed_copy / MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setenv(SIGNING_KEY_VARIABLE, KEY)
    with pytest.raises(ExportError) as exc:
        load_model(signed_copy)
    words = "does not match its signature" if forged == "old signature kept" else "not signed"
    assert words in one_sentence(exc)
    assert not marker.exists()


def test_unsigned_export_is_refused_when_a_key_is_set(copy, monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_VARIABLE, KEY)
    with pytest.raises(ExportError) as exc:
        load_model(copy)
    assert "is not signed but CRSRISK_SIGNING_KEY is set" in one_sentence(exc)


def test_planted_pickle_stops_the_mlflow_model_too(copy, tmp_path):
    """The registry's path: MLflow loads the PythonModel, whose load_context loads the folder."""
    marker = tmp_path / "ran"
    plant_pickle(copy / RISK_MODEL_FOLDER / "risk_model.joblib", marker)
    with pytest.raises(ModelError, match="risk_model.joblib is not part of a saved crsrisk model"):
        mlflow.pyfunc.load_model(str(copy))
    assert not marker.exists()
