"""Synthetic CAR-T / bispecific cohorts with a known true risk of severe CRS.

The simulator draws treatment episodes that follow the data contract: a baseline table with
every contract column plus the outcome columns, the raw CRS event table from which the ASTCT
grade can always be re-derived, and each episode's true probability of ASTCT grade >= 3 CRS
(the oracle), which is never a column of the baseline table. The parameters and their sources
are in `crsrisk.simulate.parameters`, the steps in `crsrisk.simulate.steps`; this module wires
them and builds the tables. The cohort is for testing and benchmarking, never for clinical use.

Outline of the generative model
-------------------------------
site -> product (site-specific mix) -> diagnosis -> infusion date (never before approval);
two correlated latent factors per patient, tumour burden and inflammation, drive the burden
markers and the labs (log-normal marginals near the published medians); the true log-odds of
severe CRS is additive in the log labs, log burden, lymphodepletion, cell dose and the clinical
flags, plus a per-product intercept calibrated numerically on the drawn covariates so that each
product's rate of grade >= 3 equals its target. Severe ~ Bernoulli(true risk); the full ASTCT
grade and consistent raw events are drawn given severity; values are then masked not completely
at random (by site, diagnosis and fitness).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import expit

from crsrisk.config import SimulationConfig, load_simulation_config
from crsrisk.contract.spec import BASELINE_COLUMNS, BASELINE_NAMES
from crsrisk.simulate import steps
from crsrisk.simulate.parameters import ANY_CRS_TARGET, HYPOTENSION, HYPOXIA, SEVERE_TARGET

__all__ = [
    "ANY_CRS_TARGET",
    "REFERENCE_N",
    "REFERENCE_SEED",
    "SEVERE_TARGET",
    "SimulatedCohort",
    "SimulationConfig",
    "load_simulation_config",
    "reference_intercepts",
    "simulate_cohort",
]

# The per-product intercepts are calibrated once, on a large reference cohort of the default
# configuration, so that every seed and every config share one true risk model: a model trained
# on one seed can then be tested on another (external validation) without a shifted truth.
REFERENCE_N = 200_000
REFERENCE_SEED = 20240601


@dataclass(frozen=True)
class SimulatedCohort:
    """A simulated cohort.

    Attributes
    ----------
    baseline
        Every contract baseline column (``BASELINE_NAMES``, in that order), then
        ``crs_max_grade`` (Int64) and ``crs_grading_scale`` (str).
    events
        Raw CRS event table (contract section 3), one row per patient, same order as baseline.
    true_risk
        Each patient's true probability of ASTCT grade >= 3 CRS, aligned with baseline rows.
    """

    baseline: pd.DataFrame
    events: pd.DataFrame
    true_risk: np.ndarray


def simulate_cohort(
    n: int, seed: int, *, config: SimulationConfig | None = None
) -> SimulatedCohort:
    """Simulate a cohort of CAR-T and bispecific treatment episodes with known true risk.

    Parameters
    ----------
    n
        Number of episodes (rows).
    seed
        Seed of ``numpy.random.default_rng``; the same seed and config give identical output.
    config
        Sites, date range and grading-scale settings; defaults when ``None``. Its own ``n`` and
        ``seed`` fields are ignored here.

    Returns
    -------
    SimulatedCohort
        Baseline table (contract columns plus ``crs_max_grade`` and ``crs_grading_scale``),
        raw CRS events, and the true probability of ASTCT grade >= 3 for each row.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    cfg = config if config is not None else SimulationConfig()
    cohort, _ = _simulate(n, seed, cfg, reference_intercepts())
    return cohort


@lru_cache(maxsize=1)
def reference_intercepts() -> np.ndarray:
    """Per-product log-odds intercepts matching SEVERE_TARGET on the reference cohort."""
    _, intercept = _simulate(REFERENCE_N, REFERENCE_SEED, SimulationConfig(), None)
    return intercept


def _patients(rng: np.random.Generator, cfg: SimulationConfig, n: int) -> steps.Draws:
    """Everything known before treatment, drawn in the simulator's fixed order."""
    p = steps.products(rng, cfg, n)
    p["dx"] = steps.diagnoses(rng, p["product"])
    p["infusion"] = steps.infusion_dates(rng, cfg, p["product"])
    p["demo"] = steps.demographics(rng, p["dx"], p["prod_name"])
    p["latent"] = steps.latent_factors(rng, n)
    p["labs"] = steps.labs(rng, p["dx"], p["demo"]["age"], p["latent"])
    p["markers"] = steps.burden_markers(rng, p["dx"]["dx"], p["latent"]["burden"])
    p["clinical"] = steps.clinical(rng, p["dx"], p["is_cart"], p["latent"])
    p["ld"] = steps.lymphodepletion(rng, p["product"])
    p["dose"] = steps.cell_dose(rng, p["prod_name"], p["dx"]["is_all"], p["demo"]["weight"])
    p["costim"] = steps.costimulation(rng, p["product"], p["prod_name"])
    return p


