"""RiskModel as data: one adapter per model type, saved without pickle, reloaded bit for bit."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.errors import EnvironmentFault, ModelError
from crsrisk.modeling.adapters import fitted_adapter
from crsrisk.modeling.calibration import Calibrator, Recalibrated, calibrator_from_dict
from crsrisk.modeling.riskmodel import MODEL_FILE, TIERS, RiskModel, Tiers
from crsrisk.modeling.tiers import ActionTiers
from crsrisk.modeling.train import (
    COMPARATORS,
    cv_folds,
    fit_candidate,
    make_estimator,
    planning_texts,
    xgboost_trials,
)
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import fast_config

KINDS = ("xgboost", "logistic", *COMPARATORS)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class _Planted:
    """Unpickling this creates ``marker``: a stand-in for code a planted pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_pickle(target: Path, marker: Path) -> None:
    """Write at ``target`` a pickle whose loading would create ``marker``."""
    target.write_bytes(pickle.dumps(_Planted(marker)))


def pickles_in(folder: Path) -> list[str]:
    """Files under ``folder`` named or shaped like a pickle (protocol 2+ opens with 0x80)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            head = handle.read(2)
        if path.suffix in PICKLE_SUFFIXES or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03"
                                               b"\x04\x05"):
            found.append(path.relative_to(folder).as_posix())
    return found


@pytest.fixture(scope="module")
def cohort():
    valid = validate(simulate_cohort(900, seed=4).baseline).valid
    return valid, resolve_labels(valid).severe.to_numpy().astype(int)


@pytest.fixture(scope="module")
def models(cohort) -> dict[str, RiskModel]:
    """One fitted RiskModel per model type, with training's own estimators."""
    valid, y = cohort
    fitted = {}
    for kind in KINDS:
        params = {"xgboost": xgboost_trials(1, 0)[0],
                  "logistic": {"C": 0.3, "splines": True}}.get(kind, {})
        adapter = fitted_adapter(kind, make_estimator(kind, params, 0).fit(valid, y))
        margin = adapter.margin(adapter.design(valid))
        fitted[kind] = RiskModel(
            adapter=adapter, calibrator=Calibrator("sigmoid").fit(margin, y),
            tiers=Tiers(0.05, 0.2), planning={"high": "Tocilizumab on hand | ICU bed"},
            name="crs-test", version="7",
            info={"candidate": kind, "training_rows": ["a1", "b2"], "note": None},
        )
    return fitted


def _scores_equal(a: RiskModel, b: RiskModel, valid: pd.DataFrame) -> None:
    np.testing.assert_array_equal(a.margin(valid), b.margin(valid))
    pd.testing.assert_frame_equal(a.score(valid), b.score(valid), check_exact=True)
    pd.testing.assert_frame_equal(a.score(valid, drivers=False), b.score(valid, drivers=False),
                                  check_exact=True)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_scores_bit_identically(kind, models, cohort, tmp_path):
    valid, _ = cohort
    model = models[kind]
    loaded = RiskModel.load(model.save(tmp_path / "m"))
    assert loaded.kind == model.kind == kind
    assert (loaded.name, loaded.version, loaded.info) == ("crs-test", "7", model.info)
    assert loaded.planning == model.planning and loaded.tiers == model.tiers
    _scores_equal(model, loaded, valid)
    contributions = loaded.contributions(valid)
    np.testing.assert_array_equal(contributions.values, model.contributions(valid).values)
    assert pickles_in(tmp_path / "m") == []
    expected = {MODEL_FILE, "booster.ubj"} if kind == "xgboost" else {MODEL_FILE}
    assert {p.name for p in (tmp_path / "m").iterdir()} == expected


@pytest.mark.parametrize("kind", ["xgboost", "logistic"])
def test_isotonic_and_recalibrated_calibrators_reload_exactly(kind, models, cohort, tmp_path):
    valid, y = cohort
    model = models[kind]
    isotonic = Calibrator("isotonic").fit(model.margin(valid), y)
    recalibrated = Recalibrated(Recalibrated(isotonic, 0.3, 0.9, "site B"), -0.1, 1.1, "site C")
    for calibrator in (isotonic, recalibrated):
        original = RiskModel(**{**model.__dict__, "calibrator": calibrator})
        folder = tmp_path / calibrator.method.replace(" ", "_")
        loaded = RiskModel.load(original.save(folder))
        assert loaded.calibrator.method == calibrator.method
        _scores_equal(original, loaded, valid)
    assert loaded.calibrator.base.cohort == "site B"


