"""SHAP explanations: additivity, agreement with shap.TreeExplainer, global importance, plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xgboost as xgb  # noqa: E402

from crsrisk.contract.grading import resolve_labels  # noqa: E402
from crsrisk.contract.validate import validate  # noqa: E402
from crsrisk.explain.drivers import (  # noqa: E402
    LINEAR_METHOD,
    TREE_METHOD,
    _grouped,
    beeswarm_figure,
    dependence_figure,
    driver_label,
    explain_global,
    importance_figure,
)
from crsrisk.modeling.adapters import ScoreAdapter, fitted_adapter  # noqa: E402
from crsrisk.modeling.calibration import Calibrator  # noqa: E402
from crsrisk.modeling.riskmodel import RiskModel, Tiers  # noqa: E402
from crsrisk.modeling.train import make_estimator, xgboost_trials  # noqa: E402
from crsrisk.simulate.cohort import simulate_cohort  # noqa: E402

BURDEN = {"tumour_burden", "spd_cm2", "marrow_blasts_pct", "marrow_plasma_cells_pct",
          "bulky_disease"}
PRODUCT = {"product", "costim_domain"}


def fit(kind: str, n: int, seed: int) -> RiskModel:
    """A RiskModel of training's default configuration, fitted on a simulated cohort."""
    valid = validate(simulate_cohort(n, seed=seed).baseline).valid
    y = resolve_labels(valid).severe.to_numpy()
    params = xgboost_trials(1, 0)[0] if kind == "xgboost" else {"C": 0.3, "splines": True}
    adapter = fitted_adapter(kind, make_estimator(kind, params, 0).fit(valid, y))
    calibrator = Calibrator("sigmoid").fit(adapter.margin(adapter.design(valid)), y)
    return RiskModel(adapter=adapter, calibrator=calibrator, tiers=Tiers(0.05, 0.2), planning={})


@pytest.fixture(scope="module")
def tree_model() -> RiskModel:
    return fit("xgboost", 6000, seed=1)


@pytest.fixture(scope="module")
def linear_model() -> RiskModel:
    return fit("logistic", 1500, seed=1)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return validate(simulate_cohort(3000, seed=2).baseline).valid


def test_contributions_agree_with_shap_tree_explainer(tree_model, cohort):
    import shap

    rows = cohort.iloc[:1000]
    contrib = tree_model.contributions(rows)
    design = tree_model.design(rows)
    explainer = shap.TreeExplainer(tree_model.adapter.booster)
    reference = explainer.shap_values(xgb.DMatrix(design, enable_categorical=True))
    grouped = _grouped(np.asarray(reference, dtype=float), list(design.columns), rows.index)
    assert list(grouped.columns) == list(contrib.values.columns)
    np.testing.assert_allclose(contrib.values.to_numpy(), grouped.to_numpy(), atol=1e-4)
    np.testing.assert_allclose(contrib.base, float(np.ravel(explainer.expected_value)[0]),
                               atol=1e-4)


@pytest.mark.parametrize("kind", ["tree", "linear"])
def test_contributions_plus_base_equal_the_margin(kind, tree_model, linear_model, cohort):
    model = tree_model if kind == "tree" else linear_model
    rows = cohort.iloc[:500]
    contrib = model.contributions(rows)
    margin = model.margin(rows)
    tolerance = 1e-4 if kind == "tree" else 1e-9  # float32 trees, exact linear terms
    np.testing.assert_allclose(contrib.values.sum(axis=1).to_numpy() + contrib.base, margin,
                               atol=tolerance)
    np.testing.assert_allclose(contrib.margin, margin, atol=tolerance)
    assert contrib.scale == "log-odds of the model before calibration"


