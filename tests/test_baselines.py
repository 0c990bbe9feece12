"""Published scores against hand-computed values, and the fitted comparator built on them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from crsrisk.contract.validate import validate
from crsrisk.features.published import (
    LOG_SCORE_FLOOR,
    PUBLISHED_SCORES,
    ScoreComparator,
    car_hematotox,
    easix,
    log2_score,
    m_easix,
)
from tests.conftest import baseline_frame
from tests.test_features import synthetic_cohort

# ----------------------------------------------------------------------------------------------
# Scores by hand
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labs() -> pd.DataFrame:
    """Six validated rows with chosen labs (text cells, through the contract)."""
    return validate(
        baseline_frame(
            n_copies=2,
            ldh_u_l=["300", "200", "", "250", "400", "180"],
            crp_mg_l=["25", "4", "6", "10", "", "0"],
            creatinine_mg_dl=["0.9", "1.2", "0.7", "1.0", "0.8", "1.5"],
            platelets_1e9_l=["150", "80", "80", "0", "200", "90"],
        )
    ).valid


def test_m_easix_converts_crp_to_mg_dl(labs):
    got = m_easix(labs)
    # LDH x (CRP mg/L / 10) / platelets; platelets 0 counts as 1.
    expected = [300 * 2.5 / 150, 200 * 0.4 / 80, np.nan, 250 * 1.0 / 1, np.nan, 0.0]
    np.testing.assert_allclose(got.to_numpy(), expected)
    assert got.index.equals(labs.index) and got.dtype == np.float64


def test_easix_uses_creatinine(labs):
    got = easix(labs)
    expected = [
        300 * 0.9 / 150,
        200 * 1.2 / 80,
        np.nan,
        250 * 1.0 / 1,
        400 * 0.8 / 200,
        180 * 1.5 / 90,
    ]
    np.testing.assert_allclose(got.to_numpy(), expected)


def test_log2_score_is_floored_and_keeps_missing():
    got = log2_score(np.array([8.0, 0.0, np.nan]))
    np.testing.assert_allclose(got, [3.0, np.log2(LOG_SCORE_FLOOR), np.nan])


def test_car_hematotox_points_and_boundaries():
    frame = validate(
        baseline_frame(
            n_copies=2,
            platelets_1e9_l=["176", "175", "75", "74", "200", "60"],
            anc_1e9_l=["1.2", "1.19", "3", "3", "0.5", "1.0"],
            hemoglobin_g_dl=["9", "8.9", "12", "12", "8", "8.5"],
            crp_mg_l=["29.9", "30", "5", "5", "40", "100"],
            ferritin_ng_ml=["649", "650", "2000", "2001", "3000", ""],
        )
    ).valid
    got = car_hematotox(frame).to_numpy()
    # row 1: 0; row 2: plt 1 + ANC 1 + Hb 1 + CRP 1 + ferritin 1 = 5; row 3: plt 1 + ferr 1;
    # row 4: plt 2 + ferr 2; row 5: ANC 1 + Hb 1 + CRP 1 + ferr 2; row 6: ferritin missing.
    np.testing.assert_allclose(got, [0, 5, 2, 4, 5, np.nan])


def test_car_hematotox_is_missing_when_any_component_is(tiny_valid):
    got = car_hematotox(tiny_valid).to_numpy()
    # P1: plt 150 (1) + CRP 25 (0) + ferritin 800 (1); P2: plt 190, ferritin 300 -> 0;
    # P3 lacks ANC, haemoglobin and ferritin.
    np.testing.assert_allclose(got, [2, 0, np.nan])


@pytest.fixture(scope="module")
def tiny_valid() -> pd.DataFrame:
    return validate(baseline_frame()).valid


def test_published_scores_registry(labs):
    assert set(PUBLISHED_SCORES) == {"m_easix", "easix", "car_hematotox"}
    for name, score in PUBLISHED_SCORES.items():
        values = score(labs)
        assert isinstance(values, pd.Series) and len(values) == len(labs), name


def test_scores_name_a_missing_column(labs):
    with pytest.raises(ValueError, match="crp_mg_l"):
        m_easix(labs.drop(columns="crp_mg_l"))


# ----------------------------------------------------------------------------------------------
# The fitted comparator
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, np.ndarray]:
    return synthetic_cohort(n=600, seed=11)


@pytest.mark.parametrize("score", sorted(PUBLISHED_SCORES))
def test_comparator_in_cross_validation(cohort, score):
    valid, y = cohort
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    proba = cross_val_predict(
        ScoreComparator(score=score), valid, y, cv=folds, method="predict_proba"
    )
    assert proba.shape == (len(valid), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("score", sorted(PUBLISHED_SCORES))
def test_comparator_is_monotone_in_the_score(cohort, score):
    valid, y = cohort
    model = ScoreComparator(score=score).fit(valid, y)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    values = PUBLISHED_SCORES[score](valid)
    observed = values.notna().to_numpy()
    order = np.argsort(values.to_numpy()[observed], kind="stable")
    proba = model.predict_proba(valid)[:, 1][observed][order]
    steps = np.diff(proba)
    # The outcome of the synthetic cohort rises with the inflammatory scores.
    if score == "m_easix":
        assert model.coef_[0, 0] > 0
    assert np.all(steps >= -1e-12) or np.all(steps <= 1e-12)
    margin = model.decision_function(valid)
    p = model.predict_proba(valid)[:, 1]
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-margin)), rtol=1e-10)
    np.testing.assert_array_equal(model.predict(valid), (p > 0.5).astype(int))
    np.testing.assert_allclose(p, model.model_.predict_proba(model._design(valid))[:, 1])
    assert model.predict_proba(valid.iloc[:0]).shape == (0, 2)


def test_comparator_imputes_the_training_median(cohort):
    valid, y = cohort
    scored = m_easix(valid)
    train = valid[scored.notna().to_numpy()]
    y_train = y[scored.notna().to_numpy()]
    if len(train) % 2 == 0:  # odd, so the median is an observed row
        train, y_train = train.iloc[1:], y_train[1:]
    model = ScoreComparator("m_easix").fit(train, y_train)
    assert not model.has_indicator_  # no missing score in training: no indicator column
    median_row = int(np.argsort(m_easix(train).to_numpy())[len(train) // 2])
    at_median = train.iloc[[median_row]]
    missing = at_median.assign(crp_mg_l=np.nan)
    np.testing.assert_allclose(
        model.predict_proba(missing), model.predict_proba(at_median), rtol=1e-12
    )
    # With missing scores at fit, an indicator lets "missing" carry its own risk.
    with_missing = ScoreComparator("m_easix").fit(valid, y)
    assert with_missing.has_indicator_ and with_missing.coef_.shape == (1, 2)


def test_comparator_parameters_and_errors(cohort):
    valid, y = cohort
    model = ScoreComparator(score="easix")
    assert clone(model).get_params() == {"score": "easix"}
    with pytest.raises(ValueError, match="unknown score"):
        ScoreComparator(score="ips").fit(valid, y)
    no_ldh = valid.assign(ldh_u_l=np.nan)
    with pytest.raises(ValueError, match="missing for every training row"):
        ScoreComparator("m_easix").fit(no_ldh, y)


@pytest.mark.parametrize("score", sorted(PUBLISHED_SCORES))
def test_comparator_saved_as_data_predicts_the_same_bits(cohort, score):
    valid, y = cohort
    model = ScoreComparator(score).fit(valid, y)
    state = json.loads(json.dumps(model.to_dict()))
    assert state["score"] == score and len(state["coef"]) == 1 + state["has_indicator"]
    restored = ScoreComparator.from_dict(state)
    np.testing.assert_array_equal(restored.decision_function(valid), model.decision_function(valid))
    np.testing.assert_array_equal(restored.predict_proba(valid), model.predict_proba(valid))
    np.testing.assert_array_equal(restored.classes_, model.classes_)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.update(score="ips"), "unknown score 'ips'"),
        (lambda s: s.update(coef=[1.0, 2.0, 3.0]), "coefficients do not match"),
        (lambda s: s.update(scale=float("nan")), "non-finite"),
        (lambda s: s.pop("median"), "median"),
    ],
    ids=["score", "coefficients", "nan", "missing key"],
)
def test_comparator_refuses_a_state_it_did_not_write(cohort, edit, words):
    valid, y = cohort
    state = ScoreComparator("easix").fit(valid, y).to_dict()
    edit(state)
    with pytest.raises(ValueError, match="not a crsrisk score comparator") as exc:
        ScoreComparator.from_dict(state)
    assert words in str(exc.value)
