"""External validation and recalibration: metrics with intervals, payload, calibrator, refusals."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.evaluation.recalibration import recalibrate
from crsrisk.evaluation.validation import (
    SUBGROUP_COLUMNS,
    EvaluationError,
    data_description,
    evaluate_model,
    evaluation_payload,
)
from crsrisk.mlops.evaluation_runs import find_version
from crsrisk.modeling.riskmodel import Calibrator, Recalibrated, RiskModel
from crsrisk.simulate.cohort import simulate_cohort


@pytest.fixture(scope="module")
def champion(trained):
    """The shared registered champion, loaded once."""
    return trained.load()


@pytest.fixture(scope="module")
def external():
    """A second simulated cohort (another seed): validated rows and labels."""
    valid = validate(simulate_cohort(1500, seed=2).baseline).valid
    return valid, resolve_labels(valid).severe


@pytest.fixture(scope="module")
def evaluation(champion, external):
    valid, severe = external
    return evaluate_model(champion, valid, severe, n_boot=200, seed=1)


def test_metrics_have_intervals_around_the_estimate(evaluation):
    table = evaluation.metrics.set_index("metric")
    for name in ("auroc", "brier", "log_loss", "calibration_slope", "calibration_intercept"):
        row = table.loc[name]
        assert row["lower"] <= row["estimate"] <= row["upper"], name
        assert row["n_resamples"] == 200
    assert 0.6 < table.loc["auroc", "estimate"] < 1
    assert {"sensitivity_high", "npv_low"} <= set(table.index)


def test_published_scores_are_compared_cross_fitted(evaluation):
    assert set(evaluation.comparators) == {"m_easix", "easix", "car_hematotox"}
    for name, risk in evaluation.comparator_risk.items():
        assert risk.shape == evaluation.y.shape and np.all((risk > 0) & (risk < 1)), name
    strategies = set(evaluation.decision["strategy"])
    assert {"model", "m_easix", "treat all", "treat none"} <= strategies


def test_subgroups_cover_the_fairness_variables(evaluation):
    assert set(evaluation.subgroups["variable"]) == set(SUBGROUP_COLUMNS)


def test_payload_is_strict_json_without_patient_data(evaluation, champion, external):
    valid, severe = external
    data = data_description(valid, severe, {"input_file": "second.csv",
                                            "mapping_fingerprint": "none"})
    payload = evaluation_payload(evaluation, champion, "models:/crs-severe/1", data)
    text = json.dumps(payload, allow_nan=False)  # NaN would not be valid JSON
    assert "SIM-" not in text
    assert payload["model"]["version"] == "1"
    assert payload["data"]["rows_valid"] == len(valid) and payload["data"]["simulated"] is True
    auroc = payload["metrics"]["auroc"]
    assert auroc["lower"] <= auroc["estimate"] <= auroc["upper"]
    assert payload["comparators"]["m_easix"]["auroc"]["estimate"] > 0.5
    assert payload["decision_curve"][0]["threshold"] == pytest.approx(0.02)


def test_a_cohort_without_events_is_refused(champion, external):
    valid, severe = external
    with pytest.raises(EvaluationError, match="both outcomes"):
        evaluate_model(champion, valid, severe * 0, n_boot=10)


# -- recalibration ----------------------------------------------------------------------------


def test_recalibrated_composes_with_the_base_calibrator_and_pickles():
    rng = np.random.default_rng(0)
    margin = rng.normal(-2, 1, 400)
    y = (rng.random(400) < expit(margin)).astype(int)
    base = Calibrator("sigmoid").fit(margin, y)
    same = Recalibrated(base, 0.0, 1.0)
    np.testing.assert_allclose(same.predict(margin), base.predict(margin), rtol=1e-9)
    shifted = Recalibrated(base, 0.5, 0.8, cohort="site B")
    expected = expit(0.5 + 0.8 * logit(base.predict(margin)))
    np.testing.assert_allclose(shifted.predict(margin), expected, rtol=1e-9)
    assert shifted.method == "sigmoid + logistic recalibration"
    twice = Recalibrated(shifted, 0.1, 1.0)
    assert twice.method.count("recalibration") == 2
    restored = pickle.loads(pickle.dumps(twice))
    np.testing.assert_allclose(restored.predict(margin), twice.predict(margin))


def _miscalibrated(model: RiskModel, shift: float) -> RiskModel:
    import dataclasses

    return dataclasses.replace(model, calibrator=Recalibrated(model.calibrator, shift, 1.0))


def test_recalibration_repairs_calibration_in_the_large(champion, external):
    valid, severe = external
    # A site where the model overestimates risk: odds x e^1.
    inflated = _miscalibrated(champion, 1.0)
    result = recalibrate(inflated, valid, severe, cohort="site B", folds=5)
    assert result.before["calibration_intercept"] < -0.7
    assert abs(result.after_cv["calibration_intercept"]) < 0.2
    assert result.after_cv["log_loss"] < result.before["log_loss"]
    assert result.after_apparent["calibration_slope"] == pytest.approx(1.0, abs=1e-3)
    new = result.model
    assert isinstance(new.calibrator, Recalibrated) and new.calibrator.cohort == "site B"
    assert new.info["candidate"].endswith("+recalibrated")
    assert new.info["recalibrated_from"] == f"{champion.name}/{champion.version}"
    assert new.adapter is champion.adapter  # only calibration changes
    np.testing.assert_allclose(new.margin(valid), champion.margin(valid))
    assert new.risk(valid).mean() == pytest.approx(severe.mean(), abs=0.01)


def test_recalibration_refuses_a_model_that_does_not_rank(champion, external):
    valid, _ = external
    # Outcomes more likely the lower the model's risk: a site where it ranks backwards.
    risk = champion.risk(valid)
    chance = expit(-2 - 1.5 * (logit(risk) - logit(risk).mean()))
    flips = np.random.default_rng(0).random(len(risk)) < chance
    reversed_labels = pd.Series(flips.astype(int), index=valid.index)
    with pytest.raises(EvaluationError, match="does not rank"):
        recalibrate(champion, valid, reversed_labels, cohort="x")


def test_recalibration_needs_enough_events(champion, external):
    valid, severe = external
    few = severe.copy() * 0
    few.iloc[:5] = 1
    with pytest.raises(EvaluationError, match="rarer outcome"):
        recalibrate(champion, valid, few, cohort="x")


# -- finding the registered version -------------------------------------------------------------


def test_find_version_by_uri_alias_and_fingerprint(trained, champion):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained.uri, trained.uri)
    ref, _ = find_version(client, "models:/crs-severe@champion", champion)
    assert (ref.name, ref.version) == ("crs-severe", "1") and ref.experiment_id
    ref, how = find_version(client, "/some/exported/dir", champion)
    assert ref is not None and "fingerprint" in how
    other = RiskModel(**{**champion.__dict__, "info": {**champion.info, "data_sha256": "x"}})
    ref, how = find_version(client, "/some/exported/dir", other)
    assert ref is None and "different model" in how
    ref, how = find_version(client, "models:/crs-severe/99", champion)
    assert ref is None and "not in this tracking store" in how