def test_isotonic_calibrator_predicts_as_scikit_learn(cohort, models):
    valid, y = cohort
    margin = models["logistic"].margin(valid)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, y)
    wide = np.r_[margin, margin.min() - 3, margin.max() + 3, np.linspace(-8, 4, 50)]
    ours = Calibrator("isotonic").fit(margin, y)
    np.testing.assert_array_equal(ours.predict(wide),
                                  np.clip(reference.predict(wide), 1e-6, 1 - 1e-6))
    data = json.loads(json.dumps(ours.to_dict()))
    np.testing.assert_array_equal(calibrator_from_dict(data).predict(wide), ours.predict(wide))


def test_logistic_margin_is_scikit_learns_decision_function(cohort):
    valid, y = cohort
    pipeline = make_estimator("logistic", {"C": 0.3, "splines": True}, 0).fit(valid, y)
    adapter = fitted_adapter("logistic", pipeline)
    # Summed term by term (chunk-size independent), so equal to BLAS up to rounding only.
    np.testing.assert_allclose(adapter.margin(adapter.design(valid)),
                               pipeline.decision_function(valid), rtol=0, atol=1e-12)


def test_xgboost_margin_is_the_classifiers(cohort):
    valid, y = cohort
    pipeline = make_estimator("xgboost", xgboost_trials(1, 0)[0], 0).fit(valid, y)
    adapter = fitted_adapter("xgboost", pipeline)
    proba = pipeline.predict_proba(valid)[:, 1]
    margin = adapter.margin(adapter.design(valid))
    np.testing.assert_allclose(1 / (1 + np.exp(-margin.astype(float))), proba, rtol=1e-6)


def test_kind_is_a_read_only_name(models):
    model = models["xgboost"]
    assert model.kind == "xgboost" and models["easix"].kind == "easix"
    with pytest.raises(AttributeError):
        model.kind = "logistic"


def test_planted_pickle_is_refused_without_running_it(models, tmp_path):
    marker = tmp_path / "ran"
    probe = tmp_path / "probe.pkl"
    plant_pickle(probe, tmp_path / "probe-ran")
    pickle.loads(probe.read_bytes())
    assert (tmp_path / "probe-ran").exists()  # the payload does run when unpickled
    for name in ("risk_model.joblib", "python_model.pkl", "model.json.bak"):
        folder = models["logistic"].save(tmp_path / name)
        plant_pickle(folder / name, marker)
        with pytest.raises(ModelError) as exc:
            RiskModel.load(folder)
        message = str(exc.value)
        assert f"{folder / name} is not part of a saved crsrisk model" in message
        assert "\n" not in message and message.endswith(".")
        assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda f: (f / "booster.ubj").unlink(), "lacks booster.ubj, which a xgboost model"),
        (lambda f: (f / MODEL_FILE).unlink(), "lacks model.json"),
        (lambda f: (f / MODEL_FILE).write_text("{not json"), "is not a valid crsrisk model"),
        (lambda f: (f / "sub").mkdir(), "sub is not part of a saved crsrisk model"),
        (lambda f: (f / "booster.ubj").write_bytes(b"{garbage"), "is not an XGBoost model"),
    ],
    ids=["no booster", "no model.json", "corrupt json", "a folder", "corrupt booster"],
)
def test_damaged_model_folders_are_refused_in_one_sentence(models, tmp_path, damage, words):
    folder = models["xgboost"].save(tmp_path / "m")
    damage(folder)
    with pytest.raises(ModelError) as exc:
        RiskModel.load(folder)
    message = str(exc.value)
    assert words in message and "\n" not in message and message.endswith(".")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.update(format_version=2), "format version 2"),
        (lambda d: d.update(kind="forest"), "unknown model type 'forest'"),
        (lambda d: d["adapter"].update(coef=[1.0]), "coefficients for"),
        (lambda d: d["calibrator"].update(method="magic"), "unknown calibration method"),
        (lambda d: d["tiers"].update(low=0.9, high=0.1), "0 <= low <= high <= 1"),
        (lambda d: d["adapter"]["features"]["category_levels"].update(product=["x"]),
         "unknown or unordered levels of product"),
    ],
    ids=["format", "kind", "coefficients", "calibrator", "tiers", "levels"],
)
def test_edited_model_json_is_refused(models, tmp_path, edit, words):
    folder = models["logistic"].save(tmp_path / "m")
    document = json.loads((folder / MODEL_FILE).read_text())
    edit(document)
    (folder / MODEL_FILE).write_text(json.dumps(document))
    with pytest.raises(ModelError, match="is not a valid crsrisk model") as exc:
        RiskModel.load(folder)
    assert words in str(exc.value)
    # A damaged copy is the machine's fault, not the user's input: the CLI exits 3 for it.
    assert isinstance(exc.value, EnvironmentFault)


