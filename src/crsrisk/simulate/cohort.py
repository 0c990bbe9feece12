"""Synthetic CAR-T / bispecific cohorts with a known true risk of severe CRS.

The simulator draws treatment episodes that follow the data contract (docs/contract.md):
a baseline table with every contract column plus the outcome columns, the raw CRS event table
from which the ASTCT grade can always be re-derived, and each episode's true probability of
ASTCT grade >= 3 CRS (the oracle), which is never a column of the baseline table.

Every parameter below carries its source: ``lit: <row>`` names the published source it is
grounded in, ``(unverified)`` marks figures recalled rather than read from the paper, and
``assumption`` marks a choice of ours. The numbers are plausible, not estimates: the
cohort is for testing and benchmarking the pipeline, never for clinical conclusions.

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

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.special import expit

from crsrisk.contract.products import DIAGNOSES, HYPOTENSION_LEVELS, HYPOXIA_LEVELS, PRODUCTS
from crsrisk.contract.spec import BASELINE_COLUMNS, BASELINE_NAMES

__all__ = [
    "ANY_CRS_TARGET",
    "SEVERE_TARGET",
    "SimulatedCohort",
    "SimulationConfig",
    "load_simulation_config",
    "simulate_cohort",
]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of the cohort simulator.

    Attributes
    ----------
    n, seed
        Cohort size and seed used by callers that simulate from a config file (the CLI);
        `simulate_cohort` takes its own ``n`` and ``seed`` arguments and ignores these.
    n_sites
        Number of treating centres, named ``site_A``, ``site_B``, ...
    start_date, end_date
        Range of infusion dates. Fixed dates rather than "today", so a seed always gives the
        same cohort.
    other_scale_fraction
        Fraction of sites that report ``crs_max_grade`` on Lee 2014 or Penn instead of ASTCT.
        The raw events stay the ASTCT ground truth.
    """

    n: int = 5000
    seed: int = 20240601
    n_sites: int = 8
    start_date: date = date(2017, 6, 1)
    end_date: date = date(2026, 6, 30)
    other_scale_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not 1 <= self.n_sites <= 702:
            raise ValueError(f"n_sites must be in 1..702, got {self.n_sites}")
        if not self.start_date < self.end_date:
            raise ValueError(f"start_date {self.start_date} must precede end_date {self.end_date}")
        if self.start_date < date(2009, 1, 1):
            raise ValueError("start_date must not precede the contract's first date, 2009-01-01")
        if not 0.0 <= self.other_scale_fraction <= 1.0:
            raise ValueError(
                f"other_scale_fraction must be in [0, 1], got {self.other_scale_fraction}"
            )


def _as_date(value: Any, key: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"{key} must be an ISO date (YYYY-MM-DD), got {value!r}") from exc