@pytest.mark.parametrize("kind", ["tree", "linear"])
def test_global_values_sum_to_the_margin(kind, tree_model, linear_model, cohort):
    model = tree_model if kind == "tree" else linear_model
    explanation = explain_global(model, cohort, max_rows=800, seed=3)
    rows = cohort.loc[explanation.values.index]
    margin = model.margin(rows)
    np.testing.assert_allclose(explanation.values.sum(axis=1).to_numpy() + explanation.base,
                               margin, atol=1e-4 if kind == "tree" else 1e-9)
    assert explanation.method == (TREE_METHOD if kind == "tree" else LINEAR_METHOD)
    assert "before calibration" in explanation.scale
    if kind == "linear":  # exact linear SHAP: centred on the cohort, so each mean is 0
        np.testing.assert_allclose(explanation.values.mean(axis=0), 0, atol=1e-9)


def test_global_explanation_samples_rows_reproducibly(tree_model, cohort):
    one = explain_global(tree_model, cohort, max_rows=500, seed=4)
    two = explain_global(tree_model, cohort, max_rows=500, seed=4)
    assert len(one.values) == 500 and one.n_cohort == len(cohort)
    assert one.values.index.equals(two.values.index)
    assert explain_global(tree_model, cohort.iloc[:300], max_rows=500).n_cohort == 300


def test_top_three_include_tumour_burden_and_product(tree_model, cohort):
    importance = explain_global(tree_model, cohort).importance()
    top = set(importance["driver"].head(3))
    assert top & BURDEN, importance.head(5)
    assert top & PRODUCT, importance.head(5)
    assert importance["mean_abs_shap"].is_monotonic_decreasing
    assert importance["share"].sum() == pytest.approx(1.0)


def test_importance_labels_read_for_clinicians():
    assert driver_label("crp_mg_l") == "CRP (mg/L)"
    assert driver_label("product") == "Product"
    assert driver_label("tumour_burden").startswith("Tumour burden")
    assert driver_label("log2_m_easix") == "m-EASIX (log2)"


def test_published_score_model_has_one_driver(cohort):
    from crsrisk.features.published import ScoreComparator

    y = np.r_[np.ones(100), np.zeros(len(cohort) - 100)].astype(int)
    adapter = ScoreAdapter(ScoreComparator("m_easix").fit(cohort, y))
    calibrator = Calibrator("sigmoid").fit(adapter.margin(cohort), y)
    model = RiskModel(adapter=adapter, calibrator=calibrator, tiers=Tiers(0.05, 0.2), planning={})
    explanation = explain_global(model, cohort)
    assert list(explanation.values.columns) == ["m_easix"]
    np.testing.assert_allclose(explanation.values["m_easix"] + explanation.base,
                               model.margin(cohort))
    np.testing.assert_array_equal(explanation.data["m_easix"], model.margin(cohort))
    contrib = model.contributions(cohort.iloc[:50])
    assert list(contrib.values.columns) == ["m_easix"] and not contrib.base.any()
    np.testing.assert_array_equal(contrib.margin, model.margin(cohort.iloc[:50]))
    drivers = model.score(cohort.iloc[:5])["top_drivers"]
    assert drivers.str.startswith("m-EASIX (LDH x CRP / platelets) ").all()


def test_figures_say_they_are_on_the_log_odds(tree_model, cohort):
    explanation = explain_global(tree_model, cohort, max_rows=600)
    figures = [importance_figure(explanation), beeswarm_figure(explanation)]
    # one categorical, one continuous on a log axis, one yes/no driver
    for group in ("product", "crp_mg_l", "bridging_therapy"):
        figures.append(dependence_figure(explanation, group))
    try:
        for figure in figures:
            labels = " ".join(ax.get_xlabel() + ax.get_ylabel() for ax in figure.axes)
            assert "log-odds" in labels or "Dependence" in figure.axes[0].get_title()
        assert figures[3].axes[0].get_xscale() == "log"
        assert "log-odds" in figures[2].axes[0].get_ylabel()
        ticks = [t.get_text() for t in figures[2].axes[0].get_xticklabels()]
        assert "axi-cel" in ticks
    finally:
        for figure in figures:
            plt.close(figure)
