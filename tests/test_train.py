"""Training: candidates, calibration, tiers, selection, reproducibility, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.modeling.train import TrainingError, choose_tiers, train_models
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import fast_config


@pytest.fixture(scope="module")
def cohort():
    sim = simulate_cohort(1500, seed=5)
    valid = validate(sim.baseline).valid
    return valid, resolve_labels(valid).severe


@pytest.fixture(scope="module")
def result(cohort, tmp_path_factory):
    valid, severe = cohort
    return train_models(valid, severe, fast_config(tmp_path_factory.mktemp("t")))


def test_every_candidate_has_cv_and_test_metrics(result):
    names = [c.name for c in result.candidates]
    assert names == ["m_easix", "logistic", "xgboost"]
    for c in result.candidates:
        assert 0.5 < c.cv_metrics["cv_auroc"] <= 1
        assert c.cv_metrics["cv_log_loss"] > 0
        assert c.calibration in ("sigmoid", "isotonic")
        assert {"auroc", "log_loss", "calibration_slope"} <= set(c.test_metrics)
        assert np.all((c.test_risk > 0) & (c.test_risk < 1))


def test_selection_is_the_lowest_cv_log_loss(result):
    best = min(result.candidates, key=lambda c: c.cv_metrics["cv_log_loss"])
    assert result.selected is best


def test_test_rows_are_held_out_and_stratified(result, cohort):
    _, severe = cohort
    assert not set(result.train_index) & set(result.test_index)
    assert len(result.test_index) == pytest.approx(0.2 * len(severe), abs=1)
    assert severe.loc[result.test_index].sum() > 0


def test_tiers_come_from_the_planning_actions_with_their_performance(result, cohort):
    """Tiers are the risks at which the score config's actions are taken, per therapy class;
    the sensitivity and NPV they reach on out-of-fold risks are reported, not used."""
    from crsrisk.config import load_score_config

    score = load_score_config()
    model = result.selected.model
    for therapy, planning in score.therapy_classes.items():
        assert model.action_tiers.thresholds[therapy] == (planning.intermediate.risk_at_least,
                                                          planning.high.risk_at_least)
    table = result.thresholds
    assert len(table) == 4 and set(table["therapy_class"]) == {"CAR-T", "bispecific"}
    _, severe = cohort
    y = severe.loc[result.train_index].to_numpy()
    risk = result.selected.oof_risk
    valid, _ = cohort
    cart = (valid.loc[result.train_index, "therapy_class"] == "CAR-T").to_numpy()
    high = model.action_tiers.thresholds["CAR-T"][1]
    row = table[(table["therapy_class"] == "CAR-T") & (table["tier"] == "high")].iloc[0]
    assert row["sensitivity"] == pytest.approx(
        y[cart & (risk >= high)].sum() / y[cart].sum())


def test_choose_tiers_by_hand():
    risk = np.array([0.01, 0.02, 0.03, 0.05, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    y = np.array([0, 0, 0, 0, 0, 1, 0, 1, 1, 1])
    tiers = choose_tiers(risk, y, fast_config(__import__("pathlib").Path("/tmp")))
    # 4 events; sensitivity >= 0.8 needs all 4 at or above the threshold: the lowest event, 0.3.
    assert tiers.high == 0.3
    # Every row below 0.3 is a non-event, so NPV stays 1.0 up to the high threshold.
    assert tiers.low == 0.3


def test_same_data_config_seed_same_metrics_and_predictions(cohort, result, tmp_path):
    valid, severe = cohort
    again = train_models(valid, severe, fast_config(tmp_path))
    for a, b in zip(result.candidates, again.candidates, strict=True):
        assert a.cv_metrics == b.cv_metrics
        np.testing.assert_array_equal(a.test_risk, b.test_risk)


def test_temporal_split_tests_on_the_latest_dates(cohort, tmp_path):
    valid, severe = cohort
    config = fast_config(tmp_path, candidates=("m_easix",))
    config = config.model_copy(update={"split": config.split.model_copy(
        update={"temporal": True})})
    result = train_models(valid, severe, config)
    train_dates = valid.loc[result.train_index, "infusion_date"]
    test_dates = valid.loc[result.test_index, "infusion_date"]
    assert train_dates.max() <= test_dates.min()


def test_grouped_cv_keeps_sites_apart(cohort, tmp_path):
    from crsrisk.modeling.train import cv_folds

    valid, severe = cohort
    config = fast_config(tmp_path)
    config = config.model_copy(update={"cv": config.cv.model_copy(
        update={"group_by_site": True})})
    for train_pos, val_pos in cv_folds(valid, severe, config):
        train_sites = set(valid["site"].iloc[train_pos])
        assert not train_sites & set(valid["site"].iloc[val_pos])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v, s: (v, s * 0), "no severe CRS events"),
        (lambda v, s: (v, s * 0 + 1), "Every one of the"),
        (lambda v, s: (v.assign(crp_mg_l=np.nan), s), "crp_mg_l is missing for every row"),
        (lambda v, s: (v.iloc[:40], s.iloc[:40]), "rows of its rarer outcome"),
    ],
)
def test_untrainable_tables_are_refused(cohort, tmp_path, change, message):
    valid, severe = change(*cohort)
    with pytest.raises(TrainingError, match=message):
        train_models(valid, severe, fast_config(tmp_path))


def test_unseen_product_scores_as_unknown(result):
    model = result.selected.model
    table = simulate_cohort(50, seed=99).baseline
    table = table[table["therapy_class"] == "bispecific"].head(3).copy()
    table["product"] = "tarlatamab"
    table["diagnosis"] = "SCLC"
    valid = validate(table).valid
    scores = model.score(valid)
    assert scores["risk"].between(0, 1).all() and len(scores) == len(valid)


def test_risk_is_monotone_in_the_tier(result, cohort):
    valid, _ = cohort
    rows = valid.head(300)
    scores = result.selected.model.score(rows, drivers=False)
    order = {"low": 0, "intermediate": 1, "high": 2}
    for therapy in ("CAR-T", "bispecific"):  # tiers have thresholds per therapy class
        mine = scores[(rows["therapy_class"] == therapy).to_numpy()]
        by_tier = mine.assign(t=mine["risk_tier"].map(order)).groupby("t")["risk"]
        assert (by_tier.max().shift(1).dropna().to_numpy()
                <= by_tier.min().iloc[1:].to_numpy()).all()


def test_drivers_are_words_with_direction_and_size(result, cohort):
    valid, _ = cohort
    scores = result.selected.model.score(valid.head(20))
    for text in scores["top_drivers"]:
        parts = text.split("; ")
        assert len(parts) == 3
        assert all(("raises risk (+" in p) or ("lowers risk (-" in p) for p in parts)
        assert all(p.endswith("log-odds)") for p in parts)


def test_driver_values_are_plain_numbers(result, cohort):
    valid, _ = cohort
    rows = valid.head(200).copy()
    rows["platelets_1e9_l"] = 1160.0  # large labs must not read "1.16e+03"
    rows["ferritin_ng_ml"] = 12345.0
    rows["crp_mg_l"] = 85.4
    drivers = " ".join(result.selected.model.score(rows)["top_drivers"])
    assert "e+" not in drivers
    assert "Platelets 1160 " in drivers or "Ferritin 12345 " in drivers or "CRP 85.4 " in drivers


def test_contributions_sum_to_the_margin(result, cohort):
    valid, _ = cohort
    for candidate in result.candidates:
        contrib = candidate.model.contributions(valid.head(50))
        total = contrib.values.sum(axis=1).to_numpy() + contrib.base
        np.testing.assert_allclose(total, candidate.model.margin(valid.head(50)), atol=1e-4)
        assert isinstance(contrib.values, pd.DataFrame)


def test_small_cohort_trains_warns_and_picks_the_simpler_model():
    """400 patients (22 events): training still runs, says its estimates are shaky, skips the
    many-parameter candidates the cohort cannot support and selects a pre-specified one, which
    does better externally than the best published score."""
    from sklearn.metrics import roc_auc_score

    from crsrisk.config import load_train_config

    config = load_train_config()
    config = config.model_copy(update={
        "validation": config.validation.model_copy(update={"bootstrap_repeats": 2}),
        "uncertainty": config.uncertainty.model_copy(update={"models": 5}),
    })
    small = validate(simulate_cohort(400, seed=1).baseline).valid
    result = train_models(small, resolve_labels(small).severe, config)
    assert any("large CV-to-test gap" in w for w in result.warnings), result.warnings
    assert result.design == "bootstrap"
    skipped = {c.name for c in result.sample_size if not c.fitted}
    assert skipped == {"logistic", "xgboost", "xgboost_monotone"}
    by_name = {c.name: c for c in result.candidates}
    assert result.selected.name == "parsimonious"
    external = validate(simulate_cohort(3000, seed=2).baseline).valid
    y = resolve_labels(external).severe.astype(int)
    auroc = {name: roc_auc_score(y, by_name[name].model.risk(external))
             for name in ("parsimonious", "m_easix")}
    assert auroc["parsimonious"] > auroc["m_easix"] + 0.05, auroc



def test_every_candidate_reloads_from_data_with_the_same_test_risks(result, cohort, tmp_path):
    from crsrisk.modeling.riskmodel import RiskModel

    valid, _ = cohort
    test = valid.loc[result.test_index]
    for c in result.candidates:
        assert c.model.kind == c.name and c.model.info["candidate"] == c.name
        assert set(c.model.planning) == {"low", "intermediate", "high"}
        loaded = RiskModel.load(c.model.save(tmp_path / c.name))
        np.testing.assert_array_equal(loaded.risk(test), c.test_risk)
        assert loaded.planning == c.model.planning
