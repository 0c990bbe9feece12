"""Explanations: per-feature contributions to the model's log-odds and drivers in words.

Each model type computes its own contributions (crsrisk.modeling.adapters): XGBoost models use
TreeSHAP (path-dependent, xgboost's own ``pred_contribs``, the algorithm of shap's TreeExplainer
without background data); the logistic model's contributions are exact: coefficient x
standardised feature; a published score is its own single driver. All are on the log-odds scale
of the model before calibration, and every output says so. This module groups them into
drivers and puts them in words.

Global explanations for the model report (`explain_global`: SHAP values of a cohort with
shap's TreeExplainer; importance, beeswarm and dependence plots) import shap and matplotlib
only when called, so scoring does not pay for them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xgboost as xgb

from crsrisk.contract.spec import BASELINE_SPECS
from crsrisk.features.builder import feature_group, feature_label
from crsrisk.features.published import easix, m_easix

__all__ = [
    "Contributions",
    "CohortTerms",
    "contributions_of",
    "CAR_T_ONLY_GROUPS",
    "SCORE_GROUPS",
    "render_drivers",
    "TREE_METHOD",
    "LINEAR_METHOD",
    "SCORE_METHOD",
    "SHAP_AXIS",
    "LOG_SCALE_GROUPS",
    "SHORT_LABELS",
    "driver_label",
    "GlobalExplanation",
    "tree_shap_values",
    "explain_global",
    "importance_figure",
    "beeswarm_figure",
    "dependence_figure",
]

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from crsrisk.modeling.riskmodel import RiskModel

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


def contributions_of(
    values: np.ndarray, names: list[str], base: np.ndarray, index: pd.Index
) -> Contributions:
    """Contributions of model-matrix columns ``names``, summed into their driver groups.

    Parameters
    ----------
    values
        Rows x columns of contributions to the margin (TreeSHAP values or linear terms).
    names
        The model-matrix column of each contribution.
    base
        The margin of each row when every contribution is 0.
    index
        The rows' index.
    """
    return Contributions(_grouped(values, names, index), base, values.sum(axis=1) + base)


@dataclass(frozen=True)
class CohortTerms:
    """A model's contributions over a cohort, as `explain_global` groups and shows them."""

    values: np.ndarray  # rows x model-matrix columns, on the margin; their sum + base = margin
    names: list[str]  # the model-matrix column of each value
    base: float
    method: str  # how they were computed, in words (TREE_METHOD, LINEAR_METHOD, SCORE_METHOD)
    data: pd.DataFrame | None = None  # what to show per driver group, when not the inputs


def _number_text(value: float) -> str:
    """Three significant figures, but whole numbers from 1000 up ("1160", not "1.16e+03")."""
    return f"{value:.0f}" if abs(value) >= 999.5 else f"{value:.3g}"


def _format_values(column: pd.Series) -> np.ndarray:
    """A clinician-readable text for each value of one contract column."""
    missing = column.isna().to_numpy()
    if pd.api.types.is_bool_dtype(column):
        flags = column.to_numpy(dtype=bool, na_value=False)
        text = np.where(flags, "yes", "no").astype(object)
    elif pd.api.types.is_numeric_dtype(column):
        numbers = column.to_numpy(dtype="float64", na_value=np.nan)
        text = np.array([_number_text(v) for v in numbers.tolist()], dtype=object)
    else:
        text = column.astype("str").to_numpy(dtype=object)
    text[missing] = "missing"
    return text


CAR_T_ONLY_GROUPS = frozenset({"cell_dose_1e6_per_kg", "costim_domain"})
SCORE_GROUPS = {"log2_m_easix": ("m-EASIX", m_easix), "log2_easix": ("EASIX", easix)}