def _simulate(
    n: int, seed: int, cfg: SimulationConfig, intercept: np.ndarray | None
) -> tuple[SimulatedCohort, np.ndarray]:
    """Simulate; calibrate the intercepts on this cohort when ``intercept`` is None."""
    rng = np.random.default_rng(seed)
    p = _patients(rng, cfg, n)
    eta = steps.true_log_odds(p)
    if intercept is None:
        intercept = steps.calibrate_intercepts(eta, p["product"], steps.severe_targets())
    true_risk = expit(intercept[p["product"]] + eta)
    grade = steps.outcome(rng, true_risk, p["product"], p["is_cart"])
    events = steps.events(rng, grade)
    scale, reported = steps.grading_scale(rng, cfg, p["site"], grade, events)
    miss = steps.missingness(rng, cfg, p)
    observed = steps.observed_labs(rng, cfg, p["site"], p["labs"])
    baseline = _baseline_frame(p, cfg, miss, observed)
    none = np.zeros(n, dtype=bool)
    baseline["crs_max_grade"] = _int_series(reported, none)
    baseline["crs_grading_scale"] = _str_series(scale.astype(object))
    _clip_to_contract(baseline)
    return SimulatedCohort(baseline, _events_frame(baseline["patient_id"], events),
                           true_risk), intercept


# --- tables -------------------------------------------------------------------------------------


def _str_series(values: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    out = values.astype(object)
    if missing is not None:
        out[missing] = np.nan
    return pd.Series(out, dtype="str")


def _float_series(values: np.ndarray, decimals: int, missing: np.ndarray) -> pd.Series:
    out = np.round(values.astype(float), decimals)
    out[missing] = np.nan
    return pd.Series(out, dtype="float64")


def _bool_series(values: np.ndarray, missing: np.ndarray) -> pd.Series:
    return pd.Series(pd.arrays.BooleanArray(values.astype(bool), missing.copy()))


def _int_series(values: np.ndarray, missing: np.ndarray) -> pd.Series:
    return pd.Series(pd.arrays.IntegerArray(values.astype(np.int64), missing.copy()))


def _baseline_frame(p: steps.Draws, cfg: SimulationConfig, miss: steps.Draws,
                    observed: steps.Draws) -> pd.DataFrame:
    """The contract's baseline columns, in contract order, with the missing values blanked."""
    n = p["site"].shape[0]
    ids = np.char.add("SIM-", np.char.zfill(np.arange(1, n + 1).astype(str), 6)).astype(object)
    none = np.zeros(n, dtype=bool)
    demo, lab, mark, clin = p["demo"], p["labs"], p["markers"], p["clinical"]
    columns: dict[str, pd.Series] = {
        "patient_id": _str_series(ids),
        "site": _str_series(np.array(steps.site_names(cfg.n_sites), dtype=object)[p["site"]]),
        "infusion_date": pd.Series(p["infusion"].astype("datetime64[ns]")),
        "age_years": _float_series(demo["age"], 1, none),
        "sex": _str_series(np.where(demo["male"], "M", "F"), miss["sex"]),
        "weight_kg": _float_series(demo["weight"], 1, miss["weight"]),
        "ecog": _int_series(clin["ecog"], miss["ecog"]),
        "diagnosis": _str_series(p["dx"]["dx_name"]),
        "therapy_class": _str_series(np.where(p["is_cart"], "CAR-T", "bispecific")),
        "product": _str_series(p["prod_name"]),
        "costim_domain": _str_series(p["costim"], ~p["is_cart"]),
        "cell_dose_1e6_per_kg": _float_series(p["dose"], 2, miss["dose"]),
        "lymphodepletion": _str_series(p["ld"], miss["ld"]),
        "prior_lines": _int_series(clin["prior_lines"], miss["prior_lines"]),
        "bridging_therapy": _bool_series(clin["bridging"], miss["bridging"]),
        "ldh_u_l": _float_series(observed["ldh"], 0, miss["ldh"]),
        "spd_cm2": _float_series(mark["spd"], 1, miss["spd"]),
        "marrow_blasts_pct": _float_series(mark["blasts"], 2, miss["blasts"]),
        "marrow_plasma_cells_pct": _float_series(mark["plasma"], 1, miss["plasma"]),
        "bulky_disease": _bool_series(mark["bulky"], miss["bulky"]),
        "crp_mg_l": _float_series(observed["crp"], 1, miss["crp"]),
        "ferritin_ng_ml": _float_series(observed["ferritin"], 0, miss["ferritin"]),
        "platelets_1e9_l": _float_series(observed["plt"], 0, miss["plt"]),
        "anc_1e9_l": _float_series(lab["anc"], 2, miss["anc"]),
        "hemoglobin_g_dl": _float_series(lab["hb"], 1, miss["hb"]),
        "creatinine_mg_dl": _float_series(lab["creat"], 2, miss["creat"]),
        "il6_pg_ml": _float_series(lab["il6"], 1, miss["il6"]),
        "prior_autoimmune_disease": _bool_series(clin["autoimmune"], miss["autoimmune"]),
        "hlh_history": _bool_series(clin["hlh"], miss["hlh"]),
    }
    if tuple(columns) != BASELINE_NAMES:
        raise RuntimeError("the simulator's columns are out of step with the data contract")
    return pd.DataFrame(columns)


def _events_frame(patient_id: pd.Series, ev: steps.Draws) -> pd.DataFrame:
    """The raw CRS event table, one row per patient."""
    none = np.zeros(len(patient_id), dtype=bool)
    return pd.DataFrame({
        "patient_id": patient_id.reset_index(drop=True),
        "fever": _bool_series(ev["fever"], none),
        "hypotension": _str_series(HYPOTENSION[ev["hypotension"]]),
        "hypoxia": _str_series(HYPOXIA[ev["hypoxia"]]),
        "crs_death": _bool_series(ev["death"], none),
    })


def _clip_to_contract(frame: pd.DataFrame) -> None:
    """Clip float columns to their contract ranges (guards against rounding at the edges)."""
    for spec in BASELINE_COLUMNS:
        if spec.kind == "float" and (spec.min is not None or spec.max is not None):
            frame[spec.name] = frame[spec.name].clip(lower=spec.min, upper=spec.max)