def load_simulation_config(path: str | Path | None = None) -> SimulationConfig:
    """Read simulator settings from a YAML file such as ``configs/simulate.yaml``.

    Parameters
    ----------
    path
        YAML file with any of the fields of `SimulationConfig`. ``None`` gives the defaults.

    Returns
    -------
    SimulationConfig
        The settings; fields absent from the file keep their defaults.

    Raises
    ------
    ValueError
        If the file holds an unknown key or a value out of range.
    """
    if path is None:
        return SimulationConfig()
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(SimulationConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown simulation settings {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("start_date", "end_date"):
            kwargs[key] = _as_date(value, key)
        elif key in ("n", "seed", "n_sites"):
            kwargs[key] = int(value)
        else:
            kwargs[key] = float(value)
    return SimulationConfig(**kwargs)


@dataclass(frozen=True)
class SimulatedCohort:
    """A simulated cohort.

    Attributes
    ----------
    baseline
        Every contract baseline column (``columns.BASELINE_NAMES``, in that order), then
        ``crs_max_grade`` (Int64) and ``crs_grading_scale`` (str).
    events
        Raw CRS event table (contract section 3), one row per patient, same order as baseline.
    true_risk
        Each patient's true probability of ASTCT grade >= 3 CRS, aligned with baseline rows.
    """

    baseline: pd.DataFrame
    events: pd.DataFrame
    true_risk: np.ndarray


# --------------------------------------------------------------------------------------------
# Parameters. "lit:" = a published source; "assumption" = ours.
# --------------------------------------------------------------------------------------------

# Share of episodes per product: CAR-T 60 %, bispecifics 40 % (assumption: rough real-world
# volumes at academic centres in the late 2010s-2020s).
PRODUCT_MIX: dict[str, float] = {
    "axi-cel": 0.17,
    "tisa-cel": 0.08,
    "liso-cel": 0.08,
    "brexu-cel": 0.06,
    "ide-cel": 0.06,
    "cilta-cel": 0.08,
    "obe-cel": 0.03,
    "other_car_t": 0.04,  # assumption: "a few %" of rows, trial or academic constructs
    "blinatumomab": 0.07,
    "teclistamab": 0.07,
    "talquetamab": 0.04,
    "elranatamab": 0.04,
    "glofitamab": 0.05,
    "epcoritamab": 0.05,
    "mosunetuzumab": 0.03,
    "tarlatamab": 0.03,
    "other_bispecific": 0.02,  # assumption: "a few %"
}

# Diagnosis given product, within the contract's usual diagnoses (products.py); proportions are
# assumptions guided by the pivotal trials named in lit: "Severe CRS ... pivotal trials".
DIAGNOSIS_MIX: dict[str, dict[str, float]] = {
    "axi-cel": {"LBCL": 0.9, "FL": 0.1},
    "brexu-cel": {"MCL": 0.6, "B-ALL": 0.4},
    "tisa-cel": {"LBCL": 0.6, "B-ALL": 0.3, "FL": 0.1},
    "liso-cel": {"LBCL": 0.75, "CLL": 0.1, "FL": 0.08, "MCL": 0.07},
    "obe-cel": {"B-ALL": 1.0},
    "ide-cel": {"MM": 1.0},
    "cilta-cel": {"MM": 1.0},
    "other_car_t": {"LBCL": 0.3, "B-ALL": 0.25, "MM": 0.2, "CLL": 0.1, "MCL": 0.05, "other": 0.1},
    "blinatumomab": {"B-ALL": 1.0},
    "teclistamab": {"MM": 1.0},
    "talquetamab": {"MM": 1.0},
    "elranatamab": {"MM": 1.0},
    "glofitamab": {"LBCL": 1.0},
    "epcoritamab": {"LBCL": 0.8, "FL": 0.2},
    "mosunetuzumab": {"FL": 1.0},
    "tarlatamab": {"SCLC": 1.0},
    "other_bispecific": {"MM": 0.35, "LBCL": 0.25, "FL": 0.1, "B-ALL": 0.1, "other": 0.2},
}

# First year of use (approximate US approval years, as given in the brief; assumption for the
# exact day, taken as 1 January). None: any date (blinatumomab approved 2014; "other" products
# stand for trials and academic constructs).
APPROVAL_YEAR: dict[str, int | None] = {
    "axi-cel": 2017,
    "tisa-cel": 2017,
    "brexu-cel": 2020,
    "liso-cel": 2021,
    "ide-cel": 2021,
    "cilta-cel": 2022,
    "obe-cel": 2024,
    "other_car_t": None,
    "blinatumomab": None,
    "teclistamab": 2022,
    "mosunetuzumab": 2022,
    "talquetamab": 2023,
    "elranatamab": 2023,
    "glofitamab": 2023,
    "epcoritamab": 2023,
    "tarlatamab": 2024,
    "other_bispecific": None,
}

# Target rate of ASTCT grade >= 3 per product. Reading of the trial figures on the ASTCT scale
# (assumption): ASTCT figures as published; Lee 2014 / modified Lee / CTCAE v4 figures used as
# ASTCT unchanged (the only published contrast, one CD22 cohort with 8.5 % Lee vs 20.3 % ASTCT,
# is too thin to generalise); Penn figures halved, since Penn grades any oxygen as 3 where ASTCT
# grades low-flow oxygen as 2 (lit: "The scales disagree: Penn inflates grade >= 3"). Products
# used in several diagnoses get the DIAGNOSIS_MIX-weighted mean of their trial figures.
SEVERE_TARGET: dict[str, float] = {
    "axi-cel": 0.13,  # lit: axi-cel (ZUMA-1, LBCL), Lee 2014, 13 % (unverified)
    # lit: brexu-cel ZUMA-2 (MCL) 15 % and ZUMA-3 (B-ALL) 24 % (unverified): 0.6*15 + 0.4*24
    "brexu-cel": 0.186,
    # lit: tisa-cel JULIET 22 % and ELIANA 46 % (Penn, unverified), halved: 0.7*11 + 0.3*23
    "tisa-cel": 0.146,
    # lit: liso-cel TRANSCEND LBCL 2 % and CLL 9 %: 0.9*2 + 0.1*9
    "liso-cel": 0.027,
    "obe-cel": 0.024,  # lit: obe-cel (FELIX, B-ALL), ASTCT, 2.4 %
    "ide-cel": 0.07,  # lit: ide-cel (KarMMa, MM), Lee 2014, 5-9 %: midpoint
    "cilta-cel": 0.04,  # lit: cilta-cel (CARTITUDE-1, MM), ASTCT, 4 %
    "other_car_t": 0.10,  # assumption: between the CD28 and 4-1BB products
    "blinatumomab": 0.049,  # lit: blinatumomab (TOWER, B-ALL), CTCAE v4, 4.9 %
    "teclistamab": 0.006,  # lit: teclistamab (MajesTEC-1, MM), ASTCT, 0.6 %
    "talquetamab": 0.025,  # lit: talquetamab (MonumenTAL-1), ~2-3 % (unverified): midpoint
    "elranatamab": 0.005,  # lit: elranatamab (MagnetisMM-3) 0 % (unverified); assumption 0.5 %
    "glofitamab": 0.04,  # lit: glofitamab (LBCL), ASTCT, 4 %
    "epcoritamab": 0.025,  # lit: epcoritamab (EPCORE NHL-1, LBCL), ASTCT, 2.5 %
    "mosunetuzumab": 0.02,  # lit: mosunetuzumab (FL), ASTCT, 2 % (unverified)
    "tarlatamab": 0.035,  # lit: tarlatamab (DeLLphi-301, SCLC), 1-6 % (unverified): midpoint
    "other_bispecific": 0.03,  # assumption: typical of the bispecifics above
}

# Rate of any CRS (grade >= 1) per product; the scales agree on presence of CRS in 99 % of
# patients (lit: "agreed on the presence of CRS in 99%"), so trial figures are used as is.
ANY_CRS_TARGET: dict[str, float] = {
    "axi-cel": 0.93,  # lit: ZUMA-1 93 %
    "brexu-cel": 0.90,  # lit: ZUMA-2 91 %, ZUMA-3 89 %
    "tisa-cel": 0.64,  # lit: JULIET 58 %, ELIANA 77 %: 0.7*58 + 0.3*77
    "liso-cel": 0.46,  # lit: TRANSCEND LBCL 42 %, CLL 85 %: 0.9*42 + 0.1*85
    "obe-cel": 0.69,  # lit: FELIX ~69 %
    "ide-cel": 0.84,  # lit: KarMMa 84 %
    "cilta-cel": 0.95,  # lit: CARTITUDE-1 95 %
    "other_car_t": 0.75,  # assumption
    "blinatumomab": 0.14,  # lit: TOWER 14 %
    "teclistamab": 0.72,  # lit: MajesTEC-1 72 %
    "talquetamab": 0.78,  # lit: MonumenTAL-1 ~78 %
    "elranatamab": 0.58,  # lit: MagnetisMM-3 58 %
    "glofitamab": 0.63,  # lit: glofitamab 63 %
    "epcoritamab": 0.50,  # lit: EPCORE NHL-1 50 %
    "mosunetuzumab": 0.44,  # lit: mosunetuzumab 44 %
    "tarlatamab": 0.56,  # lit: DeLLphi-301 51-61 %: midpoint
    "other_bispecific": 0.55,  # assumption
}

# Within a product, log-odds offset of each diagnosis relative to LBCL; it only matters for
# products used in several diagnoses (the product intercept absorbs the rest).
DX_OFFSET: dict[str, float] = {
    "LBCL": 0.0,
    "FL": -0.4,  # assumption: indolent disease, lower burden
    "MCL": 0.15,  # lit: ZUMA-2 (MCL) 15 % vs ZUMA-1 (LBCL) 13 %, both CD28
    "B-ALL": 0.8,  # lit: ELIANA 46 % vs JULIET 22 %; ZUMA-3 24 % vs ZUMA-2 15 %
    "CLL": 1.5,  # lit: TRANSCEND CLL 9 % vs LBCL 2 %
    "MM": 0.0,
    "SCLC": 0.0,
    "other": 0.0,
}

# Correlation of the latent burden and inflammation factors (assumption).
RHO_BURDEN_INFLAMMATION = 0.5

# Baseline labs per diagnosis: (median, sd of the natural log). LBCL values from lit: "Typical
# pre-lymphodepletion values in LBCL" (CRP 10-30, ferritin 500-1000, LDH above normal in 50-65 %,
# platelets 130-180; unverified); B-ALL values from lit: "Public B-ALL cohort (n = 202, day 0)",
# log-sd from its IQRs (IQR / 1.35); other diagnoses are assumptions.
LAB_MEDIAN_LOGSD: dict[str, dict[str, tuple[float, float]]] = {
    # LDH median 280 with log-sd 0.55 puts 58 % above an upper normal limit of 250 U/L.
    "LBCL": {"crp": (18, 1.1), "ferritin": (700, 0.9), "ldh": (280, 0.55), "plt": (150, 0.5)},
    "B-ALL": {"crp": (5.7, 0.98), "ferritin": (456, 0.84), "ldh": (163, 0.3), "plt": (84, 1.25)},
    "FL": {"crp": (8, 1.0), "ferritin": (350, 0.9), "ldh": (230, 0.45), "plt": (170, 0.45)},
    "MCL": {"crp": (12, 1.0), "ferritin": (450, 0.9), "ldh": (260, 0.5), "plt": (140, 0.55)},
    "CLL": {"crp": (6, 1.0), "ferritin": (300, 0.9), "ldh": (220, 0.4), "plt": (110, 0.6)},
    "MM": {"crp": (4, 1.1), "ferritin": (400, 1.0), "ldh": (190, 0.35), "plt": (140, 0.55)},
    "SCLC": {"crp": (15, 1.1), "ferritin": (350, 0.9), "ldh": (280, 0.6), "plt": (260, 0.4)},
    "other": {"crp": (10, 1.1), "ferritin": (450, 1.0), "ldh": (230, 0.5), "plt": (160, 0.55)},
}
# Labs common to all diagnoses (assumptions): haemoglobin normal (mean, sd) in g/dL by
# diagnosis, ANC, creatinine and IL-6 log-normal (median, log-sd).
HB_MEAN_SD: dict[str, tuple[float, float]] = {
    "LBCL": (10.8, 1.6), "B-ALL": (9.8, 1.6), "FL": (11.8, 1.5), "MCL": (11.2, 1.6),
    "CLL": (11.0, 1.6), "MM": (10.2, 1.5), "SCLC": (11.5, 1.5), "other": (11.0, 1.6),
}  # fmt: skip
ANC_MEDIAN_LOGSD = (2.6, 0.7)
CREATININE_MEDIAN_LOGSD = (0.85, 0.3)
IL6_MEDIAN_LOGSD = (8.0, 1.0)

# Loadings (burden, inflammation) of each standardised log lab on the latent factors
# (assumption): inflammation drives CRP, ferritin, IL-6 and LDH up, platelets and haemoglobin
# down; burden drives LDH up and, where the marrow is involved, platelets down.
LOADINGS: dict[str, tuple[float, float]] = {
    "ldh": (0.5, 0.35),
    "crp": (0.15, 0.75),
    "ferritin": (0.1, 0.6),
    "il6": (0.1, 0.65),
    "plt": (-0.15, -0.35),
    "plt_marrow": (-0.45, -0.35),  # B-ALL, CLL, MM: marrow infiltration
    "hb": (-0.2, -0.35),
    "anc": (0.0, -0.1),
}
MARROW_DISEASES = ("B-ALL", "CLL", "MM")
LYMPHOMAS = ("LBCL", "FL", "MCL")

# Burden markers (median, log-sd) per diagnosis (assumptions; lit names the markers: "marrow
# blasts in B-ALL ..., SPD and LDH in lymphoma, marrow plasma cells in myeloma").
SPD_MEDIAN_LOGSD: dict[str, tuple[float, float]] = {
    "LBCL": (35.0, 1.0), "FL": (25.0, 1.0), "MCL": (30.0, 1.0),
}  # fmt: skip
# Median 8 % blasts, log-sd 2: ~59 % of B-ALL patients at >= 5 % blasts, the rest down to MRD.
BLASTS_MEDIAN_LOGSD = (8.0, 2.0)
PLASMA_CELLS_MEDIAN_LOGSD = (20.0, 0.9)
BURDEN_LOADING = 0.85  # correlation of each log burden marker with the latent burden factor
# 75th centile of N(0, 1.25): a quarter of lymphoma patients bulky (assumption).
BULKY_THRESHOLD = 0.6745 * np.sqrt(1.25)

# True log-odds coefficients, per unit of natural log unless stated.
BETA = {
    # lit: "Tumour burden is the strongest baseline factor": blasts >= 5 % vs MRD level gives
    # ~40 % vs ~5 % severe CRS, a log-odds gap of ~2.5 over ~4.4 log units of blasts. The
    # simulated B-ALL (mostly low-rate blinatumomab and obe-cel) keeps the ~8-fold ratio at lower
    # absolute rates, and blasts alone reach an AUROC of ~0.79 (lit: "univariable AUC ~0.78").
    "blasts": 0.55,
    "plasma_cells": 0.5,  # lit: "marrow plasma cells in myeloma"; strength assumption
    "spd": 0.4,  # lit: "SPD and LDH in lymphoma"; strength assumption
    "ldh": 0.6,  # lit: "SPD and LDH in lymphoma"; part of m-EASIX
    # lit: "high CRP and low platelets were the only individually significant parts of m-EASIX
    # (Pennisi 2021)"; strengths tuned so m-EASIX lands near, not above, its published AUROC
    # (lit: "AUC 0.80"): ~0.76 on simulated CAR-T patients.
    "crp": 0.35,
    "plt": -0.4,
    "ferritin": 0.05,  # lit: "CRP and ferritin alone did not predict severe CRS in Teachey 2016"
    "il6": 0.1,  # assumption: weak, correlated with CRP
    "bulky": 0.2,  # assumption: lymphoma burden beyond SPD
    "flu_cy": 0.5,  # lit: "Fludarabine/cyclophosphamide ... independent predictors (Hay 2017)"
    "cell_dose": 0.4,  # lit: "higher cell dose ... independent predictors (Hay 2017)"
    "hlh": 1.5,  # lit: "Pre-existing HLH ... raises risk": rare and strong (strength assumption)
    "autoimmune": 0.1,  # lit: "prior autoimmune disease ... weak evidence"
    "bridging": 0.2,  # assumption: modest, marks refractory disease
    "ecog": 0.1,  # assumption: per point
    "ecog_ge2": 0.3,  # assumption: extra step at ECOG >= 2 (a non-linearity)
    "prior_lines": 0.03,  # assumption: weak
}
# Multiplier of the burden terms per product (1 where absent): the burden marker, LDH and
# platelets (the labs that track marrow burden in myeloma). Inflammation labs keep their effect,
# so plasma cells keep a weak marginal association through them (univariable AUROC ~0.59 for
# teclistamab against ~0.74 for the myeloma CAR-Ts on a million simulated patients).
BURDEN_MULTIPLIER: dict[str, float] = {
    "teclistamab": 0.1,  # lit: "For teclistamab, baseline burden did not predict CRS"
}

# Standard-normal cut points giving ECOG 0 / 1 / 2 / 3 shares of 38 / 50 / 9 / 3 % (assumption:
# trial populations are mostly ECOG 0-1; real-world cohorts include some ECOG >= 2).
ECOG_CUTS = np.array([-0.305, 1.175, 1.881])

PREVALENCE = {
    "hlh": 0.01,  # assumption: rare
    "autoimmune": 0.07,  # assumption
    "male": 0.6,  # assumption: male predominance in lymphoma and myeloma
    "bridging_car_t": 0.55,  # assumption
    "bridging_bispecific": 0.03,  # assumption: no manufacturing wait
}

# Lymphodepletion (flu_cy, bendamustine, other, none) by therapy class (assumptions; lit names
# Flu/Cy as the usual CAR-T regimen). tisa-cel gets bendamustine more often (JULIET allowed it).
LD_CAR_T = (0.93, 0.04, 0.03, 0.0)
LD_TISA_CEL = (0.78, 0.19, 0.03, 0.0)
LD_BISPECIFIC = (0.0, 0.0, 0.03, 0.97)

# ASTCT grade split (assumptions): among severe, grade 3 / 4 / 5 (grade 5 ~3 % of severe);
# among non-severe CRS, the share of grade 2 (lit: "Bispecifics: CRS mostly grade 1-2").
SEVERE_GRADE_SPLIT = (0.77, 0.20, 0.03)
GRADE2_SHARE = {"CAR-T": 0.40, "bispecific": 0.25}

# Ordinal event levels: index 0 none, 1 -> ASTCT 2, 2 -> ASTCT 3, 3 -> ASTCT 4.
_HYPOTENSION = np.array(HYPOTENSION_LEVELS, dtype=object)
_HYPOXIA = np.array(HYPOXIA_LEVELS, dtype=object)

# Approximate regrading of events on the older scales (assumption, documented for the notes).
# Lee 2014: fluids or one low-dose vasopressor and low oxygen are 2; multiple / high-dose
# vasopressors and high-flow (FiO2 >= 40 %) are 3; ventilation 4. Penn: fluids 2; any oxygen or
# one vasopressor 3; multiple vasopressors or positive pressure 4.
LEE_FROM_HYPOTENSION = np.array([0, 2, 2, 3])
LEE_FROM_HYPOXIA = np.array([0, 2, 3, 4])
PENN_FROM_HYPOTENSION = np.array([0, 2, 3, 4])
PENN_FROM_HYPOXIA = np.array([0, 3, 3, 4])


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------

_PRODUCT_NAMES = tuple(PRODUCTS)
_DX_INDEX = {d: i for i, d in enumerate(DIAGNOSES)}


def _site_names(n_sites: int) -> list[str]:
    names = []
    for i in range(n_sites):
        label, k = "", i + 1
        while k:
            k, r = divmod(k - 1, 26)
            label = chr(65 + r) + label
        names.append(f"site_{label}")
    return names


def _per_dx(dx: np.ndarray, table: dict[str, Any], default: Any) -> np.ndarray:
    """Look up one value per patient from a per-diagnosis table (vectorised over codes)."""
    lut = np.array([table.get(d, default) for d in DIAGNOSES], dtype=float)
    return lut[dx]


def _lab(
    rng: np.random.Generator,
    burden: np.ndarray,
    inflammation: np.ndarray,
    median: np.ndarray | float,
    logsd: np.ndarray | float,
    w_b: np.ndarray | float,
    w_i: np.ndarray | float,
) -> np.ndarray:
    """Log-normal lab whose standardised log is driven by the two latent factors."""
    explained = w_b**2 + w_i**2 + 2 * RHO_BURDEN_INFLAMMATION * w_b * w_i
    z = w_b * burden + w_i * inflammation
    z = z + np.sqrt(1.0 - explained) * rng.standard_normal(burden.shape[0])
    return np.exp(np.log(median) + logsd * z)


def _calibrate_intercepts(
    eta: np.ndarray, group: np.ndarray, targets: np.ndarray, iterations: int = 60
) -> np.ndarray:
    """Per-group intercepts b so that mean(expit(b[g] + eta)) equals each group's target."""
    n_groups = targets.shape[0]
    counts = np.bincount(group, minlength=n_groups)
    lo = np.full(n_groups, -40.0)
    hi = np.full(n_groups, 40.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        p = expit(mid[group] + eta)
        mean = np.bincount(group, weights=p, minlength=n_groups) / np.maximum(counts, 1)
        too_high = mean > targets
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return 0.5 * (lo + hi)


def _choice_by_group(rng: np.random.Generator, group: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Draw one category per row from the row's group's probabilities (rows of ``probs``)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(group.shape[0])
    return (u[:, None] > cum[group]).sum(axis=1)


def _mask(rng: np.random.Generator, p_missing: np.ndarray | float, n: int) -> np.ndarray:
    return rng.random(n) < p_missing


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.log(p / (1.0 - p))


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


# The per-product intercepts are calibrated once, on a large reference cohort of the default
# configuration, so that every seed and every config share one true risk model: a model trained
# on one seed can then be tested on another (external validation) without a shifted truth.
REFERENCE_N = 200_000
REFERENCE_SEED = 20240601


@lru_cache(maxsize=1)
def reference_intercepts() -> np.ndarray:
    """Per-product log-odds intercepts matching SEVERE_TARGET on the reference cohort."""
    _, intercept = _simulate(REFERENCE_N, REFERENCE_SEED, SimulationConfig(), None)
    return intercept


def _simulate(
    n: int, seed: int, cfg: SimulationConfig, intercept: np.ndarray | None
) -> tuple[SimulatedCohort, np.ndarray]:
    """Simulate; calibrate the intercepts on this cohort when ``intercept`` is None."""
    rng = np.random.default_rng(seed)
    n_dx = len(DIAGNOSES)
    n_prod = len(_PRODUCT_NAMES)
    sites = _site_names(cfg.n_sites)
    n_sites = cfg.n_sites

    # --- sites and products -----------------------------------------------------------------
    # Site sizes and product mixes differ (assumption: referral patterns, trial participation).
    site_weight = rng.dirichlet(np.full(n_sites, 4.0))
    site = rng.choice(n_sites, size=n, p=site_weight)
    start = np.datetime64(cfg.start_date, "D")
    end = np.datetime64(cfg.end_date, "D")
    product_first_day = np.array(
        [
            max(start, np.datetime64(f"{APPROVAL_YEAR[p]}-01-01", "D"))
            if APPROVAL_YEAR[p] is not None
            else start
            for p in _PRODUCT_NAMES
        ]
    )
    base_mix = np.array([PRODUCT_MIX[p] for p in _PRODUCT_NAMES])
    cart_product = np.array([PRODUCTS[p].therapy_class == "CAR-T" for p in _PRODUCT_NAMES])
    cart_share = base_mix[cart_product].sum()
    # Products approved after the end date are not used (the "other" products always are).
    available = product_first_day <= end
    site_mix = base_mix * available * np.exp(rng.normal(0.0, 0.6, size=(n_sites, n_prod)))
    # Keep each site's CAR-T share near the overall 60 % (logit sd 0.4), mix within class free.
    site_cart = expit(_logit(cart_share) + rng.normal(0.0, 0.4, n_sites))
    for in_class, share in ((cart_product, site_cart), (~cart_product, 1 - site_cart)):
        site_mix[:, in_class] *= (share / site_mix[:, in_class].sum(axis=1))[:, None]
    product = _choice_by_group(rng, site, site_mix)

    dx_probs = np.zeros((n_prod, n_dx))
    for j, name in enumerate(_PRODUCT_NAMES):
        for d, p in DIAGNOSIS_MIX[name].items():
            dx_probs[j, _DX_INDEX[d]] = p
    dx = _choice_by_group(rng, product, dx_probs)
    dx_name = np.array(DIAGNOSES, dtype=object)[dx]
    prod_name = np.array(_PRODUCT_NAMES, dtype=object)[product]
    is_cart = cart_product[product]
    is_lymphoma = np.isin(dx_name, LYMPHOMAS)
    is_all = dx_name == "B-ALL"
    is_mm = dx_name == "MM"

    # --- infusion dates: never before the product's approval year ---------------------------
    first_day = product_first_day[product]
    span = (end - first_day).astype(np.int64)
    # Volume grows over time (assumption): density rising linearly from 1 to 2 across the window.
    frac = np.sqrt(1.0 + 3.0 * rng.random(n)) - 1.0
    infusion = first_day + np.floor(frac * (span + 1)).clip(max=span).astype(np.int64)

    # --- demographics ------------------------------------------------------------------------
    # Ages (assumptions, near the trials' medians); tisa-cel B-ALL is paediatric (ELIANA).
    age_mean = _per_dx(dx, {"LBCL": 62, "FL": 60, "MCL": 66, "B-ALL": 40, "CLL": 65, "MM": 64,
                            "SCLC": 64, "other": 58}, 60)  # fmt: skip
    age = np.clip(age_mean + rng.normal(0, 11, n), 18, 90)
    paediatric = is_all & (prod_name == "tisa-cel")
    age = np.where(paediatric, np.clip(rng.normal(12, 6, n), 1, 25), age)
    adult_all = is_all & ~paediatric  # lit: public B-ALL cohort median age 33; trials ~40-47
    age = np.where(adult_all, np.clip(rng.normal(38, 15, n), 18, 85), age)
    male = rng.random(n) < PREVALENCE["male"]
    adult_weight = np.clip(np.where(male, 84.0, 71.0) + rng.normal(0, 16, n), 38, 200)
    child_weight = (8.0 + 2.6 * age) * np.exp(rng.normal(0, 0.15, n))
    weight = np.where(age < 18, child_weight, adult_weight)

    # --- latent burden and inflammation ------------------------------------------------------
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    burden = z1
    inflammation = RHO_BURDEN_INFLAMMATION * z1 + np.sqrt(1 - RHO_BURDEN_INFLAMMATION**2) * z2

    def lab_params(key: str) -> tuple[np.ndarray, np.ndarray]:
        med = _per_dx(dx, {d: v[key][0] for d, v in LAB_MEDIAN_LOGSD.items()}, np.nan)
        sd = _per_dx(dx, {d: v[key][1] for d, v in LAB_MEDIAN_LOGSD.items()}, np.nan)
        return med, sd

    med_ldh, sd_ldh = lab_params("ldh")
    med_crp, sd_crp = lab_params("crp")
    med_fer, sd_fer = lab_params("ferritin")
    med_plt, sd_plt = lab_params("plt")
    ldh = _lab(rng, burden, inflammation, med_ldh, sd_ldh, *LOADINGS["ldh"])
    crp = _lab(rng, burden, inflammation, med_crp, sd_crp, *LOADINGS["crp"])
    ferritin = _lab(rng, burden, inflammation, med_fer, sd_fer, *LOADINGS["ferritin"])
    plt_wb = np.where(
        np.isin(dx_name, MARROW_DISEASES), LOADINGS["plt_marrow"][0], LOADINGS["plt"][0]
    )
    platelets = _lab(rng, burden, inflammation, med_plt, sd_plt, plt_wb, LOADINGS["plt"][1])
    il6 = _lab(rng, burden, inflammation, *IL6_MEDIAN_LOGSD, *LOADINGS["il6"])
    anc = _lab(rng, burden, inflammation, *ANC_MEDIAN_LOGSD, *LOADINGS["anc"])
    hb_mean = _per_dx(dx, {d: v[0] for d, v in HB_MEAN_SD.items()}, 11.0)
    hb_sd = _per_dx(dx, {d: v[1] for d, v in HB_MEAN_SD.items()}, 1.6)
    hb_wb, hb_wi = LOADINGS["hb"]
    hb_explained = hb_wb**2 + hb_wi**2 + 2 * RHO_BURDEN_INFLAMMATION * hb_wb * hb_wi
    hb = hb_mean + hb_sd * (
        hb_wb * burden + hb_wi * inflammation + np.sqrt(1 - hb_explained) * rng.standard_normal(n)
    )
    # Creatinine rises with age (assumption); children have lower values.
    creat = np.exp(
        np.log(CREATININE_MEDIAN_LOGSD[0])
        + 0.006 * (age - 60)
        + CREATININE_MEDIAN_LOGSD[1] * rng.standard_normal(n)
    ) * np.where(age < 18, 0.6, 1.0)
    # Physiological / contract bounds (contract ranges; lower limits of detection: assumption).
    ldh = np.clip(ldh, 60, 50000)
    crp = np.clip(crp, 0.2, 1000)
    ferritin = np.clip(ferritin, 5, 200000)
    platelets = np.clip(platelets, 2, 3000)
    il6 = np.clip(il6, 0.5, 1e6)
    anc = np.clip(anc, 0.01, 200)
    hb = np.clip(hb, 4.0, 25.0)
    creat = np.clip(creat, 0.1, 30)

    # Burden markers, only meaningful in their diagnoses.
    marker = BURDEN_LOADING * burden + np.sqrt(1 - BURDEN_LOADING**2) * rng.standard_normal(n)
    spd_med = _per_dx(dx, {d: v[0] for d, v in SPD_MEDIAN_LOGSD.items()}, 30.0)
    spd_sd = _per_dx(dx, {d: v[1] for d, v in SPD_MEDIAN_LOGSD.items()}, 1.0)
    spd = np.clip(np.exp(np.log(spd_med) + spd_sd * marker), 0.5, 2000)
    blasts = np.clip(
        np.exp(np.log(BLASTS_MEDIAN_LOGSD[0]) + BLASTS_MEDIAN_LOGSD[1] * marker), 0.01, 98
    )
    plasma = np.clip(
        np.exp(np.log(PLASMA_CELLS_MEDIAN_LOGSD[0]) + PLASMA_CELLS_MEDIAN_LOGSD[1] * marker),
        0.5,
        95,
    )
    # Bulky disease tracks SPD (assumption): the top quarter of a noisy copy of the marker.
    bulky = marker + 0.5 * rng.standard_normal(n) > BULKY_THRESHOLD

    # --- clinical covariates -----------------------------------------------------------------
    # ECOG from a latent fitness score worsened by burden and inflammation (assumption).
    ecog_latent = 0.35 * burden + 0.25 * inflammation + 0.85 * rng.standard_normal(n)
    ecog_latent /= np.sqrt(0.35**2 + 0.25**2 + 2 * RHO_BURDEN_INFLAMMATION * 0.35 * 0.25 + 0.85**2)
    ecog = np.searchsorted(ECOG_CUTS, ecog_latent)
    lam = np.where(is_mm, 4.0, np.where(is_all, 1.5, np.where(dx_name == "SCLC", 1.2, 2.0)))
    prior_lines = np.clip(1 + rng.poisson(lam), 0, 25)  # assumption: medians 2-5 prior lines
    p_bridge = np.where(
        is_cart,
        expit(_logit(PREVALENCE["bridging_car_t"]) + 0.5 * burden),
        PREVALENCE["bridging_bispecific"],
    )
    bridging = rng.random(n) < p_bridge
    hlh = rng.random(n) < PREVALENCE["hlh"]
    autoimmune = rng.random(n) < PREVALENCE["autoimmune"]

    ld_probs = np.array([LD_CAR_T if PRODUCTS[p].therapy_class == "CAR-T" else LD_BISPECIFIC
                         for p in _PRODUCT_NAMES])  # fmt: skip
    ld_probs[_PRODUCT_NAMES.index("tisa-cel")] = LD_TISA_CEL
    ld = _choice_by_group(rng, product, ld_probs)
    ld_name = np.array(("flu_cy", "bendamustine", "other", "none"), dtype=object)[ld]

    # Cell dose in 1e6 CAR+ cells/kg (assumptions from the labels: axi-cel 2/kg capped at 2e8;
    # brexu-cel 2/kg MCL, 1/kg B-ALL; tisa-cel ~3/kg paediatric, 0.6-6e8 flat in adults;
    # liso-cel 1e8 flat; obe-cel 4.1e8 flat; ide-cel 3-4.6e8 flat; cilta-cel 0.75/kg).
    dose_noise = np.exp(rng.normal(0, 0.08, n))
    flat = {
        "tisa-cel": np.exp(rng.normal(np.log(300), 0.4, n)),
        "liso-cel": np.full(n, 100.0),
        "obe-cel": np.full(n, 410.0),
        "ide-cel": rng.uniform(300, 460, n),
    }
    dose = np.exp(rng.normal(np.log(2.0), 0.7, n))  # other_car_t
    dose = np.where(prod_name == "axi-cel", np.minimum(2.0, 200 / weight) * dose_noise, dose)
    brexu_per_kg = np.where(is_all, 1.0, 2.0)
    dose = np.where(
        prod_name == "brexu-cel",
        np.minimum(brexu_per_kg, brexu_per_kg * 100 / weight) * dose_noise,
        dose,
    )
    for name, total in flat.items():
        dose = np.where(prod_name == name, total / weight, dose)
    tisa_child = (prod_name == "tisa-cel") & (weight <= 50)
    dose = np.where(tisa_child, np.exp(rng.normal(np.log(3.0), 0.4, n)), dose)
    cilta_dose = np.clip(np.exp(rng.normal(np.log(0.72), 0.15, n)), 0.5, 1.0)
    dose = np.where(prod_name == "cilta-cel", cilta_dose, dose)
    dose = np.clip(dose, 0.05, 1000)
    costim_other = np.where(rng.random(n) < 0.5, "CD28", "4-1BB")  # assumption: even split
    product_costim = [PRODUCTS[p].costim_domain or "" for p in _PRODUCT_NAMES]
    costim = np.array(product_costim, dtype=object)[product]
    costim = np.where(prod_name == "other_car_t", costim_other, costim).astype(object)

    # --- true log-odds -----------------------------------------------------------------------
    burden_mult = np.array([BURDEN_MULTIPLIER.get(p, 1.0) for p in _PRODUCT_NAMES])[product]
    spd_med_lymph = np.where(is_lymphoma, spd_med, 1.0)
    burden_term = (
        np.where(is_lymphoma, BETA["spd"] * np.log(spd / spd_med_lymph), 0.0)
        + np.where(is_all, BETA["blasts"] * np.log(blasts / BLASTS_MEDIAN_LOGSD[0]), 0.0)
        + np.where(is_mm, BETA["plasma_cells"] * np.log(plasma / PLASMA_CELLS_MEDIAN_LOGSD[0]), 0)
        + np.where(is_lymphoma & bulky, BETA["bulky"], 0.0)
    )
    eta = (
        _per_dx(dx, DX_OFFSET, 0.0)
        + burden_mult * burden_term
        + burden_mult * BETA["ldh"] * np.log(ldh / med_ldh)
        + BETA["crp"] * np.log(crp / med_crp)
        + burden_mult * BETA["plt"] * np.log(platelets / med_plt)
        + BETA["ferritin"] * np.log(ferritin / med_fer)
        + BETA["il6"] * np.log(il6 / IL6_MEDIAN_LOGSD[0])
        + np.where(is_cart & (ld_name == "flu_cy"), BETA["flu_cy"], 0.0)
        + np.where(is_cart, BETA["cell_dose"] * np.log(dose), 0.0)
        + BETA["hlh"] * hlh
        + BETA["autoimmune"] * autoimmune
        + BETA["bridging"] * bridging
        + BETA["ecog"] * ecog
        + BETA["ecog_ge2"] * (ecog >= 2)
        + BETA["prior_lines"] * (prior_lines - 3)
    )
    targets = np.array([SEVERE_TARGET[p] for p in _PRODUCT_NAMES])
    if intercept is None:
        intercept = _calibrate_intercepts(eta, product, targets)
    true_risk = expit(intercept[product] + eta)

    # --- outcome: severity, full ASTCT grade, raw events -------------------------------------
    severe = rng.random(n) < true_risk
    sev_split = np.cumsum(SEVERE_GRADE_SPLIT)
    u = rng.random(n)
    severe_grade = 3 + (u > sev_split[0]) + (u > sev_split[1])
    any_rate = np.array([ANY_CRS_TARGET[p] for p in _PRODUCT_NAMES])[product]
    p_any_given_ns = np.clip((any_rate - targets[product]) / (1 - targets[product]), 0, 1)
    share2 = np.where(is_cart, GRADE2_SHARE["CAR-T"], GRADE2_SHARE["bispecific"])
    u_any, u_two = rng.random(n), rng.random(n)
    mild_grade = np.where(u_any < p_any_given_ns, np.where(u_two < share2, 2, 1), 0)
    grade = np.where(severe, severe_grade, mild_grade).astype(np.int64)

    # Events: the worse of hypotension and hypoxia sets the level (level = grade - 1 for grades
    # 2-4); which of the two drives it and the level of the other are assumptions.
    level = np.clip(grade - 1, 0, 3)
    level = np.where(grade == 5, 3, level)  # deaths: worst support before death (assumption)
    driver = rng.random(n)
    # 0: hypotension drives, 1: hypoxia drives, 2: both at the level.
    driver = np.where(driver < 0.45, 0, np.where(driver < 0.8, 1, 2))
    other_level = np.floor(rng.random(n) * level).astype(np.int64)  # uniform in 0..level-1
    hypot_level = np.where(driver == 1, other_level, level)
    hypox_level = np.where(driver == 0, other_level, level)
    fever = grade >= 1
    crs_death = grade == 5

    # --- grading scale per site --------------------------------------------------------------
    site_order = rng.permutation(n_sites)
    site_scale_draw = rng.random(n_sites) < 0.5
    n_other = round(cfg.other_scale_fraction * n_sites)
    other_sites = np.zeros(n_sites, dtype=bool)
    other_sites[site_order[:n_other]] = True
    site_scale = np.where(other_sites, np.where(site_scale_draw, "Lee2014", "Penn"), "ASTCT")
    scale = site_scale[site]
    lee = np.maximum(LEE_FROM_HYPOTENSION[hypot_level], LEE_FROM_HYPOXIA[hypox_level])
    penn = np.maximum(PENN_FROM_HYPOTENSION[hypot_level], PENN_FROM_HYPOXIA[hypox_level])
    lee = np.where(crs_death, 5, np.where(fever, np.maximum(lee, 1), 0))
    penn = np.where(crs_death, 5, np.where(fever, np.maximum(penn, 1), 0))
    reported_grade = np.where(scale == "Lee2014", lee, np.where(scale == "Penn", penn, grade))

    # --- missingness (not completely at random) ----------------------------------------------
    def site_rate(base: float, spread: float) -> np.ndarray:
        """Per-site missing probability on the logit scale around ``base`` (assumption)."""
        return _logit(base) + rng.normal(0.0, spread, n_sites)

    fit = ecog == 0
    miss = {}
    miss["sex"] = _mask(rng, 0.015, n)
    miss["weight"] = _mask(rng, expit(site_rate(0.03, 0.8))[site], n)
    miss["ecog"] = _mask(rng, expit(site_rate(0.08, 0.8))[site], n)
    miss["prior_lines"] = _mask(rng, 0.04, n)
    miss["bridging"] = _mask(rng, np.where(is_cart, 0.05, 0.10), n)
    miss["ld"] = _mask(rng, np.where(is_cart, 0.03, 0.05), n)
    miss["dose"] = ~is_cart | _mask(rng, expit(site_rate(0.08, 0.8))[site], n)
    miss["ldh"] = _mask(rng, expit(site_rate(0.05, 0.7))[site], n)
    # Fitter patients (ECOG 0) get fewer inflammation markers drawn (assumption).
    miss["crp"] = _mask(rng, expit(site_rate(0.10, 1.0)[site] + 0.8 * fit), n)
    miss["ferritin"] = _mask(rng, expit(site_rate(0.25, 1.0)[site] + 0.8 * fit), n)
    miss["plt"] = _mask(rng, 0.02, n)
    miss["anc"] = _mask(rng, 0.03, n)
    miss["hb"] = _mask(rng, 0.02, n)
    miss["creat"] = _mask(rng, 0.03, n)
    # IL-6 is measured routinely at a quarter of the sites only (assumption).
    il6_sites = np.zeros(n_sites, dtype=bool)
    il6_sites[rng.permutation(n_sites)[: max(1, round(0.25 * n_sites))]] = True
    miss["il6"] = _mask(rng, np.where(il6_sites[site], 0.15, 0.97), n)
    miss["spd"] = ~is_lymphoma | _mask(rng, expit(site_rate(0.25, 0.8))[site], n)
    miss["bulky"] = ~is_lymphoma | _mask(rng, 0.15, n)
    miss["blasts"] = ~is_all | _mask(rng, 0.10, n)
    miss["plasma"] = ~is_mm | _mask(rng, 0.15, n)
    miss["autoimmune"] = _mask(rng, expit(site_rate(0.15, 1.0))[site], n)
    miss["hlh"] = _mask(rng, expit(site_rate(0.20, 1.0))[site], n)

    # Sites calibrate assays slightly differently (assumption): the recorded value is the
    # biological one times a site factor; the true risk uses the biological value.
    def site_factor(spread: float) -> np.ndarray:
        return np.exp(rng.normal(0.0, spread, n_sites))[site]

    crp_obs = np.clip(crp * site_factor(0.15), 0, 1000)
    ldh_obs = np.clip(ldh * site_factor(0.06), 20, 50000)
    ferritin_obs = np.clip(ferritin * site_factor(0.12), 0, 200000)
    plt_obs = np.clip(platelets * site_factor(0.04), 0, 3000)

    # --- assemble ----------------------------------------------------------------------------
    patient_id = np.char.add("SIM-", np.char.zfill(np.arange(1, n + 1).astype(str), 6))
    patient_id = patient_id.astype(object)
    none = np.zeros(n, dtype=bool)
    columns: dict[str, pd.Series] = {
        "patient_id": _str_series(patient_id),
        "site": _str_series(np.array(sites, dtype=object)[site]),
        "infusion_date": pd.Series(infusion.astype("datetime64[ns]")),
        "age_years": _float_series(age, 1, none),
        "sex": _str_series(np.where(male, "M", "F"), miss["sex"]),
        "weight_kg": _float_series(weight, 1, miss["weight"]),
        "ecog": _int_series(ecog, miss["ecog"]),
        "diagnosis": _str_series(dx_name),
        "therapy_class": _str_series(np.where(is_cart, "CAR-T", "bispecific")),
        "product": _str_series(prod_name),
        "costim_domain": _str_series(costim, ~is_cart),
        "cell_dose_1e6_per_kg": _float_series(dose, 2, miss["dose"]),
        "lymphodepletion": _str_series(ld_name, miss["ld"]),
        "prior_lines": _int_series(prior_lines, miss["prior_lines"]),
        "bridging_therapy": _bool_series(bridging, miss["bridging"]),
        "ldh_u_l": _float_series(ldh_obs, 0, miss["ldh"]),
        "spd_cm2": _float_series(spd, 1, miss["spd"]),
        "marrow_blasts_pct": _float_series(blasts, 2, miss["blasts"]),
        "marrow_plasma_cells_pct": _float_series(plasma, 1, miss["plasma"]),
        "bulky_disease": _bool_series(bulky, miss["bulky"]),
        "crp_mg_l": _float_series(crp_obs, 1, miss["crp"]),
        "ferritin_ng_ml": _float_series(ferritin_obs, 0, miss["ferritin"]),
        "platelets_1e9_l": _float_series(plt_obs, 0, miss["plt"]),
        "anc_1e9_l": _float_series(anc, 2, miss["anc"]),
        "hemoglobin_g_dl": _float_series(hb, 1, miss["hb"]),
        "creatinine_mg_dl": _float_series(creat, 2, miss["creat"]),
        "il6_pg_ml": _float_series(il6, 1, miss["il6"]),
        "prior_autoimmune_disease": _bool_series(autoimmune, miss["autoimmune"]),
        "hlh_history": _bool_series(hlh, miss["hlh"]),
    }
    assert tuple(columns) == BASELINE_NAMES, "simulator out of step with columns.py"
    baseline = pd.DataFrame(columns)
    baseline["crs_max_grade"] = _int_series(reported_grade, none)
    baseline["crs_grading_scale"] = _str_series(scale.astype(object))
    _clip_to_contract(baseline)

    events = pd.DataFrame(
        {
            "patient_id": _str_series(patient_id),
            "fever": _bool_series(fever, none),
            "hypotension": _str_series(_HYPOTENSION[hypot_level]),
            "hypoxia": _str_series(_HYPOXIA[hypox_level]),
            "crs_death": _bool_series(crs_death, none),
        }
    )
    return SimulatedCohort(baseline=baseline, events=events, true_risk=true_risk), intercept


def _clip_to_contract(frame: pd.DataFrame) -> None:
    """Clip float columns to their contract ranges (guards against rounding at the edges)."""
    for spec in BASELINE_COLUMNS:
        if spec.kind == "float" and (spec.min is not None or spec.max is not None):
            frame[spec.name] = frame[spec.name].clip(lower=spec.min, upper=spec.max)
