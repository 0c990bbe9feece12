"""Explanations: per-feature contributions to the model's log-odds and drivers in words.

XGBoost models use TreeSHAP (path-dependent, xgboost's own ``pred_contribs``, the algorithm of
shap's TreeExplainer without background data); the logistic model's contributions are exact:
coefficient x standardised feature. Both are on the log-odds scale of the model before
calibration, and every output says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xgboost as xgb

from crsrisk.baselines import easix, m_easix
from crsrisk.features import feature_group, feature_label

if TYPE_CHECKING:
    from crsrisk.riskmodel import RiskModel

# How a clinician reads a contract column: label and unit.
DISPLAY: dict[str, tuple[str, str]] = {
    "age_years": ("Age", "years"),
    "sex": ("Sex", ""),
    "weight_kg": ("Weight", "kg"),
    "ecog": ("ECOG", ""),
    "diagnosis": ("Diagnosis", ""),
    "therapy_class": ("Therapy", ""),
    "product": ("Product", ""),
    "costim_domain": ("Costimulation", ""),
    "cell_dose_1e6_per_kg": ("Cell dose", "x10^6/kg"),
    "lymphodepletion": ("Lymphodepletion", ""),
    "prior_lines": ("Prior lines", ""),
    "bridging_therapy": ("Bridging therapy", ""),
    "ldh_u_l": ("LDH", "U/L"),
    "spd_cm2": ("SPD", "cm2"),
    "marrow_blasts_pct": ("Marrow blasts", "%"),
    "marrow_plasma_cells_pct": ("Marrow plasma cells", "%"),
    "bulky_disease": ("Bulky disease", ""),
    "crp_mg_l": ("CRP", "mg/L"),
    "ferritin_ng_ml": ("Ferritin", "ng/mL"),
    "platelets_1e9_l": ("Platelets", "x10^9/L"),
    "anc_1e9_l": ("ANC", "x10^9/L"),
    "hemoglobin_g_dl": ("Haemoglobin", "g/dL"),
    "creatinine_mg_dl": ("Creatinine", "mg/dL"),
    "il6_pg_ml": ("IL-6", "pg/mL"),
    "prior_autoimmune_disease": ("Prior autoimmune disease", ""),
    "hlh_history": ("HLH history", ""),
}


@dataclass(frozen=True)
class Contributions:
    """Per-row contributions to the margin: ``values.sum(axis=1) + base == margin``."""

    values: pd.DataFrame  # one column per driver group (a contract column or a derived score)
    base: np.ndarray  # the expected margin (per row; constant for trees and linear models)
    margin: np.ndarray
    scale: str = "log-odds of the model before calibration"


def _grouped(values: np.ndarray, names: list[str], index: pd.Index) -> pd.DataFrame:
    groups = [feature_group(n) for n in names]
    unique = list(dict.fromkeys(groups))
    if len(unique) == len(names):
        return pd.DataFrame(values, columns=unique, index=index)
    summed = np.zeros((values.shape[0], len(unique)))
    position = {g: i for i, g in enumerate(unique)}
    for j, g in enumerate(groups):
        summed[:, position[g]] += values[:, j]
    return pd.DataFrame(summed, columns=unique, index=index)


def contributions_for(model: RiskModel, valid: pd.DataFrame) -> Contributions:
    """Contributions of each driver group to ``model``'s margin for validated rows."""
    design = model.design(valid)
    if model.kind == "xgboost":
        matrix = xgb.DMatrix(design, enable_categorical=True)
        raw = model.estimator.get_booster().predict(matrix, pred_contribs=True)
        values, base = raw[:, :-1], raw[:, -1]
        names = list(design.columns)
    elif model.kind == "logistic":
        x = np.asarray(design, dtype=float)
        coef = model.estimator.coef_.ravel()
        values = x * coef
        base = np.full(len(x), float(model.estimator.intercept_[0]))
        names = list(design.columns)
    else:  # a published score: one driver, the score itself
        margin = model.margin(valid, design)
        return Contributions(
            pd.DataFrame({model.kind: margin}, index=valid.index),
            np.zeros(len(margin)),
            margin,
        )
    grouped = _grouped(values, names, valid.index)
    return Contributions(grouped, base, values.sum(axis=1) + base)


def _format_values(column: pd.Series) -> np.ndarray:
    """A clinician-readable text for each value of one contract column."""
    if pd.api.types.is_bool_dtype(column):
        text = column.map({True: "yes", False: "no"})
    elif pd.api.types.is_numeric_dtype(column):
        text = column.map(lambda v: f"{v:.3g}", na_action="ignore")
    else:
        text = column.astype("str")
    return text.astype(object).where(column.notna(), "missing").to_numpy(dtype=object)


CAR_T_ONLY_GROUPS = frozenset({"cell_dose_1e6_per_kg", "costim_domain"})
SCORE_GROUPS = {"log2_m_easix": ("m-EASIX", m_easix), "log2_easix": ("EASIX", easix)}


def _phrase(group: str, valid: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """"<label> <value> <unit>" for the driver ``group`` of the given rows."""
    subset = valid.iloc[rows]
    if group in DISPLAY and group in valid.columns:
        label, unit = DISPLAY[group]
        values = _format_values(subset[group])
        text = np.char.add(np.char.add(f"{label} ", values.astype(str)),
                           np.where(values == "missing", "", f" {unit}" if unit else ""))
        if group in CAR_T_ONLY_GROUPS:
            bispecific = subset["therapy_class"].eq("bispecific").to_numpy()
            text = np.where(bispecific, f"{label} not applicable (bispecific)", text)
        return text
    if group in SCORE_GROUPS:
        label, compute = SCORE_GROUPS[group]
        values = _format_values(compute(subset))
        return np.char.add(f"{label} ", values.astype(str))
    return np.full(len(rows), feature_label(group), dtype=object)


def render_drivers(contrib: Contributions, valid: pd.DataFrame, top_k: int) -> pd.Series:
    """The ``top_k`` largest contributions per row, in words, most important first.

    Example: "CRP 85 mg/L raises risk (+0.41 log-odds); Platelets 60 x10^9/L raises risk
    (+0.30 log-odds); Product axi-cel raises risk (+0.25 log-odds)".
    """
    values = contrib.values.to_numpy()
    n, g = values.shape
    k = min(top_k, g)
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    pieces = []
    groups = np.asarray(contrib.values.columns)
    for rank in range(k):
        chosen = order[:, rank]
        size = values[np.arange(n), chosen]
        text = np.empty(n, dtype=object)
        for j in np.unique(chosen):
            rows = np.flatnonzero(chosen == j)
            text[rows] = _phrase(groups[j], valid, rows)
        direction = np.where(size >= 0, " raises risk (", " lowers risk (")
        amount = np.char.mod("%+.2f log-odds)", size)
        pieces.append(np.char.add(np.char.add(text.astype(str), direction), amount))
    joined = pieces[0]
    for piece in pieces[1:]:
        joined = np.char.add(np.char.add(joined, "; "), piece)
    return pd.Series(joined.astype(object), index=valid.index, dtype="str")
