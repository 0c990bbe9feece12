"""Behaviour of the synthetic cohort simulator (crsrisk.simulate.cohort)."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from crsrisk.config import ConfigError
from crsrisk.contract.products import COSTIM_DOMAINS, PRODUCTS
from crsrisk.contract.spec import BASELINE_COLUMNS, BASELINE_NAMES, OUTCOME_COLUMNS
from crsrisk.simulate.cohort import (
    SEVERE_TARGET,
    SimulatedCohort,
    SimulationConfig,
    load_simulation_config,
    simulate_cohort,
)

REPO = Path(__file__).resolve().parents[1]
BIG_N = 100_000

# The ASTCT 2019 rule of data-contract.md section 3, written out independently of any grading
# module: 0 without fever; 1 fever only; the worse of hypotension and hypoxia sets 2 / 3 / 4;
# 5 is death from CRS.
ASTCT_HYPOTENSION = {"none": 1, "no_vasopressor": 2, "one_vasopressor": 3,
                     "multiple_vasopressors": 4}  # fmt: skip
ASTCT_HYPOXIA = {"none": 1, "low_flow": 2, "high_flow": 3, "positive_pressure": 4}


def astct_grade(events: pd.DataFrame) -> np.ndarray:
    fever = events["fever"].to_numpy(dtype=bool)
    death = events["crs_death"].to_numpy(dtype=bool)
    worst = np.maximum(
        events["hypotension"].map(ASTCT_HYPOTENSION).to_numpy(dtype=int),
        events["hypoxia"].map(ASTCT_HYPOXIA).to_numpy(dtype=int),
    )
    return np.where(death, 5, np.where(fever, worst, 0))


def m_easix(baseline: pd.DataFrame) -> pd.Series:
    return baseline["ldh_u_l"] * (baseline["crp_mg_l"] / 10) / baseline["platelets_1e9_l"]


@pytest.fixture(scope="module")
def small() -> SimulatedCohort:
    return simulate_cohort(4000, 11)


@pytest.fixture(scope="module")
def big() -> SimulatedCohort:
    return simulate_cohort(BIG_N, 1)


@pytest.fixture(scope="module")
def big_severe(big: SimulatedCohort) -> np.ndarray:
    return astct_grade(big.events) >= 3


# --- determinism ------------------------------------------------------------------------------


# Same seed, same cohort, across refactors. These digests were produced by the simulator as it
# stood before it was split into named steps (crsrisk/simulate.py at the commit before the
# package layout), running `simulate_cohort(2000, seed)` and hashing each frame with
# pandas.util.hash_pandas_object(frame, index=False) then sha256. A change here means every
# published seed now gives a different cohort: only ever change it on purpose, and say so.
GOLDEN_COHORTS = {
    7: ("76d6acec2825c8c1548abcc600d6cccc752ac4fa648ba9a77ca2adfdab62eae3",
        "1f01f0928b1eab837dd468dce769ad9475218693e9bbfe0ccce19508138c70fd", 142.17979405797428),
    20240601: ("585e8b86ab82ceb6c3f5404e7e63d086f7d44b8dd697cc95f1aef6b0d2769f09",
               "e57c3e7239d556d59e511d4856aa1b2a21cda60c918231421987831b5968a17f",
               148.5781297933251),
}


def _digest(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


@pytest.mark.parametrize("seed", sorted(GOLDEN_COHORTS))
def test_same_seed_gives_the_cohort_it_always_gave(seed: int) -> None:
    baseline, events, risk_sum = GOLDEN_COHORTS[seed]
    cohort = simulate_cohort(2000, seed)
    assert _digest(cohort.baseline) == baseline
    assert _digest(cohort.events) == events
    assert float(cohort.true_risk.sum()) == pytest.approx(risk_sum, abs=1e-9)


def test_a_configured_cohort_is_the_one_it_always_was() -> None:
    # As above, with 3 sites all grading on older scales (same provenance of the digests).
    cfg = SimulationConfig(n_sites=3, other_scale_fraction=1.0)
    cohort = simulate_cohort(500, 3, config=cfg)
    assert _digest(cohort.baseline) == (
        "f7e8562584ae3e3a87411c4e8517314dcdd084e57c0d44793333a1fc5daa1505")
    assert _digest(cohort.events) == (
        "259c4c6e004b6739c01fadea5df4e43d227adc9b4b9dd9ce0237922d5f402422")
    assert float(cohort.true_risk.sum()) == pytest.approx(36.91238322406592, abs=1e-9)


def test_same_seed_gives_identical_cohort() -> None:
    a, b = simulate_cohort(3000, 7), simulate_cohort(3000, 7)
    pd.testing.assert_frame_equal(a.baseline, b.baseline)
    pd.testing.assert_frame_equal(a.events, b.events)
    np.testing.assert_array_equal(a.true_risk, b.true_risk)


def test_different_seed_gives_different_cohort() -> None:
    a, b = simulate_cohort(3000, 7), simulate_cohort(3000, 8)
    assert not a.baseline.equals(b.baseline)
    assert not np.array_equal(a.true_risk, b.true_risk)


# --- shape, dtypes and contract ranges --------------------------------------------------------


def test_columns_in_contract_order_plus_outcome(small: SimulatedCohort) -> None:
    assert tuple(small.baseline.columns) == (*BASELINE_NAMES, "crs_max_grade", "crs_grading_scale")
    assert list(small.events.columns) == ["patient_id", "fever", "hypotension", "hypoxia",
                                          "crs_death"]  # fmt: skip
    assert len(small.baseline) == len(small.events) == len(small.true_risk) == 4000


@pytest.mark.parametrize("spec", BASELINE_COLUMNS + OUTCOME_COLUMNS, ids=lambda s: s.name)
def test_documented_dtypes(small: SimulatedCohort, spec) -> None:
    col = small.baseline[spec.name]
    expected = {
        "str": "str", "category": "str", "float": "float64", "int": "Int64",
        "bool": "boolean", "date": "datetime64[ns]",
    }[spec.kind]  # fmt: skip
    assert col.dtype == expected, (spec.name, col.dtype)
    if spec.kind == "date":
        assert (col == col.dt.normalize()).all()


@pytest.mark.parametrize("spec", BASELINE_COLUMNS + OUTCOME_COLUMNS, ids=lambda s: s.name)
def test_values_inside_contract(big: SimulatedCohort, spec) -> None:
    col = big.baseline[spec.name]
    if not spec.nullable:
        assert col.notna().all(), spec.name
    present = col.dropna()
    if spec.min is not None:
        assert (present >= spec.min).all(), spec.name
    if spec.max is not None:
        assert (present <= spec.max).all(), spec.name
    if spec.levels:
        assert set(present.unique()) <= set(spec.levels), spec.name


def test_ids_dates_and_sites(big: SimulatedCohort) -> None:
    b = big.baseline
    assert b["patient_id"].is_unique
    assert b["patient_id"].str.fullmatch(r"SIM-\d{6}").all()
    assert (big.events["patient_id"] == b["patient_id"]).all()
    assert set(b["site"]) == {f"site_{c}" for c in "ABCDEFGH"}
    assert b["infusion_date"].min() >= pd.Timestamp("2017-06-01")
    assert b["infusion_date"].max() <= pd.Timestamp("2026-06-30")
    years = b["infusion_date"].dt.year
    assert years.nunique() == 10  # spread over 2017..2026


def test_parquet_round_trip(small: SimulatedCohort, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "cohort.parquet"
    small.baseline.to_parquet(path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), small.baseline)


# --- product consistency ----------------------------------------------------------------------

APPROVAL_YEAR = {  # from the brief; approximate first years of use
    "axi-cel": 2017, "tisa-cel": 2017, "brexu-cel": 2020, "liso-cel": 2021, "ide-cel": 2021,
    "cilta-cel": 2022, "obe-cel": 2024, "teclistamab": 2022, "mosunetuzumab": 2022,
    "talquetamab": 2023, "elranatamab": 2023, "glofitamab": 2023, "epcoritamab": 2023,
    "tarlatamab": 2024,
}  # fmt: skip


def test_every_product_appears_with_a_realistic_class_mix(big: SimulatedCohort) -> None:
    b = big.baseline
    assert set(b["product"]) == set(PRODUCTS)
    share_car_t = (b["therapy_class"] == "CAR-T").mean()
    assert 0.5 < share_car_t < 0.7
    for other in ("other_car_t", "other_bispecific"):
        assert 0.005 < (b["product"] == other).mean() < 0.08


def test_product_class_costim_and_diagnosis_agree(big: SimulatedCohort) -> None:
    b = big.baseline
    for name, spec in PRODUCTS.items():
        rows = b[b["product"] == name]
        assert (rows["therapy_class"] == spec.therapy_class).all(), name
        if spec.usual_diagnoses:
            assert set(rows["diagnosis"]) <= set(spec.usual_diagnoses), name
        if spec.therapy_class == "CAR-T":
            if spec.costim_domain is None:
                assert set(rows["costim_domain"]) == set(COSTIM_DOMAINS), name
            else:
                assert (rows["costim_domain"] == spec.costim_domain).all(), name
            assert rows["cell_dose_1e6_per_kg"].notna().mean() > 0.8, name
        else:
            assert rows["costim_domain"].isna().all(), name
            assert rows["cell_dose_1e6_per_kg"].isna().all(), name
        if name in APPROVAL_YEAR:
            assert rows["infusion_date"].dt.year.min() >= APPROVAL_YEAR[name], name


def test_lymphodepletion_and_doses_per_product(big: SimulatedCohort) -> None:
    b = big.baseline
    car_t = b["therapy_class"] == "CAR-T"
    assert (b.loc[car_t, "lymphodepletion"] == "flu_cy").mean() > 0.8
    assert (b.loc[~car_t, "lymphodepletion"] == "none").mean() > 0.9
    tisa_benda = (b.loc[b["product"] == "tisa-cel", "lymphodepletion"] == "bendamustine").mean()
    assert tisa_benda > 0.1
    dose = b.groupby("product")["cell_dose_1e6_per_kg"].median()
    assert dose["axi-cel"] == pytest.approx(2.0, abs=0.2)
    assert dose["tisa-cel"] == pytest.approx(3.0, rel=0.5)
    assert 4 <= dose["ide-cel"] <= 15
    assert dose["cilta-cel"] < 1.0


# --- true risk and outcome --------------------------------------------------------------------


def test_true_risk_is_a_probability_and_not_a_column(big: SimulatedCohort, big_severe) -> None:
    risk = big.true_risk
    assert risk.shape == (BIG_N,)
    assert np.all((risk > 0) & (risk < 1))
    assert not any("risk" in c for c in big.baseline.columns)
    # The outcome is drawn from it: the mean risk matches the observed rate.
    assert risk.mean() == pytest.approx(big_severe.mean(), abs=0.005)


def test_events_follow_astct(big: SimulatedCohort) -> None:
    grade = astct_grade(big.events)
    np.testing.assert_array_equal(grade, big.baseline["crs_max_grade"].to_numpy(dtype=int))
    assert (big.baseline["crs_grading_scale"] == "ASTCT").all()
    counts = np.bincount(grade, minlength=6)
    assert (counts > 0).all()
    # Grade 5 is rare: a few % of severe CRS.
    assert 0.005 < counts[5] / counts[3:].sum() < 0.06


# Published trial figures on the ASTCT scale, kept as targets unchanged.
ASTCT_TRIAL_RATES = {"cilta-cel": 0.04, "obe-cel": 0.024, "teclistamab": 0.006,
                     "glofitamab": 0.04, "epcoritamab": 0.025}  # fmt: skip


def test_astct_trial_figures_are_the_targets() -> None:
    for name, rate in ASTCT_TRIAL_RATES.items():
        assert SEVERE_TARGET[name] == pytest.approx(rate), name
    assert set(SEVERE_TARGET) == set(PRODUCTS)


def test_per_product_severe_rates_match_targets(big: SimulatedCohort, big_severe) -> None:
    rates = pd.Series(big_severe).groupby(big.baseline["product"].to_numpy()).agg(["mean", "size"])
    for name, row in rates.iterrows():
        if row["size"] >= 1000:
            assert abs(row["mean"] - SEVERE_TARGET[name]) < 0.03, (name, row["mean"])


def test_any_crs_rates_are_product_typical(big: SimulatedCohort) -> None:
    grade = astct_grade(big.events)
    any_crs = pd.Series(grade >= 1).groupby(big.baseline["product"].to_numpy()).mean()
    assert any_crs["axi-cel"] == pytest.approx(0.93, abs=0.03)  # ZUMA-1
    assert any_crs["blinatumomab"] == pytest.approx(0.14, abs=0.03)  # TOWER
    assert any_crs["teclistamab"] == pytest.approx(0.72, abs=0.03)  # MajesTEC-1


def test_m_easix_auroc_on_car_t_is_near_published(big: SimulatedCohort, big_severe) -> None:
    b = big.baseline
    score = m_easix(b)
    ok = score.notna().to_numpy()
    car_t = (b["therapy_class"] == "CAR-T").to_numpy()
    auc_car_t = roc_auc_score(big_severe[ok & car_t], score[ok & car_t])
    assert 0.70 <= auc_car_t <= 0.85
    auc_all = roc_auc_score(big_severe[ok], score[ok])
    oracle = roc_auc_score(big_severe, big.true_risk)
    assert oracle - auc_all > 0.05


def test_published_risk_factor_directions(big: SimulatedCohort, big_severe) -> None:
    b = big.baseline
    severe = pd.Series(big_severe, index=b.index)
    all_rows = b["diagnosis"] == "B-ALL"
    blasts = b["marrow_blasts_pct"]
    high = severe[all_rows & (blasts >= 5)].mean()
    mrd = severe[all_rows & (blasts < 5)].mean()
    assert high > 3 * mrd  # literature: ~40 % vs ~5 %
    lbcl_car_t = (b["diagnosis"] == "LBCL") & (b["therapy_class"] == "CAR-T")
    cd28 = severe[lbcl_car_t & (b["costim_domain"] == "CD28")].mean()
    bb = severe[lbcl_car_t & (b["costim_domain"] == "4-1BB")].mean()
    assert cd28 > bb
    hlh = b["hlh_history"].fillna(False).astype(bool)
    assert severe[hlh].mean() > 2 * severe[~hlh].mean()
    low_plt = b["platelets_1e9_l"] < b["platelets_1e9_l"].median()
    assert severe[low_plt].mean() > severe[~low_plt].mean()
    # Teclistamab: burden does not predict CRS (literature), unlike myeloma CAR-T.
    logit = np.log(big.true_risk / (1 - big.true_risk))
    corr = {}
    for name in ("teclistamab", "cilta-cel"):
        rows = ((b["product"] == name) & b["marrow_plasma_cells_pct"].notna()).to_numpy()
        plasma = np.log(b["marrow_plasma_cells_pct"].to_numpy(dtype=float)[rows])
        corr[name] = np.corrcoef(plasma, logit[rows])[0, 1]
    assert corr["cilta-cel"] > corr["teclistamab"] + 0.15, corr


def test_labs_are_near_published_medians(big: SimulatedCohort) -> None:
    b = big.baseline
    lbcl = b[b["diagnosis"] == "LBCL"]
    assert 10 <= lbcl["crp_mg_l"].median() <= 30
    assert 500 <= lbcl["ferritin_ng_ml"].median() <= 1000
    assert 130 <= lbcl["platelets_1e9_l"].median() <= 180
    assert 0.5 <= (lbcl["ldh_u_l"].dropna() > 250).mean() <= 0.65
    ball = b[b["diagnosis"] == "B-ALL"]
    assert ball["crp_mg_l"].median() == pytest.approx(5.7, rel=0.2)
    assert ball["ferritin_ng_ml"].median() == pytest.approx(456, rel=0.2)
    assert ball["ldh_u_l"].median() == pytest.approx(163, rel=0.2)
    assert ball["platelets_1e9_l"].median() == pytest.approx(84, rel=0.2)
    # One latent inflammation factor: CRP, ferritin and IL-6 go up together, platelets down.
    corr = np.log(b[["crp_mg_l", "ferritin_ng_ml", "il6_pg_ml", "platelets_1e9_l"]]).corr()
    assert corr.loc["crp_mg_l", "ferritin_ng_ml"] > 0.2
    assert corr.loc["crp_mg_l", "il6_pg_ml"] > 0.2
    assert corr.loc["crp_mg_l", "platelets_1e9_l"] < -0.1


# --- missingness ------------------------------------------------------------------------------


def test_burden_markers_only_in_their_diseases(big: SimulatedCohort) -> None:
    b = big.baseline
    lymphoma = b["diagnosis"].isin(["LBCL", "FL", "MCL"])
    assert b.loc[~lymphoma, "spd_cm2"].isna().all()
    assert b.loc[lymphoma, "spd_cm2"].notna().mean() > 0.5
    assert b.loc[b["diagnosis"] != "B-ALL", "marrow_blasts_pct"].isna().all()
    assert b.loc[b["diagnosis"] == "B-ALL", "marrow_blasts_pct"].notna().mean() > 0.8
    assert b.loc[b["diagnosis"] != "MM", "marrow_plasma_cells_pct"].isna().all()
    assert b.loc[b["diagnosis"] == "MM", "marrow_plasma_cells_pct"].notna().mean() > 0.75


def test_missingness_is_not_completely_at_random(big: SimulatedCohort) -> None:
    b = big.baseline
    by_site = b.drop(columns=["site"]).isna().groupby(b["site"].to_numpy()).mean()
    for column in ("crp_mg_l", "ferritin_ng_ml", "il6_pg_ml"):
        assert by_site[column].max() - by_site[column].min() > 0.1, column
    assert b["il6_pg_ml"].isna().mean() > 0.5
    assert (by_site["il6_pg_ml"] < 0.3).any()  # some sites measure IL-6 routinely
    fit = b["ecog"] == 0
    unfit = b["ecog"] >= 1
    for column in ("crp_mg_l", "ferritin_ng_ml"):
        assert b.loc[fit, column].isna().mean() > b.loc[unfit, column].isna().mean() + 0.03
    for column in ("weight_kg", "sex"):
        assert 0 < b[column].isna().mean() < 0.1


# --- grading scales and config ----------------------------------------------------------------


def test_other_scale_sites_regrade_from_the_same_events() -> None:
    astct = simulate_cohort(20_000, 3)
    mixed = simulate_cohort(20_000, 3, config=SimulationConfig(other_scale_fraction=0.5))
    pd.testing.assert_frame_equal(astct.events, mixed.events)
    np.testing.assert_array_equal(astct.true_risk, mixed.true_risk)
    outcome = ["crs_max_grade", "crs_grading_scale"]
    pd.testing.assert_frame_equal(
        astct.baseline.drop(columns=outcome), mixed.baseline.drop(columns=outcome)
    )
    b = mixed.baseline
    scales = b.groupby("site")["crs_grading_scale"].nunique()
    assert (scales == 1).all()  # one scale per site
    per_site = b.groupby("site")["crs_grading_scale"].first()
    assert (per_site != "ASTCT").sum() == 4
    assert set(per_site) <= {"ASTCT", "Lee2014", "Penn"}
    truth = astct_grade(mixed.events)
    reported = b["crs_max_grade"].to_numpy(dtype=int)
    is_astct = (b["crs_grading_scale"] == "ASTCT").to_numpy()
    np.testing.assert_array_equal(reported[is_astct], truth[is_astct])
    # Scales agree on presence of CRS but not on grade.
    np.testing.assert_array_equal(reported >= 1, truth >= 1)
    assert (reported[~is_astct] != truth[~is_astct]).any()
    penn = (b["crs_grading_scale"] == "Penn").to_numpy()
    lee = (b["crs_grading_scale"] == "Lee2014").to_numpy()
    if penn.any():  # Penn inflates grade >= 3
        assert (reported[penn] >= 3).mean() > (truth[penn] >= 3).mean()
    if lee.any():  # Lee 2014 grades one vasopressor as 2
        assert (reported[lee] >= 3).mean() < (truth[lee] >= 3).mean()


def test_load_config_from_repo_file_and_defaults(tmp_path: Path) -> None:
    cfg = load_simulation_config(REPO / "configs" / "simulate.yaml")
    assert cfg.n_sites == 8
    assert cfg.start_date == date(2017, 6, 1)
    assert cfg.end_date == date(2026, 6, 30)
    assert cfg.other_scale_fraction == 0.0
    assert load_simulation_config(None) == SimulationConfig()
    path = tmp_path / "sim.yaml"
    path.write_text("n_sites: 3\nend_date: '2024-12-31'\nother_scale_fraction: 0.34\n")
    cfg = load_simulation_config(path)
    assert cfg == SimulationConfig(n_sites=3, end_date=date(2024, 12, 31),
                                   other_scale_fraction=0.34)
    cohort = simulate_cohort(2000, 1, config=cfg)
    assert set(cohort.baseline["site"]) == {"site_A", "site_B", "site_C"}
    assert cohort.baseline["infusion_date"].max() <= pd.Timestamp("2024-12-31")
    assert "tarlatamab" in set(cohort.baseline["product"])  # approved 2024, still in range


def test_products_approved_after_the_end_date_are_not_used() -> None:
    cfg = SimulationConfig(start_date=date(2012, 1, 1), end_date=date(2021, 6, 30))
    b = simulate_cohort(5000, 2, config=cfg).baseline
    assert b["infusion_date"].min() >= pd.Timestamp("2012-01-01")
    for name in b["product"].unique():
        if name in APPROVAL_YEAR:
            first = b.loc[b["product"] == name, "infusion_date"].dt.year.min()
            assert first >= APPROVAL_YEAR[name], name
    assert {"cilta-cel", "obe-cel", "tarlatamab"}.isdisjoint(b["product"])
    assert {"axi-cel", "blinatumomab", "ide-cel"} <= set(b["product"])


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("n_site: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"Config file {path}: n_site: ")):
        load_simulation_config(path)
    with pytest.raises(ValueError, match="other_scale_fraction"):
        SimulationConfig(other_scale_fraction=1.5)
    with pytest.raises(ValueError, match="precede"):
        SimulationConfig(start_date=date(2025, 1, 1), end_date=date(2024, 1, 1))
    with pytest.raises(ValueError, match="2009-01-01"):
        SimulationConfig(start_date=date(2001, 1, 1))
    path.write_text("end_date: not a date\n")
    with pytest.raises(ConfigError, match="end_date"):
        load_simulation_config(path)


@pytest.mark.parametrize(("text", "where"), [
    ("n_sites: 0\n", "n_sites"),
    ("start_date: 2025-01-01\nend_date: 2024-01-01\n", "precede"),
    ("other_scale_fraction: [1, 2]\n", "other_scale_fraction"),
    ("- just a list\n", "mapping"),
    ("n_sites: [unclosed\n", "not valid YAML"),
])
def test_cli_simulate_with_a_bad_config_says_one_sentence_and_exits_2(
    tmp_path: Path, text: str, where: str
) -> None:
    from typer.testing import CliRunner

    from crsrisk.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "cohort.csv"
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), "--n", "10",
                                      "--config", str(bad)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], lines
    assert not out.exists()