def _phrase(group: str, valid: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """"<label> <value> <unit>" for the driver ``group`` of the given rows."""
    spec = BASELINE_SPECS.get(group)
    if spec is not None and spec.label and group in valid.columns:
        label, unit = spec.label, spec.display_unit
        values = _format_values(valid[group].iloc[rows])
        text = f"{label} " + values
        if unit:
            text = np.where(values == "missing", text, text + f" {unit}")
        if group in CAR_T_ONLY_GROUPS:
            bispecific = valid["therapy_class"].iloc[rows].eq("bispecific").to_numpy()
            text = np.where(bispecific, f"{label} not applicable (bispecific)", text)
        return text
    if group in SCORE_GROUPS:
        label, compute = SCORE_GROUPS[group]
        # Row-wise formulas: computed on the needed rows' own columns only.
        columns = valid.iloc[rows][["ldh_u_l", "crp_mg_l", "creatinine_mg_dl", "platelets_1e9_l"]]
        return f"{label} " + _format_values(compute(columns))
    return np.full(len(rows), feature_label(group), dtype=object)


def _top_columns(values: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the ``k`` largest ``|values|`` per row, largest first.

    Ties go to the lower position and NaN ranks last, as a stable descending sort would; k
    passes of argmax are much faster than sorting every row.
    """
    size = np.abs(values)
    size[np.isnan(size)] = -1.0
    order = np.empty((values.shape[0], k), dtype=np.intp)
    rows = np.arange(values.shape[0])
    for rank in range(k):
        order[:, rank] = np.argmax(size, axis=1)
        size[rows, order[:, rank]] = -np.inf
    return order


def render_drivers(contrib: Contributions, valid: pd.DataFrame, top_k: int) -> pd.Series:
    """The ``top_k`` largest contributions per row, in words, most important first.

    Example: "CRP 85 mg/L raises risk (+0.41 log-odds); Platelets 60 x10^9/L raises risk
    (+0.30 log-odds); Product axi-cel raises risk (+0.25 log-odds)".
    """
    values = contrib.values.to_numpy(dtype="float64")
    n, g = values.shape
    k = min(top_k, g)
    if n == 0 or k == 0:
        return pd.Series([], index=valid.index, dtype="str")
    order = _top_columns(values, k)
    size = np.take_along_axis(values, order, axis=1)
    groups = np.asarray(contrib.values.columns)
    text = np.empty((n, k), dtype=object)
    for j in np.unique(order):
        rows, ranks = np.nonzero(order == j)  # a group appears at most once per row
        text[rows, ranks] = _phrase(groups[j], valid, rows)
    direction = np.where(size >= 0, " raises risk (", " lowers risk (").astype(object)
    amount = np.array([f"{v:+.2f} log-odds)" for v in size.ravel().tolist()], dtype=object)
    pieces = text + direction + amount.reshape(n, k)
    columns = [pieces[:, r].tolist() for r in range(k)]
    joined = ["; ".join(row) for row in zip(*columns, strict=True)]
    return pd.Series(joined, index=valid.index, dtype="str")



# ------------------------------------------------------------------------------------------
# Global explanations: SHAP values over a cohort, importance, beeswarm and dependence plots.
# shap and matplotlib are imported where used: scoring imports this module and needs neither.
# ------------------------------------------------------------------------------------------

TREE_METHOD = (
    "TreeSHAP (shap.TreeExplainer on the XGBoost booster, path-dependent, no background data)"
)
LINEAR_METHOD = (
    "exact linear contributions: coefficient x (model-matrix value - its mean in this cohort)"
)
SCORE_METHOD = "the published score's log-odds, centred on its mean in this cohort"
SHAP_AXIS = "SHAP value (log-odds of the model before calibration)"
# Driver groups a clinician reads on a log scale (the model uses their logarithm).
LOG_SCALE_GROUPS = frozenset({
    "ldh_u_l", "crp_mg_l", "ferritin_ng_ml", "il6_pg_ml", "creatinine_mg_dl", "spd_cm2",
    "platelets_1e9_l", "cell_dose_1e6_per_kg",
})
SHORT_LABELS = {
    "tumour_burden": "Tumour burden (SD from disease mean)",
    "log2_m_easix": "m-EASIX (log2)",
    "log2_easix": "EASIX (log2)",
}


def driver_label(group: str) -> str:
    """A short clinician-readable label, with unit, for a driver group.

    Parameters
    ----------
    group
        A driver group: a contract column (``crp_mg_l``) or a derived feature
        (``tumour_burden``, ``log2_m_easix``).

    Returns
    -------
    str
        E.g. ``"CRP (mg/L)"``, ``"Product"``, ``"Tumour burden (SD from disease mean)"``.
    """
    if group in SHORT_LABELS:
        return SHORT_LABELS[group]
    spec = BASELINE_SPECS.get(group)
    if spec is not None and spec.label:
        return spec.heading
    return feature_label(group)


@dataclass(frozen=True)
class GlobalExplanation:
    """SHAP values of a cohort, one column per driver group, on the log-odds before calibration.

    ``values.sum(axis=1) + base`` is each row's margin. ``data`` holds, per driver group, the
    value a clinician reads (the contract column where the group has one, else the derived
    feature), for colouring and dependence plots.
    """

    values: pd.DataFrame
    data: pd.DataFrame
    base: float
    method: str
    n_cohort: int  # rows of the cohort; ``values`` holds all of them or a random sample
    scale: str = "log-odds of the model before calibration"

    def importance(self) -> pd.DataFrame:
        """Global importance: mean |SHAP| per driver group, largest first.

        Returns
        -------
        pandas.DataFrame
            ``driver`` (group), ``label`` (for clinicians), ``mean_abs_shap`` (log-odds) and
            ``share`` (of the sum of mean |SHAP| over groups).
        """
        mean_abs = self.values.abs().mean(axis=0)
        total = float(mean_abs.sum())
        frame = pd.DataFrame({
            "driver": pd.Series(mean_abs.index.astype(str), dtype="str"),
            "label": pd.Series([driver_label(g) for g in mean_abs.index], dtype="str"),
            "mean_abs_shap": mean_abs.to_numpy(dtype=float),
            "share": mean_abs.to_numpy(dtype=float) / total if total > 0 else np.nan,
        })
        return frame.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(
            drop=True)


def _float_design(design: pd.DataFrame) -> pd.DataFrame:
    """Nullable integer and boolean columns as float64 (shap and xgboost refuse pd.NA)."""
    out = design
    for name in design.columns:
        dtype = design[name].dtype
        if isinstance(dtype, pd.CategoricalDtype) or dtype == "float64":
            continue
        if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            if out is design:
                out = design.copy()
            out[name] = design[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return out


def tree_shap_values(booster: xgb.Booster, design: pd.DataFrame) -> tuple[np.ndarray, float]:
    """shap.TreeExplainer's values (rows x model-matrix columns) and base, on the log-odds.

    Parameters
    ----------
    booster
        An XGBoost model's booster: the trees are explained, not the calibrated model.
    design
        Its model matrix.
    """
    import shap

    explainer = shap.TreeExplainer(booster)
    matrix = xgb.DMatrix(_float_design(design), enable_categorical=True)
    values = np.asarray(explainer.shap_values(matrix), dtype=float)
    return values, float(np.ravel(explainer.expected_value)[0])


def _display_data(groups: list[str], valid: pd.DataFrame, design: pd.DataFrame) -> pd.DataFrame:
    columns = {}
    for group in groups:
        if group == "costim_domain" and "costim" in design.columns:
            columns[group] = design["costim"]  # says "none" for bispecifics, not missing
        elif group in valid.columns:
            columns[group] = valid[group]
        elif group in design.columns:
            columns[group] = design[group]
        else:
            columns[group] = pd.Series(np.nan, index=valid.index)
    return pd.DataFrame(columns, index=valid.index)


def explain_global(
    model: RiskModel, valid: pd.DataFrame, *, max_rows: int | None = 5000, seed: int = 0
) -> GlobalExplanation:
    """SHAP values of the model over a cohort, grouped by driver, for global explanations.

    XGBoost: shap's TreeExplainer on the booster (path-dependent, no background data). Logistic:
    exact linear SHAP values, coefficient x (value - cohort mean). Published score: its centred
    log-odds. All on the log-odds scale before calibration.

    Parameters
    ----------
    model
        A fitted RiskModel.
    valid
        Validated contract rows.
    max_rows
        Explain a seeded random sample of this many rows when the cohort is larger (None: all).
    seed
        Seed of that sample.

    Returns
    -------
    GlobalExplanation
    """
    n_cohort = len(valid)
    if max_rows is not None and n_cohort > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n_cohort, max_rows, replace=False))
        valid = valid.iloc[rows]
    design = model.design(valid)
    terms: CohortTerms = model.adapter.cohort_terms(design)
    grouped = _grouped(terms.values, terms.names, valid.index)
    data = (_display_data(list(grouped.columns), valid, design) if terms.data is None
            else terms.data)
    return GlobalExplanation(grouped, data, terms.base, terms.method, n_cohort)


def _colour_values(column: pd.Series) -> np.ndarray:
    """Numbers to colour a beeswarm by: numeric as is, yes/no as 1/0, categories as missing."""
    if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(column):
        return np.full(len(column), np.nan)
    return column.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def importance_figure(explanation: GlobalExplanation, top: int = 15) -> Figure:
    """Horizontal bars of mean |SHAP| for the ``top`` driver groups (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    table = explanation.importance().head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(table) + 1.2))
    ax.barh(table["label"], table["mean_abs_shap"], color="#1f77b4")
    ax.set_xlabel("mean |SHAP| (log-odds of the model before calibration)")
    ax.set_title("Global importance")
    fig.tight_layout()
    return fig


def beeswarm_figure(explanation: GlobalExplanation, top: int = 12) -> Figure:
    """shap's beeswarm of the ``top`` driver groups (a matplotlib Figure).

    Points are coloured by the driver's value (low blue, high red); categorical drivers
    (product, diagnosis...) have no order and are grey.
    """
    import matplotlib.pyplot as plt
    import shap

    groups = list(explanation.values.columns)
    colours = np.column_stack([_colour_values(explanation.data[g]) for g in groups])
    shap_values = shap.Explanation(
        values=explanation.values.to_numpy(dtype=float),
        base_values=np.full(len(explanation.values), explanation.base),
        data=colours,
        feature_names=[driver_label(g) for g in groups],
    )
    fig, ax = plt.subplots(figsize=(8, 0.42 * min(top, len(groups)) + 1.6))
    with warnings.catch_warnings():
        # shap takes percentiles of each colour column; an all-missing one (a categorical
        # driver) warns before shap draws it grey, as intended.
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        shap.plots.beeswarm(shap_values, max_display=top, ax=ax, show=False, plot_size=None,
                            color_bar_label="driver value (categorical: grey)")
    ax.set_xlabel(SHAP_AXIS)
    fig.tight_layout()
    return fig


def dependence_figure(explanation: GlobalExplanation, group: str) -> Figure:
    """SHAP value of one driver group against its value (a matplotlib Figure).

    Continuous drivers are a scatter (log axis for labs the model takes the log of, missing
    values counted in the title); categorical and yes/no drivers are a strip per level.
    """
    import matplotlib.pyplot as plt

    shap_col = explanation.values[group].to_numpy(dtype=float)
    column = explanation.data[group]
    label = driver_label(group)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    categorical = (isinstance(column.dtype, pd.CategoricalDtype)
                   or pd.api.types.is_string_dtype(column)
                   or pd.api.types.is_bool_dtype(column))
    if categorical:
        text = pd.Series(_format_values(column), index=column.index)
        levels = (pd.DataFrame({"level": text.to_numpy(), "shap": shap_col})
                  .groupby("level")["shap"].median().sort_values().index.tolist())
        jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(shap_col))
        for i, level in enumerate(levels):
            mask = text.to_numpy() == level
            ax.scatter(np.full(mask.sum(), i) + jitter[mask], shap_col[mask], s=6, alpha=0.4,
                       color="#1f77b4", linewidths=0)
            ax.hlines(np.median(shap_col[mask]), i - 0.35, i + 0.35, color="black")
        ax.set_xticks(range(len(levels)), levels, rotation=45 if len(levels) > 4 else 0,
                      ha="right" if len(levels) > 4 else "center", fontsize=8)
        ax.set_xlabel(label)
    else:
        x = column.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        present = np.isfinite(x)
        ax.scatter(x[present], shap_col[present], s=6, alpha=0.4, color="#1f77b4",
                   linewidths=0)
        if group in LOG_SCALE_GROUPS and present.any() and np.nanmin(x[present]) > 0:
            ax.set_xscale("log")
        missing = int((~present).sum())
        ax.set_xlabel(label + (f" ({missing:,} missing, not shown)" if missing else ""))
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("SHAP (log-odds before calibration)")
    ax.set_title(f"Dependence: {label}", fontsize=10)
    fig.tight_layout()
    return fig
