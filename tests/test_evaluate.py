"""Evaluation metrics against scikit-learn, hand-worked examples and known calibration truths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from crsrisk.evaluation.metrics import (
    age_band,
    bootstrap_metrics,
    calibration_slope_intercept,
    calibration_table,
    decision_curve,
    expected_calibration_error,
    net_benefit,
    point_metrics,
    subgroup_table,
    undefined_reason,
)
from crsrisk.evaluation.metrics.bootstrap import bootstrap_replicates, resample_blocks

THRESHOLDS = {"high": 0.2, "low": 0.03}


def cohort(n: int, seed: int = 0, mean_logit: float = -2.0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from well-calibrated risks (about 15% prevalence by default)."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(mean_logit, 1.0, n))
    y = (rng.random(n) < p).astype(int)
    return y, p


def assert_probability(value: float) -> None:
    assert 0 <= value <= 1


# --- point metrics against scikit-learn --------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_point_metrics_equal_scikit_learn(ties: bool) -> None:
    y, p = cohort(800, seed=3)
    if ties:
        p = np.round(p, 2)  # many tied predictions
    m = point_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-10)
    assert m["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-10)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-10)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-10)
    assert m["n"] == 800
    assert m["events"] == y.sum()
    assert m["prevalence"] == pytest.approx(y.mean())


def test_point_metric_keys_and_types() -> None:
    y, p = cohort(300, seed=1)
    m = point_metrics(y, p, THRESHOLDS)
    expected = ["auroc", "auprc", "brier", "log_loss", "calibration_slope",
                "calibration_intercept", "ece", "prevalence", "n", "events"]
    expected += [f"{m}_{name}" for name in THRESHOLDS
                 for m in ("sensitivity", "specificity", "ppv", "npv")]
    assert list(m) == expected
    assert all(isinstance(v, float | int) for v in m.values())
    for key in ("auroc", "auprc", "brier", "ece", "prevalence", "sensitivity_high", "npv_low"):
        assert_probability(m[key])


def test_threshold_metrics_by_hand() -> None:
    # t = 0.2, positive means p >= 0.2 (so p == 0.2 is positive):
    #   position: 0    1    2     3     4    5
    #   y:        1    1    0     0     0    1
    #   p:        0.3  0.1  0.25  0.05  0.2  0.2
    #   test:     +    -    +     -     +    +
    # TP = 2 (0, 5), FP = 2 (2, 4), FN = 1 (1), TN = 1 (3)
    # sensitivity 2/3, specificity 1/3, PPV 2/4, NPV 1/2
    y = [1, 1, 0, 0, 0, 1]
    p = [0.3, 0.1, 0.25, 0.05, 0.2, 0.2]
    m = point_metrics(y, p, {"cut": 0.2})
    assert m["sensitivity_cut"] == pytest.approx(2 / 3)
    assert m["specificity_cut"] == pytest.approx(1 / 3)
    assert m["ppv_cut"] == pytest.approx(0.5)
    assert m["npv_cut"] == pytest.approx(0.5)


def test_undefined_threshold_metrics_are_nan() -> None:
    y, p = [1, 0, 0, 1], [0.1, 0.2, 0.3, 0.4]
    m = point_metrics(y, p, {"none": 0.9, "all": 0.0})
    assert math.isnan(m["ppv_none"])  # nobody test-positive
    assert m["sensitivity_none"] == 0 and m["specificity_none"] == 1
    assert math.isnan(m["npv_all"])  # nobody test-negative
    assert m["sensitivity_all"] == 1 and m["ppv_all"] == 0.5


@pytest.mark.parametrize("outcome", [0, 1])
def test_single_class_gives_nan_not_errors(outcome: int) -> None:
    y = [outcome] * 5
    p = [0.1, 0.2, 0.3, 0.4, 0.5]
    m = point_metrics(y, p, {"t": 0.25})
    for key in ("auroc", "auprc", "calibration_slope", "calibration_intercept"):
        assert math.isnan(m[key]), key
    assert m["brier"] == pytest.approx(brier_score_loss(y, p, labels=[0, 1]))
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]))
    assert not math.isnan(m["ece"])
    undefined = "specificity_t" if outcome == 1 else "sensitivity_t"
    assert math.isnan(m[undefined])


def test_nullable_and_list_inputs_match_numpy() -> None:
    y, p = cohort(200, seed=5)
    reference = point_metrics(y, p, THRESHOLDS)
    nullable = point_metrics(pd.Series(y, dtype="Int64"), pd.Series(p, dtype="Float64"),
                             THRESHOLDS)
    plain = point_metrics(list(y), list(p), THRESHOLDS)
    boolean = point_metrics(pd.Series(y.astype(bool), dtype="boolean"), p, THRESHOLDS)
    assert nullable == reference
    assert plain == reference
    assert boolean == reference


def test_series_are_matched_by_position_not_index() -> None:
    y, p = cohort(100, seed=6)
    shuffled_index = pd.Series(p, index=np.random.default_rng(0).permutation(100))
    assert point_metrics(y, shuffled_index) == point_metrics(y, p)


# --- calibration -------------------------------------------------------------------------------


def test_calibration_of_well_calibrated_predictions() -> None:
    y, p = cohort(200_000, seed=11)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1, abs=0.03)
    assert intercept == pytest.approx(0, abs=0.03)


def test_overconfident_predictions_have_slope_one_half() -> None:
    y, p = cohort(200_000, seed=12)
    overconfident = expit(2 * logit(p))
    slope, _ = calibration_slope_intercept(y, overconfident)
    assert slope == pytest.approx(0.5, abs=0.03)


def test_shifted_logit_gives_the_shift_as_intercept() -> None:
    y, p = cohort(200_000, seed=13)
    # Predictions 0.7 too high on the logit scale: the offset model needs -0.7 to correct them.
    slope, intercept = calibration_slope_intercept(y, expit(logit(p) + 0.7))
    assert intercept == pytest.approx(-0.7, abs=0.03)
    assert slope == pytest.approx(1, abs=0.03)


def test_calibration_matches_direct_likelihood_maximisation() -> None:
    y, p = cohort(400, seed=14)
    x = logit(p)

    def negative_loglik(theta: np.ndarray) -> float:
        eta = theta[0] + theta[1] * x
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    def offset_negative_loglik(theta: np.ndarray) -> float:
        eta = theta[0] + x
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    full = minimize(negative_loglik, [0.0, 1.0], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000})
    offset = minimize(offset_negative_loglik, [0.0], method="Nelder-Mead",
                      options={"xatol": 1e-10, "fatol": 1e-12})
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(full.x[1], abs=1e-6)
    assert intercept == pytest.approx(offset.x[0], abs=1e-6)


def test_separated_data_have_no_slope_but_an_intercept() -> None:
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    slope, intercept = calibration_slope_intercept(y, p)
    assert math.isnan(slope)
    assert math.isfinite(intercept)


def test_constant_predictions_have_no_slope() -> None:
    # Offset model: logit(0.5) = logit(0.25) + a  ->  a = -logit(0.25) = log(3).
    slope, intercept = calibration_slope_intercept([1, 0, 1, 0], [0.25] * 4)
    assert math.isnan(slope)
    assert intercept == pytest.approx(math.log(3), abs=1e-12)


def test_extreme_probabilities_are_clipped() -> None:
    slope, intercept = calibration_slope_intercept([0, 1, 0, 1, 1], [0.0, 1.0, 0.3, 0.2, 0.9])
    assert math.isfinite(slope) and math.isfinite(intercept)


# --- expected calibration error and calibration table ------------------------------------------


def test_ece_by_hand() -> None:
    # Two quantile bins; the median of p is 0.25, bins are right-closed:
    #   bin 1: p = 0.1, 0.2 (y = 0, 1) -> mean p 0.15, observed 0.5, |gap| 0.35, weight 2/4
    #   bin 2: p = 0.3, 0.4 (y = 0, 0) -> mean p 0.35, observed 0.0, |gap| 0.35, weight 2/4
    # ECE = 0.5 * 0.35 + 0.5 * 0.35 = 0.35
    assert expected_calibration_error([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], n_bins=2) \
        == pytest.approx(0.35)


def test_ece_equals_quantile_binning_with_pandas() -> None:
    y, p = cohort(1000, seed=21)
    bins = pd.qcut(p, 10)
    frame = pd.DataFrame({"y": y, "p": p, "bin": bins})
    grouped = frame.groupby("bin", observed=True).agg(n=("y", "size"), y=("y", "mean"),
                                                      p=("p", "mean"))
    expected = float((grouped["n"] / len(y) * (grouped["p"] - grouped["y"]).abs()).sum())
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)


def test_calibration_table_reproduces_ece() -> None:
    y, p = cohort(1000, seed=22)
    table = calibration_table(y, p)
    assert list(table.columns) == ["bin", "mean_predicted", "observed", "n", "events"]
    assert len(table) == 10
    assert table["n"].sum() == len(y) and table["events"].sum() == y.sum()
    assert table["mean_predicted"].is_monotonic_increasing
    ece = float((table["n"] / len(y) * (table["mean_predicted"] - table["observed"]).abs()).sum())
    assert ece == pytest.approx(expected_calibration_error(y, p), abs=1e-12)


def test_tied_predictions_share_a_bin() -> None:
    y = [0, 1, 0, 1, 0, 0]
    table = calibration_table(y, [0.2] * 6, n_bins=3)
    assert table.to_dict("records") == [{"bin": 1, "mean_predicted": pytest.approx(0.2),
                                         "observed": pytest.approx(1 / 3), "n": 6, "events": 2}]
    assert expected_calibration_error(y, [0.2] * 6, n_bins=3) == pytest.approx(abs(0.2 - 1 / 3))


# --- net benefit and decision curves -----------------------------------------------------------


def test_net_benefit_by_hand() -> None:
    # Ten patients, three events; threshold 0.25 treats p >= 0.25:
    #   treated: p = 0.9 (event), 0.6 (event), 0.5, 0.3, 0.25 (no events)
    #   TP = 2, FP = 3, n = 10
    #   net benefit = TP/n - FP/n * t/(1-t) = 2/10 - 3/10 * 0.25/0.75 = 0.2 - 0.1 = 0.1
    y = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.15, 0.5, 0.3, 0.25, 0.1, 0.05, 0.02, 0.01]
    assert net_benefit(y, p, 0.25) == pytest.approx(0.1, abs=1e-12)
    # Treating all: TP = 3, FP = 7 -> 0.3 - 0.7 / 3
    assert net_benefit(y, [1.0] * 10, 0.25) == pytest.approx(0.3 - 0.7 / 3, abs=1e-12)


def test_decision_curve_layout_and_reference_strategies() -> None:
    y, p = cohort(500, seed=31)
    rng = np.random.default_rng(0)
    curve = decision_curve(y, {"model": p, "noise": rng.random(500)})
    assert list(curve.columns) == ["threshold", "strategy", "net_benefit"]
    assert list(pd.unique(curve["strategy"])) == ["model", "noise", "treat all", "treat none"]
    thresholds = curve.loc[curve["strategy"] == "model", "threshold"].to_numpy()
    np.testing.assert_allclose(thresholds, np.arange(1, 51) / 100)
    assert (curve.loc[curve["strategy"] == "treat none", "net_benefit"] == 0).all()

    prevalence = y.mean()
    treat_all = curve[curve["strategy"] == "treat all"]
    t = treat_all["threshold"].to_numpy()
    np.testing.assert_allclose(treat_all["net_benefit"],
                               prevalence - (1 - prevalence) * t / (1 - t), atol=1e-12)
    model = curve[curve["strategy"] == "model"]
    for threshold, value in zip(model["threshold"], model["net_benefit"], strict=True):
        assert value == pytest.approx(net_benefit(y, p, threshold), abs=1e-12)
    # A calibrated model beats both references at a clinically relevant threshold.
    at = curve[curve["threshold"] == 0.2].set_index("strategy")["net_benefit"]
    assert at["model"] > max(at["treat all"], at["treat none"])


def test_decision_curve_custom_thresholds_and_reserved_names() -> None:
    y = [0, 1, 0, 1]
    curve = decision_curve(y, {"m": [0.1, 0.8, 0.3, 0.6]}, thresholds=[0.1, 0.5])
    assert len(curve) == 2 * 3
    with pytest.raises(ValueError, match="reference strategy"):
        decision_curve(y, {"treat all": [0.1, 0.8, 0.3, 0.6]})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        decision_curve(y, {"m": [0.1, 0.8, 0.3, 0.6]}, thresholds=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"predictions\['m'\] has 3"):
        decision_curve(y, {"m": [0.1, 0.8, 0.3]})


# --- bootstrap ---------------------------------------------------------------------------------


def test_resampled_metrics_equal_point_metrics_on_the_same_resamples() -> None:
    # The vectorised bootstrap must compute exactly what point_metrics gives on each resample,
    # ties and undefined resamples included.
    rng = np.random.default_rng(41)
    n, n_boot = 40, 60
    p = np.round(rng.beta(1, 5, n), 2)
    y = (rng.random(n) < p).astype(int)
    y[:3] = 1  # a few events however the draw falls
    replicates = bootstrap_replicates(y, p, THRESHOLDS, n_boot, seed=7)
    resamples = np.vstack(list(resample_blocks(n, n_boot, seed=7)))
    for row, indices in enumerate(resamples):
        expected = point_metrics(y[indices], p[indices], THRESHOLDS)
        for metric, values in replicates.items():
            if math.isnan(expected[metric]):
                assert math.isnan(values[row]), (row, metric)
            else:
                assert values[row] == pytest.approx(expected[metric], abs=1e-8), (row, metric)


def test_bootstrap_layout_and_reproducibility() -> None:
    y, p = cohort(600, seed=42)
    first = bootstrap_metrics(y, p, THRESHOLDS, n_boot=200, seed=3)
    again = bootstrap_metrics(y, p, THRESHOLDS, n_boot=200, seed=3)
    other = bootstrap_metrics(y, p, THRESHOLDS, n_boot=200, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first["lower"].equals(other["lower"])
    assert list(first.columns) == ["metric", "estimate", "lower", "upper", "n_resamples"]
    expected = [k for k in point_metrics(y, p, THRESHOLDS) if k not in ("n", "events")]
    assert first["metric"].tolist() == expected
    point = point_metrics(y, p, THRESHOLDS)
    assert first.set_index("metric")["estimate"].to_dict() == {k: point[k] for k in expected}


def test_bootstrap_intervals_contain_the_estimate() -> None:
    y, p = cohort(2000, seed=43)
    table = bootstrap_metrics(y, p, THRESHOLDS, n_boot=300, seed=0).set_index("metric")
    assert (table["lower"] <= table["upper"]).all()
    assert ((table["lower"] <= table["estimate"]) & (table["estimate"] <= table["upper"])).all()
    assert (table["n_resamples"] == 300).all()


def test_ece_interval_contains_its_estimate_where_the_percentile_interval_did_not() -> None:
    # Resampling inflates ECE (duplicated patients add noise to bin means); on this cohort the
    # plain percentile interval of the replicates lies wholly above the estimate.
    y, p = cohort(3000, seed=5)
    estimate = expected_calibration_error(y, p)
    replicates = bootstrap_replicates(y, p, {}, 300, 0, frozenset({"ece"}))["ece"]
    assert estimate < np.percentile(replicates, 2.5)  # the old interval missed it
    row = bootstrap_metrics(y, p, n_boot=300, seed=0).set_index("metric").loc["ece"]
    assert row["lower"] <= estimate <= row["upper"]
    assert row["lower"] >= 0  # within ECE's range
    spread = np.percentile(replicates, 97.5) - np.percentile(replicates, 2.5)
    assert row["upper"] - row["lower"] == pytest.approx(spread, rel=0.5)  # width kept


@pytest.mark.parametrize("seed", range(5))
def test_every_interval_contains_its_estimate_on_small_cohorts(seed: int) -> None:
    y, p = cohort(120, seed=seed, mean_logit=-1.5)
    table = bootstrap_metrics(y, p, THRESHOLDS, n_boot=200, seed=seed).dropna(
        subset=["estimate", "lower", "upper"])
    assert ((table["lower"] <= table["estimate"]) & (table["estimate"] <= table["upper"])).all()


def test_bootstrap_interval_narrows_with_more_patients() -> None:
    def width(n: int) -> float:
        y, p = cohort(n, seed=44)
        row = bootstrap_metrics(y, p, n_boot=300, seed=0).set_index("metric").loc["auroc"]
        return row["upper"] - row["lower"]

    small, large = width(400), width(6400)
    assert large < small / 2  # about 1/sqrt(16) = 1/4 in theory


def test_bootstrap_survives_degenerate_resamples() -> None:
    y = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # one event: many resamples lack it
    p = np.linspace(0.05, 0.6, 12)
    table = bootstrap_metrics(y, p, {"t": 0.5}, n_boot=500, seed=0).set_index("metric")
    assert 0 < table.loc["auroc", "n_resamples"] < 500
    assert table.loc["brier", "n_resamples"] == 500
    assert 0 <= table.loc["auroc", "lower"] <= table.loc["auroc", "upper"] <= 1


def test_bootstrap_with_one_class_gives_nan_intervals() -> None:
    table = bootstrap_metrics([0] * 8, np.linspace(0.1, 0.8, 8), n_boot=50).set_index("metric")
    assert table.loc["auroc", "n_resamples"] == 0
    assert math.isnan(table.loc["auroc", "lower"]) and math.isnan(table.loc["auroc", "upper"])
    assert table.loc["brier", "lower"] <= table.loc["brier", "upper"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_boot": 0}, "n_boot must be a positive integer"),
    ({"level": 1.0}, "level must lie strictly between 0 and 1"),
])
def test_bootstrap_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_metrics([0, 1], [0.2, 0.7], **kwargs)


# --- subgroups ---------------------------------------------------------------------------------


def subgroup_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    y, p = cohort(3000, seed=51)
    rng = np.random.default_rng(52)
    site = rng.choice(np.array(["A", "B", "tiny"], dtype=object), 3000, p=[0.6, 0.395, 0.005])
    site[rng.random(3000) < 0.05] = None
    frame = pd.DataFrame({"site": pd.array(site, dtype="str"),
                          "age_years": rng.uniform(18, 85, 3000)},
                         index=np.arange(10_000, 13_000))
    frame["age_band"] = age_band(frame["age_years"])
    return frame, y, p


def test_subgroup_table_layout_flags_and_missing_level() -> None:
    frame, y, p = subgroup_frame()
    table = subgroup_table(frame, y, p, ["site", "age_band"], thresholds={"high": 0.2},
                           n_boot=100)
    assert list(table.columns[:13]) == [
        "variable", "level", "n", "events", "prevalence", "auroc", "auroc_lower", "auroc_upper",
        "calibration_intercept", "brier", "mean_predicted", "observed", "too_few_events"]
    assert "sensitivity_high" in table.columns
    sites = table[table["variable"] == "site"].set_index("level")
    assert sites.index.tolist() == ["A", "B", "tiny", "missing"]
    assert table[table["variable"] == "age_band"]["level"].tolist() == list(
        ("<40", "40-59", "60-69", "70+"))
    for variable, rows in table.groupby("variable"):
        assert rows["n"].sum() == len(y), variable
        assert rows["events"].sum() == y.sum(), variable

    tiny = sites.loc["tiny"]
    assert tiny["too_few_events"]
    assert math.isnan(tiny["auroc"]) and math.isnan(tiny["auroc_lower"])
    assert not math.isnan(tiny["brier"])

    site_a = sites.loc["A"]
    mask = (frame["site"] == "A").to_numpy()
    assert not site_a["too_few_events"]
    assert site_a["auroc"] == pytest.approx(roc_auc_score(y[mask], p[mask]), abs=1e-12)
    assert site_a["auroc_lower"] <= site_a["auroc"] <= site_a["auroc_upper"]
    assert site_a["mean_predicted"] == pytest.approx(p[mask].mean())
    assert site_a["observed"] == pytest.approx(y[mask].mean())
    assert site_a["calibration_intercept"] == pytest.approx(
        calibration_slope_intercept(y[mask], p[mask])[1])

    missing = sites.loc["missing"]
    assert missing["n"] == frame["site"].isna().sum()


def test_subgroup_flags_groups_short_of_non_events() -> None:
    frame = pd.DataFrame({"g": ["a"] * 30 + ["b"] * 30})
    y = np.r_[np.ones(25), np.zeros(5), np.tile([0, 1], 15)].astype(int)
    p = np.linspace(0.05, 0.95, 60)
    table = subgroup_table(frame, y, p, ["g"], min_events=10, n_boot=50).set_index("level")
    assert table.loc["a", "too_few_events"]  # 25 events but only 5 non-events
    assert not table.loc["b", "too_few_events"]


def test_subgroup_table_is_reproducible() -> None:
    frame, y, p = subgroup_frame()
    first = subgroup_table(frame, y, p, ["site"], n_boot=50, seed=1)
    again = subgroup_table(frame, y, p, ["site"], n_boot=50, seed=1)
    pd.testing.assert_frame_equal(first, again)


def test_subgroup_table_rejects_bad_frames() -> None:
    frame, y, p = subgroup_frame()
    with pytest.raises(ValueError, match=r"no column\(s\) \['product'\]"):
        subgroup_table(frame, y, p, ["product"])
    with pytest.raises(ValueError, match="frame has 3000 rows but y and p have 2999"):
        subgroup_table(frame, y[1:], p[1:], ["site"])


def test_age_band_boundaries() -> None:
    ages = pd.Series([18, 39.9, 40, 59.99, 60, 69.5, 70, 91, None], index=list("abcdefghi"),
                     dtype="Float64")
    bands = age_band(ages)
    assert bands.name == "age_band"
    assert bands.index.tolist() == list("abcdefghi")
    assert bands.cat.categories.tolist() == ["<40", "40-59", "60-69", "70+"]
    assert bands.cat.ordered
    assert bands.astype(object).tolist()[:8] == [
        "<40", "<40", "40-59", "40-59", "60-69", "60-69", "70+", "70+"]
    assert pd.isna(bands.iloc[8])
    with pytest.raises(ValueError, match="must not be negative; found -1"):
        age_band([30, -1])


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("y", "p", "message"), [
    ([0, 1, 0], [0.1, 0.2], "y has 3 values but p has 2"),
    ([0, 1], [0.1, 1.2], r"p must lie in \[0, 1\]; found 1.2 at position 1"),
    ([0, 1], [-0.1, 0.5], r"p must lie in \[0, 1\]; found -0.1 at position 0"),
    ([0, 1], [0.1, float("nan")], r"p has 1 missing value\(s\) \(NaN\), the first at position 1"),
    ([0, 2], [0.1, 0.2], "y must be 0 or 1; found 2 at position 1"),
    ([0, 0.5], [0.1, 0.2], "y must be 0 or 1; found 0.5 at position 1"),
    (pd.Series([1, None], dtype="Int64"), [0.1, 0.2],
     r"y has 1 missing value\(s\), the first at position 1"),
    (["yes", "no"], [0.1, 0.2], "y must be numeric"),
    ([[0, 1]], [[0.1, 0.2]], "y must be one-dimensional"),
    ([], [], "empty"),
])
def test_bad_inputs_raise_clear_errors(y: object, p: object, message: str) -> None:
    for function in (point_metrics, calibration_slope_intercept, expected_calibration_error,
                     calibration_table, bootstrap_metrics):
        with pytest.raises(ValueError, match=message):
            function(y, p)


def test_bad_thresholds_and_bins_raise() -> None:
    with pytest.raises(ValueError, match="threshold 'high' must lie in"):
        point_metrics([0, 1], [0.1, 0.9], {"high": 1.5})
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        expected_calibration_error([0, 1], [0.1, 0.9], n_bins=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        net_benefit([0, 1], [0.1, 0.9], 1.0)


# --- golden values: the numbers do not move across refactors -----------------------------------
# Produced by crsrisk.evaluate (the metrics module as it stood before the package layout and
# before metrics had one implementation each) on golden_input() below, printing each result with
# repr(). Intervals: the golden lower/upper are that code's percentile bounds of the bootstrap
# replicates, and the medians are the medians of the same replicates; the replicates themselves
# must not change. Compare to 1e-9.

GOLDEN: dict = {'POINT': {'auroc': 0.791744702728508,
           'auprc': 0.5022780637540856,
           'brier': 0.1452927325,
           'log_loss': 0.44138572593301006,
           'calibration_slope': 1.283269316356942,
           'calibration_intercept': 0.4595112198804068,
           'ece': 0.07063250000000003,
           'prevalence': 0.2175,
           'n': 400.0,
           'events': 87.0,
           'sensitivity_high': 0.3103448275862069,
           'specificity_high': 0.9297124600638977,
           'ppv_high': 0.5510204081632653,
           'npv_high': 0.8290598290598291,
           'sensitivity_low': 0.9885057471264368,
           'specificity_low': 0.2364217252396166,
           'ppv_low': 0.26461538461538464,
           'npv_low': 0.9866666666666667},
 'ECE5': 0.07063250000000004,
 'CSI': (1.1014480430709959, 0.32767212799401907),
 'NB': 0.11558823529411766}
GOLDEN_BOOT = [('auroc', 0.791744702728508, 0.7357329397542681, 0.8390703207869842, 300),
 ('auprc', 0.5022780637540856, 0.3889103100326474, 0.615662277179759, 300),
 ('brier', 0.1452927325, 0.125155461625, 0.17020466399999998, 300),
 ('log_loss', 0.44138572593301006, 0.39034651938778175, 0.5086291749277239, 300),
 ('calibration_slope', 1.283269316356942, 0.9738169409639997, 1.6085834691885232, 300),
 ('calibration_intercept', 0.4595112198804068, 0.19245008167944538, 0.7138224554301995, 300),
 ('ece', 0.07063250000000003, 0.048479937499999994, 0.11490987500000001, 300),
 ('prevalence', 0.2175, 0.1775, 0.2575, 300),
 ('sensitivity_high', 0.3103448275862069, 0.2048222610722611, 0.407526350461133, 300),
 ('specificity_high', 0.9297124600638977, 0.9039978574211142, 0.9532591973244148, 300),
 ('ppv_high', 0.5510204081632653, 0.4061956521739131, 0.6900240384615384, 300),
 ('npv_high', 0.8290598290598291, 0.7924405132677215, 0.8640509170193664, 300),
 ('sensitivity_low', 0.9885057471264368, 0.9567438055165965, 1.0, 300),
 ('specificity_low', 0.2364217252396166, 0.19601731601731603, 0.28413706922006154, 300),
 ('ppv_low', 0.26461538461538464, 0.21611799429164505, 0.3169230769230769, 300),
 ('npv_low', 0.9866666666666667, 0.9504453441295547, 1.0, 300)]
GOLDEN_BOOT_MEDIAN = {'auroc': 0.7914049888798032,
 'auprc': 0.5031213630978655,
 'brier': 0.14597959875,
 'log_loss': 0.4427378065780011,
 'calibration_slope': 1.2762463224011897,
 'calibration_intercept': 0.46429359679404714,
 'ece': 0.08080624999999998,
 'prevalence': 0.21875,
 'sensitivity_high': 0.3113997113997114,
 'specificity_high': 0.929489027051509,
 'ppv_high': 0.5411864406779661,
 'npv_high': 0.828529900332226,
 'sensitivity_low': 0.9887640449438202,
 'specificity_low': 0.23597298622079407,
 'ppv_low': 0.2655285493827161,
 'npv_low': 0.9868421052631579}
GOLDEN_TABLES = {'CT': {'bin': [1, 2, 3, 4, 5, 6, 7],
        'mean_predicted': [0.021295081967213112,
                           0.05451851851851851,
                           0.08857894736842103,
                           0.13236206896551728,
                           0.18016071428571429,
                           0.23452631578947372,
                           0.3920175438596491],
        'observed': [0.0,
                     0.05555555555555555,
                     0.10526315789473684,
                     0.22413793103448276,
                     0.25,
                     0.3684210526315789,
                     0.5263157894736842],
        'n': [61, 54, 57, 58, 56, 57, 57],
        'events': [0, 3, 6, 13, 14, 21, 30]},
 'DC': [0.18355263157894736,
        0.15805555555555556,
        0.08812500000000001,
        0.02583333333333333,
        0.1763157894736842,
        0.13055555555555554,
        0.021875000000000006,
        -0.3041666666666667,
        0.0,
        0.0,
        0.0,
        0.0],
 'SG': {'n': [194, 206],
        'events': [40, 47],
        'prevalence': [0.20618556701030927, 0.22815533980582525],
        'auroc': [0.7730519480519481, 0.8104509567777332],
        'auroc_lower': [0.6918126456876457, 0.7455847881518947],
        'auroc_upper': [0.8582820412047668, 0.8605769445645527],
        'calibration_intercept': [0.33593268095564066, 0.5746060387536599],
        'brier': [0.14211806701030927, 0.14828246601941747],
        'mean_predicted': [0.1622319587628866, 0.15193203883495146],
        'observed': [0.20618556701030927, 0.22815533980582525],
        'sensitivity_high': [0.275, 0.3404255319148936],
        'specificity_high': [0.9025974025974026, 0.9559748427672956],
        'ppv_high': [0.4230769230769231, 0.6956521739130435],
        'npv_high': [0.8273809523809523, 0.8306010928961749],
        'sensitivity_low': [0.975, 1.0],
        'specificity_low': [0.21428571428571427, 0.2578616352201258],
        'ppv_low': [0.24375, 0.28484848484848485],
        'npv_low': [0.9705882352941176, 1.0]},
 'SGMED': {'a': 0.7774856610766163, 'b': 0.8132964057687093}}


def golden_input() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20261203)
    p = np.round(rng.beta(1.2, 6.0, 400), 3)  # rounded: tied predictions
    y = (rng.random(400) < np.clip(1.3 * p, 0, 1)).astype(int)  # risk underestimated
    group = np.where(rng.random(400) < 0.5, "a", "b")
    return y, p, group


GOLDEN_THRESHOLDS = {"high": 0.3, "low": 0.05}


def test_point_metrics_keep_their_golden_values() -> None:
    y, p, _ = golden_input()
    metrics = point_metrics(y, p, GOLDEN_THRESHOLDS)
    assert metrics == pytest.approx(GOLDEN["POINT"], abs=1e-9, rel=0)
    assert expected_calibration_error(y, p, 5) == pytest.approx(GOLDEN["ECE5"], abs=1e-9)
    assert calibration_slope_intercept(y[:60], p[:60]) == pytest.approx(GOLDEN["CSI"], abs=1e-9)
    assert net_benefit(y, p, 0.15) == pytest.approx(GOLDEN["NB"], abs=1e-9)


def test_bootstrap_replicates_keep_their_golden_values() -> None:
    y, p, _ = golden_input()
    replicates = bootstrap_replicates(y, p, GOLDEN_THRESHOLDS, 300, 11)
    for metric, _, lower, upper, used in GOLDEN_BOOT:
        values = replicates[metric][np.isfinite(replicates[metric])]
        assert values.size == used
        assert np.percentile(values, [2.5, 97.5]) == pytest.approx([lower, upper], abs=1e-9)
        assert np.median(values) == pytest.approx(GOLDEN_BOOT_MEDIAN[metric], abs=1e-9)


def test_tables_keep_their_golden_values() -> None:
    y, p, group = golden_input()
    table = calibration_table(y, p, 7)
    for column, values in GOLDEN_TABLES["CT"].items():
        assert table[column].tolist() == pytest.approx(values, abs=1e-9), column
    curve = decision_curve(y, {"m": p}, [0.05, 0.1, 0.2, 0.4])
    assert curve["net_benefit"].tolist() == pytest.approx(GOLDEN_TABLES["DC"], abs=1e-9)
    sub = subgroup_table(pd.DataFrame({"g": group}), y, p, ["g"], thresholds=GOLDEN_THRESHOLDS,
                         n_boot=100, seed=5)
    for column, values in GOLDEN_TABLES["SG"].items():
        if column in ("auroc_lower", "auroc_upper"):
            continue  # intervals: see test_subgroup_intervals_keep_their_golden_replicates
        assert sub[column].tolist() == pytest.approx(values, abs=1e-9), column


def test_bootstrap_intervals_are_the_golden_replicates_re_centred_on_the_estimate() -> None:
    y, p, _ = golden_input()
    table = bootstrap_metrics(y, p, GOLDEN_THRESHOLDS, n_boot=300, seed=11).set_index("metric")
    for metric, estimate, lower, upper, used in GOLDEN_BOOT:
        median = GOLDEN_BOOT_MEDIAN[metric]
        low, high = (-math.inf, math.inf) if metric.startswith("calibration_") else (0, 1)
        expected = (max(low, min(estimate, estimate - (median - lower))),
                    min(high, max(estimate, estimate + (upper - median))))
        row = table.loc[metric]
        assert row["estimate"] == pytest.approx(estimate, abs=1e-9)
        assert (row["lower"], row["upper"]) == pytest.approx(expected, abs=1e-9), metric
        assert row["n_resamples"] == used


def test_subgroup_intervals_keep_their_golden_replicates() -> None:
    y, p, group = golden_input()
    sub = subgroup_table(pd.DataFrame({"g": group}), y, p, ["g"], n_boot=100, seed=5)
    sg = GOLDEN_TABLES["SG"]
    for i, level in enumerate(("a", "b")):
        auroc, median = sg["auroc"][i], GOLDEN_TABLES["SGMED"][level]
        expected = (auroc - (median - sg["auroc_lower"][i]),
                    auroc + (sg["auroc_upper"][i] - median))
        row = sub.set_index("level").loc[level]
        assert (row["auroc_lower"], row["auroc_upper"]) == pytest.approx(expected, abs=1e-9)


# --- why a metric is n/a -----------------------------------------------------------------------


def test_undefined_reason_says_why_each_metric_is_missing() -> None:
    y, p = [0, 0, 1, 1], [0.10, 0.20, 0.30, 0.40]
    thresholds = {"low": 0.05, "high": 0.9}
    assert undefined_reason("npv_low", y, p, thresholds) == (
        "no patient below the low threshold (0.050)")
    assert undefined_reason("ppv_high", y, p, thresholds) == (
        "no patient at or above the high threshold (0.900)")
    assert undefined_reason("auroc", [0, 0, 0], [0.1, 0.2, 0.3]) == (
        "no patient with severe CRS among the 3")
    assert undefined_reason("specificity_low", [1, 1], [0.1, 0.2], thresholds) == (
        "no patient without severe CRS among the 2")
    assert "separate the outcomes" in undefined_reason("calibration_slope", y, p)
    # Defined metrics have no reason; every NaN of point_metrics has one.
    assert undefined_reason("auroc", y, p) is None
    metrics = point_metrics(y, p, thresholds)
    for name, value in metrics.items():
        if name not in ("n", "events"):
            assert (undefined_reason(name, y, p, thresholds) is None) == (not math.isnan(value))
