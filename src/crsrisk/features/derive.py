"""The domain step of the feature pipeline: derived features of the validated baseline table.

`DerivedFeatures` turns contract columns into the clinically motivated features every model
shares: log2 labs, the disease-specific tumour-burden score, log2 m-EASIX and EASIX, the
flu/Cy flag, the booleans as 0/1, and four categoricals as integer codes of their contract
levels. Its only fitted state is the tumour-burden scaling per diagnosis (training rows only).
The generic steps after it (imputation, scaling, one-hot coding, splines) are scikit-learn's,
in `crsrisk.features.builder`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from crsrisk.contract.products import (
    COSTIM_DOMAINS,
    DIAGNOSES,
    LYMPHODEPLETION,
    PRODUCTS,
    THERAPY_CLASSES,
)
from crsrisk.features.published import easix, log2_score, m_easix

__all__ = [
    "BINARY_FEATURES",
    "BOOLEAN_COLUMNS",
    "BURDEN_MARKERS",
    "BURDEN_MARKER_OF",
    "CATEGORICAL_FEATURES",
    "CATEGORY_LEVELS",
    "CONTINUOUS_FEATURES",
    "DERIVED_FEATURES",
    "INPUT_COLUMNS",
    "LOG_LABS",
    "MIN_BURDEN_ROWS",
    "DerivedFeatures",
]

# log2(value + offset): an offset of 1 where the contract allows 0 (CRP, ferritin, IL-6, SPD).
LOG_LABS: dict[str, tuple[str, float]] = {
    "log_ldh": ("ldh_u_l", 0.0),
    "log_crp": ("crp_mg_l", 1.0),
    "log_ferritin": ("ferritin_ng_ml", 1.0),
    "log_il6": ("il6_pg_ml", 1.0),
    "log_creatinine": ("creatinine_mg_dl", 0.0),
    "log_spd": ("spd_cm2", 1.0),
    # Platelets and cell dose act multiplicatively too (Hay 2017); offsets keep 0 finite.
    "log_platelets": ("platelets_1e9_l", 1.0),
    "log_cell_dose": ("cell_dose_1e6_per_kg", 0.01),
}
BOOLEAN_COLUMNS = ("bridging_therapy", "bulky_disease", "prior_autoimmune_disease", "hlh_history")

CONTINUOUS_FEATURES: tuple[str, ...] = (
    "age_years",
    "ecog",
    "prior_lines",
    "log_cell_dose",
    "log_ldh",
    "log_crp",
    "log_ferritin",
    "log_il6",
    "log_creatinine",
    "log_platelets",
    "anc_1e9_l",
    "hemoglobin_g_dl",
    "log_spd",
    "marrow_blasts_pct",
    "marrow_plasma_cells_pct",
    "tumour_burden",
    "log2_m_easix",
    "log2_easix",
)
BINARY_FEATURES: tuple[str, ...] = ("flu_cy", *BOOLEAN_COLUMNS)
CATEGORICAL_FEATURES: tuple[str, ...] = ("diagnosis", "therapy_class", "product", "costim")
# The columns of `DerivedFeatures.transform`, in order.
DERIVED_FEATURES: tuple[str, ...] = (*CONTINUOUS_FEATURES, *BINARY_FEATURES, *CATEGORICAL_FEATURES)
# Levels in contract order; "none" is the costimulation of a bispecific (no CAR construct).
CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    "diagnosis": DIAGNOSES,
    "therapy_class": THERAPY_CLASSES,
    "product": tuple(PRODUCTS),
    "costim": (*COSTIM_DOMAINS, "none"),
}

# The burden marker of each diagnosis; SCLC and "other" have none, so their burden is missing.
BURDEN_MARKERS = ("spd_cm2", "marrow_blasts_pct", "marrow_plasma_cells_pct")
BURDEN_MARKER_OF: dict[str, str] = {
    "LBCL": "spd_cm2",
    "FL": "spd_cm2",
    "MCL": "spd_cm2",
    "CLL": "spd_cm2",
    "B-ALL": "marrow_blasts_pct",
    "MM": "marrow_plasma_cells_pct",
}
# A diagnosis with fewer observed markers than this in training is scaled with its marker's
# pooled statistics (all diagnoses sharing the marker) instead of its own.
MIN_BURDEN_ROWS = 10

INPUT_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            "age_years",
            "ecog",
            "prior_lines",
            "cell_dose_1e6_per_kg",
            *(column for column, _ in LOG_LABS.values()),
            "platelets_1e9_l",
            "anc_1e9_l",
            "hemoglobin_g_dl",
            *BURDEN_MARKERS,
            "lymphodepletion",
            *BOOLEAN_COLUMNS,
            "diagnosis",
            "therapy_class",
            "product",
            "costim_domain",
        )
    )
)
_PLAIN = ("anc_1e9_l", "hemoglobin_g_dl", "marrow_blasts_pct", "marrow_plasma_cells_pct")
# The burden marker's position in BURDEN_MARKERS per contract diagnosis, -1 for none; a final
# -1 for a missing diagnosis.
_MARKER_INDEX = np.array(
    [BURDEN_MARKERS.index(BURDEN_MARKER_OF[d]) if d in BURDEN_MARKER_OF else -1
     for d in DIAGNOSES] + [-1]
)


def _floats(df: pd.DataFrame, column: str) -> np.ndarray:
    return df[column].to_numpy(dtype="float64", na_value=np.nan)


def _codes(df: pd.DataFrame, column: str, levels: tuple[str, ...]) -> np.ndarray:
    """Integer codes of ``column`` in ``levels`` (-1 for missing or any other value)."""
    col = df[column]
    # Unordered CategoricalDtypes compare equal whatever their level order: compare lists.
    same = isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == list(levels)
    if not same:
        col = col.astype(pd.CategoricalDtype(list(levels)))
    return col.cat.codes.to_numpy()


def _lookup(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[codes]`` with code -1 (missing) mapped to the last entry of ``table``."""
    return table[np.where(codes < 0, len(table) - 1, codes)]


