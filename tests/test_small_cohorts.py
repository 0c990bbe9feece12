"""Small cohorts: a B-ALL cohort shaped like the public one (about 200 CAR-T patients, 45 severe,
marrow blasts the strongest factor, day-0 labs with missing values), sample-size decisions,
bootstrap validation, per-patient intervals and tiers that follow the planning actions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from crsrisk.config import ConfigError, load_score_config, load_train_config
from crsrisk.contract.validate import validate
from crsrisk.evaluation.metrics import calibration_slope_intercept
from crsrisk.modeling.candidates import check_candidates
from crsrisk.modeling.tiers import ActionTiers, threshold_performance
from crsrisk.modeling.train import develop, train_models
from crsrisk.modeling.uncertainty import (
    BootstrapEnsemble,
    instability_plot,
    mean_absolute_prediction_error,
)
from crsrisk.modeling.validation_design import SELECTED, internal_external
from tests.conftest import baseline_frame


def ball_cohort(n: int = 202, seed: int = 24) -> tuple[pd.DataFrame, pd.Series]:
    """Adult and paediatric B-ALL CAR-T patients with day-0 labs near the public cohort's
    medians (CRP 5.7 mg/L, ferritin 456, LDH 163, platelets 84), severe CRS ~22 %, driven
    mostly by marrow blasts (MRD-level against overt disease), with missing labs: the
    validated rows and their outcome."""
    table, severe = ball_table(n, seed)
    valid = validate(table).valid
    return valid, pd.Series(severe[valid.index.to_numpy()], index=valid.index)


def ball_table(n: int = 202, seed: int = 24) -> tuple[pd.DataFrame, np.ndarray]:
    """The raw table of `ball_cohort` (text, as a site would send it) and the outcome."""
    rng = np.random.default_rng(seed)
    # One centre's CD19 CAR-Ts: constructs of both costimulatory domains.
    product = np.full(n, "other_car_t")
    costim = rng.choice(["CD28", "4-1BB"], n, p=[0.35, 0.65])
    overt = rng.random(n) < 0.55
    blasts = np.where(overt, np.exp(rng.normal(np.log(25), 1.0, n)),
                      np.exp(rng.normal(np.log(0.3), 1.0, n))).clip(0.01, 99)
    crp = np.exp(rng.normal(np.log(5.7), 0.95, n)).clip(0.1, 400)
    ferritin = np.exp(rng.normal(np.log(456), 0.85, n)).clip(5, 20000)
    ldh = np.exp(rng.normal(np.log(163), 0.28, n)).clip(60, 3000)
    platelets = np.exp(rng.normal(np.log(84), 1.1, n)).clip(2, 600)
    flu_cy = rng.random(n) < 0.9
    cd28 = costim == "CD28"
    eta = (0.6 * np.log(blasts / 5) + 0.3 * np.log(crp / 5.7) - 0.25 * np.log(platelets / 84)
           + 0.5 * cd28 + 0.4 * flu_cy + 0.1 * np.log(ferritin / 456))
    intercept = -2.0
    severe = rng.random(n) < 1 / (1 + np.exp(-(intercept + eta)))

    def text(values: np.ndarray, missing: float, fmt: str = "{:.3g}") -> list[str]:
        gone = rng.random(n) < missing
        return ["" if g else fmt.format(v) for v, g in zip(values, gone, strict=True)]

    table = pd.DataFrame({
        "patient_id": [f"ALL-{i:03d}" for i in range(n)],
        "site": rng.choice(["site_A", "site_B", "site_C"], n),
        "infusion_date": [f"{y}-06-15" for y in rng.choice([2016, 2017, 2018, 2019], n)],
        "age_years": text(np.exp(rng.normal(np.log(30), 0.6, n)).clip(2, 80), 0),
        "sex": rng.choice(["F", "M"], n), "weight_kg": text(rng.normal(65, 15, n).clip(12), 0.1),
        "ecog": text(rng.choice([0, 1, 2], n, p=[0.4, 0.5, 0.1]), 0.2, "{}"),
        "diagnosis": "B-ALL", "therapy_class": "CAR-T", "product": product,
        "costim_domain": costim,
        "cell_dose_1e6_per_kg": text(np.exp(rng.normal(np.log(1.5), 0.5, n)), 0.1),
        "lymphodepletion": np.where(flu_cy, "flu_cy", "other"),
        "prior_lines": text(rng.integers(1, 6, n), 0.1, "{}"), "bridging_therapy": "",
        "ldh_u_l": text(ldh, 0.15), "spd_cm2": "", "marrow_blasts_pct": text(blasts, 0.05),
        "marrow_plasma_cells_pct": "", "bulky_disease": "", "crp_mg_l": text(crp, 0.1),
        "ferritin_ng_ml": text(ferritin, 0.25), "platelets_1e9_l": text(platelets, 0.03),
        "anc_1e9_l": text(np.exp(rng.normal(0, 0.8, n)), 0.1),
        "hemoglobin_g_dl": text(rng.normal(9.5, 1.5, n).clip(5, 16), 0.05),
        "creatinine_mg_dl": text(np.exp(rng.normal(np.log(0.7), 0.3, n)), 0.05),
        "il6_pg_ml": "", "prior_autoimmune_disease": "", "hlh_history": "",
        "crs_max_grade": np.where(severe, 3, rng.choice([0, 1, 2], n)).astype(str),
        "crs_grading_scale": "ASTCT",
    }).astype("str")
    return table, severe


def small_config(**updates):
    """The default training config, with few bootstrap repeats so that tests run in seconds."""
    config = load_train_config()
    settings = {
        "validation": config.validation.model_copy(update={"bootstrap_repeats": 3}),
        "uncertainty": config.uncertainty.model_copy(update={"models": 10}),
        "search": config.search.model_copy(update={"xgboost_trials": 2}),
    }
    return config.model_copy(update={**settings, **updates})


@pytest.fixture(scope="module")
def cohort():
    return ball_cohort()


@pytest.fixture(scope="module")
def result(cohort):
    valid, severe = cohort
    return train_models(valid, severe, small_config())


def test_the_cohort_looks_like_the_public_one(cohort):
    valid, severe = cohort
    assert 190 <= len(valid) <= 202
    assert 35 <= severe.sum() <= 55
    blasts = valid["marrow_blasts_pct"].astype(float)
    auroc = roc_auc_score(severe, blasts.fillna(blasts.median()))
    assert 0.72 <= auroc <= 0.84  # published: ~0.78
    assert valid["ferritin_ng_ml"].isna().mean() > 0.15


def test_flexible_candidates_are_skipped_with_the_reason(cohort):
    valid, severe = cohort
    sizes = {c.name: c for c in check_candidates(valid, severe.to_numpy(), small_config())}
    for name in ("logistic", "xgboost", "xgboost_monotone"):
        assert not sizes[name].fitted
        assert "force it with sample_size.force" in sizes[name].reason
        assert sizes[name].size.parameter_n > len(valid)
    assert sizes["parsimonious"].fitted and sizes["m_easix"].fitted
    config = small_config()
    forced = config.model_copy(update={"sample_size": config.sample_size.model_copy(
        update={"force": ("xgboost_monotone",)})})
    sizes = {c.name: c for c in check_candidates(valid, severe.to_numpy(), forced)}
    assert sizes["xgboost_monotone"].fitted and "forced" in sizes["xgboost_monotone"].reason


def test_parsimonious_keeps_the_leading_factors_the_rows_support(cohort):
    from crsrisk.modeling.candidates import ParsimoniousFeatures, supported_parameters
    from crsrisk.modeling.train import search_space

    valid, severe = cohort
    y = severe.astype(int).to_numpy()
    every = ParsimoniousFeatures().fit(valid, y)
    capped = ParsimoniousFeatures(anticipated_auroc=0.78).fit(valid, y)
    budget = supported_parameters(len(y), y.mean(), 0.78)
    assert 1 <= capped.budget_ == budget < len(every.kept_)
    assert capped.kept_ == every.kept_[:len(capped.kept_)]  # the pre-specified order
    assert capped.kept_[:2] == ["tumour_burden", "tumour_burden_missing"]
    assert len(capped.kept_) <= budget
    again = ParsimoniousFeatures.from_dict(json.loads(json.dumps(capped.to_dict())))
    pd.testing.assert_frame_equal(again.transform(valid), capped.transform(valid))
    space = search_space("parsimonious", small_config())
    assert {p["anticipated_auroc"] for p in space} == {None, 0.78}  # chosen by CV log loss


def test_product_prior_is_the_published_rate_of_the_product_in_its_diagnosis():
    from crsrisk.modeling.candidates import PUBLISHED_SEVERE_RATE, product_log_odds

    def logit(p):
        return np.log(p / (1 - p))

    rows = validate(baseline_frame()).valid  # axi-cel LBCL, teclistamab MM, other CAR-T B-ALL
    prior = product_log_odds(rows)
    assert prior[0] == pytest.approx(logit(PUBLISHED_SEVERE_RATE[("axi-cel", "LBCL")]))
    assert prior[1] == pytest.approx(logit(PUBLISHED_SEVERE_RATE[("teclistamab", "MM")]))
    cart = [PUBLISHED_SEVERE_RATE[k] for k in PUBLISHED_SEVERE_RATE if k[0] in (
        "axi-cel", "tisa-cel", "liso-cel", "brexu-cel", "ide-cel", "cilta-cel", "obe-cel")]
    assert np.isfinite(prior[2])  # no trial of its own: the CAR-T products' median rate
    assert min(cart) < 1 / (1 + np.exp(-prior[2])) < max(cart)
    tisa = pd.DataFrame({"product": "tisa-cel", "therapy_class": "CAR-T",
                         "diagnosis": ["LBCL", "FL", "B-ALL"]})
    rates = 1 / (1 + np.exp(-product_log_odds(tisa)))
    # LBCL and B-ALL: the trial of that diagnosis; FL: the product's mean over its trials.
    assert rates == pytest.approx([0.22, (0.22 + 0.46) / 2, 0.46])


def test_burden_candidate_fits_burden_alone_and_reloads_with_the_same_scores(cohort, tmp_path):
    """The opt-in burden candidate: tumour burden and its missing-assessment indicator only, two
    parameters that the cohort supports, with intervals, drivers and tiers like any candidate."""
    from crsrisk.modeling.riskmodel import RiskModel

    valid, severe = cohort
    y = severe.astype(int).to_numpy()
    config = small_config(candidates=("m_easix", "burden", "parsimonious"))
    sizes = {c.name: c for c in check_candidates(valid, y, config)}
    assert sizes["burden"].fitted and sizes["burden"].reason == "supported"
    assert sizes["burden"].size.parameters == 2
    assert sizes["burden"].size.parameter_n <= len(valid) < sizes["parsimonious"].size.parameter_n

    result = train_models(valid, severe, small_config(candidates=("burden",)))
    model = result.selected.model
    assert result.selected.name == "burden" and model.info["candidate"] == "burden"
    features = model.adapter.features
    assert features.kept_ == ["tumour_burden", "tumour_burden_missing"]
    assert features.factors_ == ["tumour burden"]
    risk = model.risk(valid)
    blasts = valid["marrow_blasts_pct"].astype(float)
    observed = blasts.notna().to_numpy()
    # Burden alone: the risk ranks the patients whose blasts were measured as their blasts do.
    assert roc_auc_score(y[observed], risk[observed]) == pytest.approx(
        roc_auc_score(y[observed], blasts[observed]))
    scores = model.score(valid)
    assert (scores["risk_lower"] <= scores["risk"]).all()
    assert (scores["risk"] <= scores["risk_upper"]).all()
    assert scores["top_drivers"].str.contains("Tumour burden").all()
    assert set(scores["risk_tier"]) <= {"low", "intermediate", "high"}
    loaded = RiskModel.load(model.save(tmp_path / "burden"))
    pd.testing.assert_frame_equal(loaded.score(valid), scores)


def test_burden_candidate_is_skipped_where_no_burden_measure_varies(cohort):
    from crsrisk.modeling.train import TrainingError

    valid, severe = cohort
    y = severe.astype(int).to_numpy()
    no_burden = valid.assign(marrow_blasts_pct=np.nan)  # B-ALL burden: marrow blasts
    config = small_config(candidates=("m_easix", "burden"))
    sizes = {c.name: c for c in check_candidates(no_burden, y, config)}
    assert not sizes["burden"].fitted
    assert "no tumour-burden measure" in sizes["burden"].reason
    with pytest.raises(TrainingError, match="cannot support any configured candidate"):
        train_models(no_burden, severe, small_config(candidates=("burden",)))


def test_no_supported_candidate_is_refused(cohort):
    from crsrisk.modeling.train import TrainingError

    valid, severe = cohort
    with pytest.raises(TrainingError, match="cannot support any configured candidate"):
        train_models(valid, severe, small_config(candidates=("xgboost",)))


def test_small_cohort_develops_on_every_row_with_bootstrap_optimism(result, cohort):
    valid, _ = cohort
    assert result.design == "bootstrap"
    assert len(result.test_index) == 0 and len(result.train_index) == len(valid)
    assert {c.name for c in result.candidates} == {"m_easix", "easix", "car_hematotox",
                                                   "parsimonious"}
    table = result.optimism.table
    assert set(table["candidate"]) >= {SELECTED, result.selected.name}
    assert result.optimism.repeats == 3 and sum(result.optimism.selections.values()) == 3
    honest = result.optimism.corrected()
    apparent = result.selected.apparent
    assert honest["auroc"] <= apparent["auroc"] + 1e-9  # optimism is positive on average
    assert result.optimism.seconds > 0


def test_intervals_contain_the_risk_and_survive_json(result, cohort, tmp_path):
    valid, _ = cohort
    model = result.selected.model
    scores = model.score(valid, drivers=False)
    assert (scores["risk_lower"] <= scores["risk"]).all()
    assert (scores["risk"] <= scores["risk_upper"]).all()
    assert (scores["risk_upper"] - scores["risk_lower"]).mean() > 0.01
    ensemble = model.uncertainty
    again = BootstrapEnsemble.from_dict(json.loads(json.dumps(ensemble.to_dict())))
    design, margin = model.design(valid), model.margin(valid)
    np.testing.assert_allclose(again.spread(design, margin), ensemble.spread(design, margin))
    ensemble.save(tmp_path)
    loaded = BootstrapEnsemble.load(tmp_path)
    np.testing.assert_allclose(loaded.spread(design, margin), ensemble.spread(design, margin))


def test_instability_plot_and_mape(result, cohort):
    valid, _ = cohort
    risk = result.selected.model.risk(valid)
    mape = mean_absolute_prediction_error(risk, result.ensemble_risk)
    assert mape == pytest.approx(np.mean(np.abs(result.ensemble_risk - risk)))
    assert mape == pytest.approx(result.selected.model.uncertainty.mape)
    figure = instability_plot(risk, result.ensemble_risk)
    assert "MAPE" in figure.axes[0].get_title()


def test_internal_external_by_site_and_year(cohort):
    valid, severe = cohort
    config = small_config()
    y = severe.astype(int).to_numpy()

    def procedure(rows, labels, positions):
        return develop(rows, labels, positions, ["m_easix"], config)

    sites = internal_external(procedure, valid, y, "site")
    assert set(sites["site"]) == set(valid["site"])
    assert sites["rows"].sum() == len(valid)
    years = internal_external(procedure, valid, y, "year", min_rows=30)
    assert len(years) >= 2 and years["auroc"].between(0, 1).all()
    with pytest.raises(ValueError, match="site' or 'year"):
        internal_external(procedure, valid, y, "month")


def test_training_runs_internal_external_validation_by_site_and_year(cohort):
    valid, severe = cohort
    config = small_config(candidates=("m_easix", "easix"))
    result = train_models(valid, severe, config)
    ie = result.internal_external
    assert set(ie.tables) == {"site", "year"} and ie.seconds > 0
    assert set(ie.tables["site"]["site"]) == set(valid["site"])
    assert set(ie.tables["year"]["rows"]) <= set(
        pd.to_datetime(valid["infusion_date"]).dt.year.value_counts())
    assert ie.tables["site"]["selected"].isin(["m_easix", "easix"]).all()
    assert result.timings["internal_external"] > 0
    # auto: only under the bootstrap design; off: never; one site: said, not run.
    split = small_config(candidates=("m_easix",), validation=config.validation.model_copy(
        update={"design": "split"}))
    assert train_models(valid, severe, split).internal_external is None
    off = small_config(candidates=("m_easix",), validation=config.validation.model_copy(
        update={"internal_external": "off"}))
    assert train_models(valid, severe, off).internal_external is None
    one_site = valid.assign(site="site_A")
    ie = train_models(one_site, severe, small_config(candidates=("m_easix",), validation=(
        config.validation.model_copy(update={"internal_external": "site"})))).internal_external
    assert ie.tables == {} and "not run: 1 of 1 sites" in ie.notes["site"]


def test_train_prints_logs_and_reports_the_small_cohort_validation(tmp_path, monkeypatch):
    """`crsrisk train` on a small multi-site cohort prints the sample size, the optimism and the
    internal-external tables, logs them without patient ids or small counts, and the report
    shows them with the instability plot and its MAPE."""
    import mlflow
    import yaml
    from typer.testing import CliRunner

    from crsrisk.cli import app
    from crsrisk.config import TrackingConfig
    from crsrisk.mlops.loading import load_model
    from crsrisk.report.build import build_report

    table, _ = ball_table()
    table.to_csv(tmp_path / "ball.csv", index=False)
    config = small_config(candidates=("m_easix", "parsimonious", "xgboost"))
    data = config.model_dump(mode="json", exclude={"score"})
    data["validation"]["internal_external"] = "both"
    data["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                        "artifact_root": str(tmp_path / "art")}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", data["tracking"]["uri"])
    out = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "ball.csv"),
                                   "--config", str(tmp_path / "train.yaml")])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "internal-external cross-validation" in text
    assert "xgboost" in text and "force it with sample_size.force" in text
    for site in ("site_A", "site_B", "site_C"):
        assert f"site {site}" in text
    assert "year 2018" in text and "< 10" in text  # 2018 has fewer than 10 events
    assert "mean absolute prediction error" in text

    mlflow.set_tracking_uri(data["tracking"]["uri"])
    runs = mlflow.search_runs(experiment_names=["crs-severe"], output_format="list")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    logged = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/internal_external.json")
    assert {r["site"] for r in logged["tables"]["site"]} == {"site_1", "site_2", "site_3"}
    years = {r["year"]: r for r in logged["tables"]["year"]}
    assert years["2018"]["events"] == "< 10" and years["2018"]["auroc"] is None
    assert "ALL-0" not in json.dumps(logged)

    uri = text.strip().splitlines()[-1].split()[0]
    html = build_report(load_model(uri), uri, tracking=TrackingConfig())
    assert "Sample size (Riley et al.)" in html and "force it with sample_size.force" in html
    assert "whole procedure (selection included)" in html
    assert "Internal-external cross-validation" in html and "infusion year 2018" in html
    assert "site_A" not in html and "site site_2" in html
    assert 'alt="Prediction instability"' in html and "(MAPE)" in html
    assert "covered in <a href=\"#development\"" in html.split("<td>Sample size</td>")[1][:80]


@pytest.mark.slow
def test_five_fold_cv_of_training_beats_blasts_alone_and_is_calibrated(capsys):
    """Pooled out-of-fold AUROC of the whole training procedure at least that of marrow blasts
    alone, and out-of-fold calibration slope within 0.8-1.2.

    Cohort seed 0: the first seed, as the project's configs use, not the seed 24 that the
    other tests share (the check was first written against it). A sweep of the procedure
    (`develop`, as in the test below) over cohort seeds 0-5 and 24 gave pooled out-of-fold
    AUROC 0.845 / 0.754 / 0.778 / 0.798 / 0.773 / 0.800 / 0.793 against marrow blasts alone
    0.820 / 0.779 / 0.788 / 0.786 / 0.769 / 0.762 / 0.751. It loses on seeds 1 and 2, where
    even the data-generating model gains little (seed 1: AUROC 0.794 against 0.782) or
    nothing (seed 2: 0.775 against 0.785) over blasts: this one-cohort check cannot hold on
    every draw, so the test below asks it on average over six cohorts."""
    valid, severe = ball_cohort(seed=0)
    y = severe.astype(int).to_numpy()
    risk = np.empty(len(y))
    base = small_config()  # intervals, optimism and internal-external do not change the risks
    config = small_config(
        uncertainty=base.uncertainty.model_copy(update={"models": 0}),
        validation=base.validation.model_copy(update={"bootstrap_repeats": 2,
                                                      "internal_external": "off"}))
    folds = StratifiedKFold(5, shuffle=True, random_state=3).split(valid, y)
    for train_pos, test_pos in folds:
        result = train_models(valid.iloc[train_pos], severe.iloc[train_pos], config)
        risk[test_pos] = result.selected.model.risk(valid.iloc[test_pos])
    auroc = roc_auc_score(y, risk)
    blasts = valid["marrow_blasts_pct"].astype(float)
    blasts_auroc = roc_auc_score(y, blasts.fillna(blasts.median()))
    slope, intercept = calibration_slope_intercept(y, risk)
    with capsys.disabled():
        print(f"\nB-ALL-shaped cohort ({len(y)} patients, {y.sum()} events): pooled out-of-fold "
              f"AUROC {auroc:.3f} (marrow blasts alone {blasts_auroc:.3f}), calibration slope "
              f"{slope:.2f}, intercept {intercept:+.2f}")
    assert auroc >= blasts_auroc
    assert 0.8 <= slope <= 1.2


# The first six cohort seeds, fixed before any of them was run.
ACROSS_SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.mark.slow
def test_across_cohorts_training_matches_blasts_alone_on_average_and_is_calibrated(capsys):
    """Over six B-ALL-shaped cohorts (seeds fixed a priori), five-fold CV of the development
    procedure: on average its pooled out-of-fold AUROC at least that of marrow blasts alone,
    and on every cohort a calibration slope within 0.8-1.2.

    The procedure is `develop`: every supported candidate's search and calibration, selection
    by CV log loss, as `train_models` develops the model it registers (its bootstrap, intervals
    and internal-external validation do not change the risks). Measured at this commit:

    ====  ========  ==============  =====
    seed  pooled    marrow blasts   slope
          OOF AUROC alone
    ====  ========  ==============  =====
    0     0.845     0.820           0.98
    1     0.754     0.779           0.84
    2     0.778     0.788           1.02
    3     0.798     0.786           1.00
    4     0.773     0.769           1.05
    5     0.800     0.762           1.06
    ====  ========  ==============  =====

    Mean gain +0.007. Per cohort the check cannot be asked: the data-generating model itself
    (its true linear predictor, without missing values) ranks below marrow blasts alone on seed
    2 (AUROC 0.775 against 0.785) and on seed 7 (0.837 against 0.848), and pooling five fold
    models costs about 0.01 even for burden alone (same ranks within each fold)."""
    config = small_config()
    gains, lines = [], []
    for seed in ACROSS_SEEDS:
        valid, severe = ball_cohort(seed=seed)
        y = severe.astype(int).to_numpy()
        risk = np.empty(len(y))
        for train_pos, test_pos in StratifiedKFold(5, shuffle=True, random_state=3).split(valid,
                                                                                       y):
            rows, labels = valid.iloc[train_pos], y[train_pos]
            names = [c.name for c in check_candidates(rows, labels, config) if c.fitted]
            developed = develop(rows, labels, train_pos, names, config)
            risk[test_pos] = developed.predict[developed.selected](valid.iloc[test_pos])
        blasts = valid["marrow_blasts_pct"].astype(float)
        auroc, blasts_auroc = (roc_auc_score(y, risk),
                               roc_auc_score(y, blasts.fillna(blasts.median())))
        slope, _ = calibration_slope_intercept(y, risk)
        gains.append(auroc - blasts_auroc)
        lines.append(f"  seed {seed}: {len(y)} patients, {y.sum()} events, pooled out-of-fold "
                     f"AUROC {auroc:.3f} (marrow blasts alone {blasts_auroc:.3f}), slope "
                     f"{slope:.2f}")
        assert 0.8 <= slope <= 1.2, lines[-1]
    with capsys.disabled():
        print(f"\nB-ALL-shaped cohorts, mean AUROC gain over marrow blasts alone "
              f"{np.mean(gains):+.3f}:\n" + "\n".join(lines))
    assert np.mean(gains) >= 0, lines


# ------------------------------------------------------------------------------------------
# Tiers from the planning actions
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiers():
    return ActionTiers.from_config(load_score_config())


def test_thresholds_differ_by_therapy_class(tiers):
    rows = validate(baseline_frame()).valid  # P1 axi-cel LBCL, P2 teclistamab MM, P3 B-ALL CAR-T
    risk = np.full(len(rows), 0.05)
    codes = tiers.codes(rows, risk)
    assert list(codes) == [0, 1, 0]  # 5 %: low for CAR-T, intermediate for a bispecific
    assert list(tiers.codes(rows, np.full(len(rows), 0.30))) == [2, 2, 2]


def test_planning_text_follows_therapy_product_and_diagnosis(tiers):
    rows = validate(baseline_frame()).valid
    codes = np.full(len(rows), 2, dtype=np.int8)
    choices, index = tiers.planning(rows, codes)
    axi, tec, ball = (choices[i] for i in index)
    assert "around day 2 for a CD28 product" in axi and "dexamethasone on days 0-2" in axi
    assert "days 3-9 for a 4-1BB product" in ball
    assert "step-up" not in ball and "step-up" not in axi  # no bispecific text for CAR-T
    assert "tocilizumab before the first step-up" in tec  # myeloma evidence, myeloma patient
    blina = validate(baseline_frame(diagnosis=["B-ALL"] * 3,
                                    product=["axi-cel", "blinatumomab", "other_car_t"],
                                    marrow_plasma_cells_pct=["", "", ""],
                                    marrow_blasts_pct=["", "30", "40"])).valid
    choices, index = tiers.planning(blina, codes)
    assert "before the first step-up" not in choices[index[1]]  # not myeloma: not shown
    assert "24-48 h after each step-up" in choices[index[1]]


def test_thresholds_report_sensitivity_npv_and_say_why_not(tiers):
    rows = validate(baseline_frame(3)).valid
    y = np.array([1, 0, 0] * 3)
    risk = np.array([0.3, 0.02, 0.05] * 3)
    table = threshold_performance(risk, y, rows, tiers).set_index(["therapy_class", "tier"])
    assert table.loc[("CAR-T", "high"), "sensitivity"] == 1.0
    assert table.loc[("CAR-T", "intermediate"), "npv"] == 1.0
    assert np.isnan(table.loc[("bispecific", "high"), "sensitivity"])
    assert "no bispecific events" in table.loc[("bispecific", "high"), "note"]


def test_score_table_uses_the_action_tiers(result, cohort):
    valid, _ = cohort
    model = result.selected.model
    scores = model.score(valid, drivers=False)
    low, high = model.action_tiers.thresholds["CAR-T"]
    assert (scores.loc[scores["risk"] >= high, "risk_tier"] == "high").all()
    assert (scores.loc[scores["risk"] < low, "risk_tier"] == "low").all()
    assert not scores["planning"].str.contains("step-up").any()


def test_unordered_thresholds_are_refused(tmp_path):
    from pathlib import Path

    import yaml

    CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

    data = yaml.safe_load((CONFIG_DIR / "score.yaml").read_text())
    data["therapy_classes"]["CAR-T"]["high"]["risk_at_least"] = 0.05
    path = tmp_path / "score.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="must be below high"):
        load_score_config(path)