def test_a_booster_of_other_features_is_refused(models, cohort, tmp_path):
    valid, y = cohort
    folder = models["xgboost"].save(tmp_path / "m")
    other = make_estimator("xgboost", xgboost_trials(1, 0)[0], 0).fit(valid, y)
    booster = other.named_steps["model"].get_booster()
    booster.feature_names = [f"f{i}" for i in range(booster.num_features())]
    (folder / "booster.ubj").write_bytes(bytes(booster.save_raw("ubj")))
    with pytest.raises(ModelError, match="are not those of the model's feature builder"):
        RiskModel.load(folder)


def test_a_booster_beside_a_logistic_model_is_refused(models, tmp_path):
    folder = models["logistic"].save(tmp_path / "m")
    models["xgboost"].save(tmp_path / "x")
    (folder / "booster.ubj").write_bytes((tmp_path / "x" / "booster.ubj").read_bytes())
    with pytest.raises(ModelError, match="booster.ubj is not part of a saved crsrisk model"):
        RiskModel.load(folder)


def test_save_refuses_a_folder_with_files_and_unjsonable_info(models, tmp_path):
    folder = models["easix"].save(tmp_path / "m")
    with pytest.raises(ModelError, match="already holds files"):
        models["easix"].save(folder)
    odd = RiskModel(**{**models["easix"].__dict__, "info": {"when": object()}})
    with pytest.raises(ModelError, match="cannot be saved as JSON"):
        odd.save(tmp_path / "odd")
    assert not (tmp_path / "odd").exists()


@pytest.mark.parametrize("part", ["planning", "tiers", "action_tiers", "uncertainty",
                                  "version", "name", "calibrator"])
def test_a_built_model_cannot_be_changed(models, part):
    """A model is built once: a new version or part is a new model, the old one unchanged."""
    model = models["logistic"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(model, part, None)
    registered = dataclasses.replace(model, version="8", name="crs-other")
    assert (registered.version, registered.name) == ("8", "crs-other")
    assert (model.version, model.name) == ("7", "crs-test")
    assert registered.adapter is model.adapter and registered.planning == model.planning


def test_a_replaced_version_is_what_scores_and_saves_carry(models, cohort, tmp_path):
    valid, _ = cohort
    registered = dataclasses.replace(models["easix"], version="12")
    scores = registered.score(valid.head(5), drivers=False)
    assert scores["model_version"].eq("12").all() and scores["model_name"].eq("crs-test").all()
    assert RiskModel.load(registered.save(tmp_path / "m")).version == "12"
    assert models["easix"].score(valid.head(5), drivers=False)["model_version"].eq("7").all()


def test_training_builds_each_candidate_complete(cohort, tmp_path):
    """fit_candidate returns the model scoring uses: tiers, planning and action tiers in it."""
    valid, y = cohort
    config = fast_config(tmp_path)
    folds = cv_folds(valid, pd.Series(y, index=valid.index), config)
    model = fit_candidate("easix", valid, y, folds, config).model
    expected = ActionTiers.from_config(config.score)
    assert model.action_tiers == expected
    assert (model.tiers.low, model.tiers.high) == expected.thresholds["CAR-T"]
    assert model.planning == planning_texts(config) and set(model.planning) == set(TIERS)
    assert model.name == config.tracking.model_name and model.top_k == config.drivers_top_k
    scores = model.score(valid.head(40), drivers=False)
    assert scores["planning"].notna().all()