def _check_columns(df: pd.DataFrame) -> None:
    """Raise ValueError naming the contract columns `DerivedFeatures` needs and ``df`` lacks."""
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"FeatureBuilder needs the validated baseline table; missing column(s) "
            f"{', '.join(missing)}: validate the table with crsrisk.contract.validate first"
        )


def _burden_log(df: pd.DataFrame, dx_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log1p of each row's diagnosis-specific burden marker, and the marker index (-1: none)."""
    which = _lookup(dx_codes, _MARKER_INDEX)
    stacked = np.column_stack([_floats(df, m) for m in BURDEN_MARKERS])
    picked = np.take_along_axis(stacked, np.maximum(which, 0)[:, None], axis=1)[:, 0]
    return np.where(which >= 0, np.log1p(picked), np.nan), which


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    sd = float(values.std())
    return float(values.mean()), sd if sd > 1e-9 else 1.0


def _burden_scaling(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-diagnosis mean and SD of the log burden marker on ``df`` (the training rows).

    Returns
    -------
    mean, sd : ndarray
        One entry per contract diagnosis plus a final NaN entry for a missing diagnosis; a
        diagnosis with too few observed markers (`MIN_BURDEN_ROWS`) gets the pooled statistics
        of its marker, NaN when the marker was never observed or the diagnosis has none.
    """
    dx = _codes(df, "diagnosis", DIAGNOSES)
    burden, which = _burden_log(df, dx)
    observed = ~np.isnan(burden)
    pooled = {}
    for k, marker in enumerate(BURDEN_MARKERS):
        values = burden[observed & (which == k)]
        pooled[marker] = _mean_sd(values) if values.size >= 2 else (np.nan, np.nan)
    mean = np.full(len(DIAGNOSES) + 1, np.nan)
    sd = np.full(len(DIAGNOSES) + 1, np.nan)
    for i, diagnosis in enumerate(DIAGNOSES):
        marker = BURDEN_MARKER_OF.get(diagnosis)
        if marker is None:
            continue
        values = burden[observed & (dx == i)]
        mean[i], sd[i] = _mean_sd(values) if values.size >= MIN_BURDEN_ROWS else pooled[marker]
    return mean, sd


class DerivedFeatures(TransformerMixin, BaseEstimator):
    """Derived features of validated baseline rows, as a float matrix (`DERIVED_FEATURES`).

    Numeric features are float64 with NaN for a missing value; the categoricals (diagnosis,
    therapy class, product, ``costim``) are the integer code of their level in
    `CATEGORY_LEVELS` as float, NaN when missing or not a contract level. A bispecific's
    ``costim`` is ``"none"``. Columns outside the contract are ignored.

    Attributes
    ----------
    burden_mean_, burden_sd_ : ndarray
        Mean and SD of the log1p tumour-burden marker per contract diagnosis on the training
        rows, plus a final NaN entry for a missing diagnosis (pooled over the marker's
        diagnoses for one with fewer than `MIN_BURDEN_ROWS` observed markers).
    """

    def fit(self, X: pd.DataFrame, y: object = None) -> DerivedFeatures:
        """Learn the tumour-burden scaling per diagnosis on ``X`` (training rows only)."""
        _check_columns(X)
        self.burden_mean_, self.burden_sd_ = _burden_scaling(X)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The derived features of the rows of ``X``, shape (rows, len(DERIVED_FEATURES))."""
        check_is_fitted(self, "burden_mean_")
        _check_columns(X)
        values: dict[str, np.ndarray] = {}
        for name in ("age_years", "ecog", "prior_lines", *_PLAIN, *BOOLEAN_COLUMNS):
            values[name] = _floats(X, name)
        for name, (column, offset) in LOG_LABS.items():
            values[name] = np.log2(_floats(X, column) + offset)
        dx = _codes(X, "diagnosis", DIAGNOSES)
        burden, _ = _burden_log(X, dx)
        values["tumour_burden"] = ((burden - _lookup(dx, self.burden_mean_))
                                   / _lookup(dx, self.burden_sd_))
        values["log2_m_easix"] = log2_score(m_easix(X))
        values["log2_easix"] = log2_score(easix(X))
        ld = _codes(X, "lymphodepletion", LYMPHODEPLETION)
        flu_cy = (ld == LYMPHODEPLETION.index("flu_cy")).astype("float64")
        values["flu_cy"] = np.where(ld < 0, np.nan, flu_cy)
        therapy = _codes(X, "therapy_class", THERAPY_CLASSES)
        bispecific = therapy == THERAPY_CLASSES.index("bispecific")
        codes = {
            "diagnosis": dx,
            "therapy_class": therapy,
            "product": _codes(X, "product", tuple(PRODUCTS)),
            "costim": np.where(bispecific, len(COSTIM_DOMAINS),
                               _codes(X, "costim_domain", COSTIM_DOMAINS)),
        }
        for name, code in codes.items():
            values[name] = np.where(code < 0, np.nan, code)
        out = np.empty((len(X), len(DERIVED_FEATURES)), dtype="float64", order="F")
        for j, name in enumerate(DERIVED_FEATURES):
            out[:, j] = values[name]
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """`DERIVED_FEATURES` (``input_features`` is ignored)."""
        return np.asarray(DERIVED_FEATURES, dtype=object)
