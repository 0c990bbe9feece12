"""Bootstrap refits for per-patient intervals, through each model type's adapter."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

from crsrisk.contract.validate import validate
from crsrisk.features.builder import FeatureBuilder
from crsrisk.modeling.adapters import LogisticAdapter, XGBoostAdapter
from crsrisk.modeling.uncertainty import _resamples
from crsrisk.simulate.cohort import simulate_cohort


@pytest.fixture(scope="module")
def development():
    valid = validate(simulate_cohort(400, seed=5).baseline).valid
    y = np.asarray(valid["crs_max_grade"].to_numpy() >= 3, dtype=int)
    return valid, y


def test_xgboost_refits_side_by_side_equal_refits_one_at_a_time(development):
    valid, y = development
    features = FeatureBuilder(kind="tree").fit(valid, y)
    design = features.transform(valid)
    settings = dict(n_estimators=20, max_depth=2, subsample=0.8, tree_method="hist",
                    enable_categorical=True, max_cat_to_onehot=1, random_state=0)
    fitted = xgb.XGBClassifier(**settings, n_jobs=1).fit(design, y)
    adapter = XGBoostAdapter(features, fitted.get_booster())
    resamples = _resamples(y, 4, np.random.default_rng(0))
    alone = adapter.refits(xgb.XGBClassifier(**settings, n_jobs=1), design, y, resamples)
    paired = adapter.refits(xgb.XGBClassifier(**settings, n_jobs=2), design, y, resamples)
    assert len(paired) == 4
    for a, b in zip(alone, paired, strict=True):
        np.testing.assert_array_equal(a.margin, b.margin)
    # Refits differ from each other: each saw its own resample.
    assert not np.array_equal(alone[0].margin, alone[1].margin)
    form = adapter.spread_form(design, adapter.margin(design),
                               np.log(np.vstack([r.margin for r in alone]).std(axis=0, ddof=1)),
                               alone, seed=0)
    assert form["method"] == "emulator" and form["emulator"]


def test_logistic_refits_keep_coefficients_for_an_exact_spread(development):
    valid, y = development
    features = FeatureBuilder(kind="linear").fit(valid, y)
    design = features.transform(valid)
    fitted = LogisticRegression(C=0.3, max_iter=5000).fit(design, y)
    adapter = LogisticAdapter(features, fitted.coef_, float(fitted.intercept_[0]))
    resamples = _resamples(y, 3, np.random.default_rng(1))
    refits = adapter.refits(LogisticRegression(C=0.3, max_iter=5000), design, y, resamples)
    assert all(r.coefficients.shape == (design.shape[1] + 1,) for r in refits)
    form = adapter.spread_form(design, adapter.margin(design), np.zeros(len(y)), refits, 0)
    assert form["method"] == "linear" and form["covariance"].shape == (design.shape[1] + 1,) * 2


def test_resamples_hold_both_outcomes():
    y = np.r_[np.zeros(38, dtype=int), 1, 1]
    for rows in _resamples(y, 20, np.random.default_rng(2)):
        assert 0 < y[rows].sum() < len(rows)
