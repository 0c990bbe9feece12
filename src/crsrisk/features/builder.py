"""Derived features of the validated baseline table, as a scikit-learn transformer.

`FeatureBuilder` computes one set of clinically motivated features (log labs, log2 m-EASIX and
EASIX, a disease-specific tumour-burden score, costimulation, the flu/Cy flag, ...) and emits
it in one of two shapes: ``kind="tree"`` for XGBoost (native missing values and native
categoricals) or ``kind="linear"`` for a penalised logistic regression (imputed, standardised,
one-hot, optionally splines). Everything that depends on data (burden scaling, seen category
levels, medians, scales, spline knots) is learned at ``fit`` on the training rows only.

`feature_label` and `raw_value_column` translate feature names for clinicians (SHAP drivers).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import SplineTransformer
from sklearn.utils.validation import check_is_fitted

from crsrisk.contract.products import (
    COSTIM_DOMAINS,
    DIAGNOSES,
    LYMPHODEPLETION,
    PRODUCTS,
    THERAPY_CLASSES,
)
from crsrisk.contract.spec import BASELINE_COLUMNS
from crsrisk.features.published import easix, log2_score, m_easix

__all__ = [
    "BINARY_FEATURES",
    "CATEGORICAL_FEATURES",
    "CONTINUOUS_FEATURES",
    "INPUT_COLUMNS",
    "FeatureBuilder",
    "feature_group",
    "feature_label",
    "raw_value_column",
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
# Levels in contract order; "none" is the costimulation of a bispecific (no CAR construct).
CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    "diagnosis": DIAGNOSES,
    "therapy_class": THERAPY_CLASSES,
    "product": tuple(PRODUCTS),
    "costim": (*COSTIM_DOMAINS, "none"),
}
SPLINE_FEATURES: tuple[str, ...] = (
    "age_years",
    "log_ldh",
    "log_crp",
    "log_platelets",
    "tumour_burden",
)
SPLINE_KNOTS = 4
SPLINE_DEGREE = 3

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


# ----------------------------------------------------------------------------------------------
# Common derived features (no fitted state except the burden scaling)
# ----------------------------------------------------------------------------------------------


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
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"FeatureBuilder needs the validated baseline table; missing column(s) "
            f"{', '.join(missing)}: validate the table with crsrisk.contract.validate first"
        )


def _burden_log(df: pd.DataFrame, dx_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log1p of each row's diagnosis-specific burden marker, and the marker index (-1: none)."""
    marker_index = np.array(
        [
            BURDEN_MARKERS.index(BURDEN_MARKER_OF[d]) if d in BURDEN_MARKER_OF else -1
            for d in DIAGNOSES
        ]
        + [-1]
    )
    which = _lookup(dx_codes, marker_index)
    stacked = np.column_stack([_floats(df, m) for m in BURDEN_MARKERS])
    picked = np.take_along_axis(stacked, np.maximum(which, 0)[:, None], axis=1)[:, 0]
    return np.where(which >= 0, np.log1p(picked), np.nan), which


def _common(df: pd.DataFrame, burden_mean: np.ndarray, burden_sd: np.ndarray) -> dict:
    """All derived features; numeric as float64 arrays, categoricals as contract-level codes."""
    out: dict[str, np.ndarray] = {}
    for name in ("age_years", "ecog", "prior_lines"):
        out[name] = _floats(df, name)
    for name, (column, offset) in LOG_LABS.items():
        out[name] = np.log2(_floats(df, column) + offset)
    for name in (
        "anc_1e9_l",
        "hemoglobin_g_dl",
        "marrow_blasts_pct",
        "marrow_plasma_cells_pct",
    ):
        out[name] = _floats(df, name)
    dx = _codes(df, "diagnosis", DIAGNOSES)
    burden, _ = _burden_log(df, dx)
    out["tumour_burden"] = (burden - _lookup(dx, burden_mean)) / _lookup(dx, burden_sd)
    out["log2_m_easix"] = log2_score(m_easix(df))
    out["log2_easix"] = log2_score(easix(df))
    ld = _codes(df, "lymphodepletion", LYMPHODEPLETION)
    flu_cy = ld == LYMPHODEPLETION.index("flu_cy")
    out["flu_cy"] = np.where(ld < 0, np.nan, flu_cy.astype("float64"))
    for name in BOOLEAN_COLUMNS:
        out[name] = _floats(df, name)
    out["diagnosis"] = dx
    therapy = _codes(df, "therapy_class", THERAPY_CLASSES)
    out["therapy_class"] = therapy
    out["product"] = _codes(df, "product", tuple(PRODUCTS))
    costim = _codes(df, "costim_domain", COSTIM_DOMAINS)
    bispecific = therapy == THERAPY_CLASSES.index("bispecific")
    out["costim"] = np.where(bispecific, len(COSTIM_DOMAINS), costim)
    return out


def _burden_scaling(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-diagnosis mean and SD of the log burden marker on ``df`` (the training rows).

    Returned arrays have one entry per contract diagnosis plus a final NaN entry for a missing
    diagnosis; a diagnosis without a marker, or without enough data, falls back to the pooled
    statistics of its marker, and to NaN when the marker was never observed.
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


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    sd = float(values.std())
    return float(values.mean()), sd if sd > 1e-9 else 1.0


def _knots(values: np.ndarray) -> np.ndarray | None:
    """Quantile knots of the observed training values, or None when too few distinct values."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    knots = np.unique(np.quantile(values, np.linspace(0, 1, SPLINE_KNOTS)))
    if knots.size < SPLINE_KNOTS:
        low, high = float(values.min()), float(values.max())
        if high - low < 1e-9:
            return None
        knots = np.linspace(low, high, SPLINE_KNOTS)
    return knots.reshape(-1, 1)


def _json_floats(values: np.ndarray) -> list[float | None]:
    """A float array as a JSON list, NaN as None (JSON has no NaN)."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype="float64")]


def _array(values: list, size: int | None = None) -> np.ndarray:
    """`_json_floats` back to a float array (None as NaN), of ``size`` entries when given."""
    array = np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if size is not None and array.size != size:
        raise ValueError(f"{array.size} values where {size} were expected")
    return array


# ----------------------------------------------------------------------------------------------
# The transformer
# ----------------------------------------------------------------------------------------------


class FeatureBuilder(TransformerMixin, BaseEstimator):
    """Model matrix from a validated baseline table, learned on the training rows only.

    Parameters
    ----------
    kind
        ``"tree"``: a DataFrame for XGBoost with NaN for missing values, float64 numeric columns
        and native categoricals whose levels are those seen at fit (a level unseen at fit, such
        as a product absent from training, becomes NaN). ``"linear"``: an all-float64 DataFrame
        for a penalised logistic regression: median imputation with missing-indicator columns
        (``<feature>_missing``) for features with missing values at fit, continuous features
        standardised, categories one-hot (``<feature>=<level>``, an unseen level is all zeros).
    splines
        ``kind="linear"`` only: replace a few key continuous features (`SPLINE_FEATURES`) by
        cubic B-spline terms (``<feature>_spline_<k>``) with knots at training quantiles.

    Attributes
    ----------
    feature_names_out_ : list of str
        Output column names, in output order.
    category_levels_ : dict
        Category levels seen at fit, per categorical feature, in contract order.
    burden_mean_, burden_sd_ : ndarray
        Scaling of the log tumour-burden marker per diagnosis (contract order).

    Notes
    -----
    Common features: age, ECOG, prior lines, cell dose, log2 of LDH, creatinine and (value + 1)
    of CRP, ferritin, IL-6 and SPD, platelets, ANC, haemoglobin, marrow blasts and plasma
    cells, ``tumour_burden`` (the diagnosis's own burden marker, SPD for lymphoma and CLL,
    marrow blasts for B-ALL, marrow plasma cells for MM, as log1p and standardised within the
    diagnosis on the training rows), log2 m-EASIX and EASIX, the flu/Cy flag, the four
    booleans as 0/1, diagnosis, therapy class, product and ``costim`` (CD28, 4-1BB, or none for
    a bispecific). Columns outside the contract are ignored; sex, weight, site and date are not
    used.
    """

    def __init__(self, kind: Literal["tree", "linear"] = "tree", splines: bool = False) -> None:
        self.kind = kind
        self.splines = splines

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureBuilder:
        """Learn burden scaling, seen levels and (linear) imputation, scaling and knots.

        Parameters
        ----------
        X
            Validated baseline table (training rows only).
        y
            Ignored.

        Returns
        -------
        FeatureBuilder
            self, fitted.
        """
        if self.kind not in ("tree", "linear"):
            raise ValueError(f"kind must be 'tree' or 'linear', got {self.kind!r}")
        _check_columns(X)
        self.burden_mean_, self.burden_sd_ = _burden_scaling(X)
        common = _common(X, self.burden_mean_, self.burden_sd_)
        self.category_levels_ = {}
        for name in CATEGORICAL_FEATURES:
            codes = common[name]
            seen = set(np.unique(codes[codes >= 0]).tolist())
            self.category_levels_[name] = tuple(
                level for code, level in enumerate(CATEGORY_LEVELS[name]) if code in seen
            )
        if self.kind == "linear":
            self._fit_linear(common)
        self._finish()
        return self

    def _finish(self) -> None:
        """Derived state (level maps, spline transformers, output names) of the learned state."""
        self.level_maps_ = {}
        for name in CATEGORICAL_FEATURES:
            kept = set(self.category_levels_[name])
            seen = np.array([level in kept for level in CATEGORY_LEVELS[name]], dtype=bool)
            # Contract code -> output code (-1 for unseen), with a final slot for missing.
            new_codes = np.cumsum(seen) - 1
            self.level_maps_[name] = np.append(np.where(seen, new_codes, -1), -1)
        if self.kind == "tree":
            self.feature_names_out_ = [
                *CONTINUOUS_FEATURES,
                *BINARY_FEATURES,
                *CATEGORICAL_FEATURES,
            ]
        else:
            self._finish_linear()

    def _fit_linear(self, common: dict) -> None:
        numeric = [*CONTINUOUS_FEATURES, *BINARY_FEATURES]
        # A feature never observed in training carries nothing to learn: left out.
        self.numeric_ = [n for n in numeric if not np.isnan(common[n]).all()]
        self.medians_ = {n: float(np.nanmedian(common[n])) for n in self.numeric_}
        self.indicators_ = [n for n in self.numeric_ if np.isnan(common[n]).any()]
        self.spline_knots_ = {}
        if self.splines:
            for name in SPLINE_FEATURES:
                if name in self.numeric_:
                    knots = _knots(common[name])
                    if knots is not None:
                        self.spline_knots_[name] = knots
        self.scales_ = {}
        for name in self.numeric_:
            if name in CONTINUOUS_FEATURES and name not in self.spline_knots_:
                filled = self._filled(common, name)
                sd = float(filled.std())
                self.scales_[name] = (float(filled.mean()), sd if sd > 1e-9 else 1.0)

    def _finish_linear(self) -> None:
        self.splines_ = {
            name: SplineTransformer(
                knots=knots, degree=SPLINE_DEGREE, extrapolation="linear", include_bias=False
            ).fit(knots)
            for name, knots in self.spline_knots_.items()
        }
        names = []
        for name in self.numeric_:
            if name in self.splines_:
                n_terms = self.splines_[name].n_features_out_
                names.extend(f"{name}_spline_{k}" for k in range(n_terms))
            else:
                names.append(name)
        for name in CATEGORICAL_FEATURES:
            names.extend(f"{name}={level}" for level in self.category_levels_[name])
        names.extend(f"{name}_missing" for name in self.indicators_)
        self.feature_names_out_ = names

    def _filled(self, common: dict, name: str) -> np.ndarray:
        values = common[name]
        return np.where(np.isnan(values), self.medians_[name], values)

    # -- transforming --------------------------------------------------------------------------

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The model matrix for the rows of ``X`` (any rows; the index is kept).

        Parameters
        ----------
        X
            Validated baseline table; columns outside the contract are ignored.

        Returns
        -------
        pd.DataFrame
            Columns `get_feature_names_out`; float64 (and, for ``kind="tree"``, categorical)
            with NaN for missing values, never ``pd.NA``.
        """
        check_is_fitted(self, "feature_names_out_")
        _check_columns(X)
        common = _common(X, self.burden_mean_, self.burden_sd_)
        if self.kind == "tree":
            return self._tree(common, X.index)
        return self._linear(common, X.index)

    def _category_codes(self, common: dict, name: str) -> np.ndarray:
        return _lookup(common[name], self.level_maps_[name])

    def _tree(self, common: dict, index: pd.Index) -> pd.DataFrame:
        columns: dict[str, object] = {
            name: common[name] for name in (*CONTINUOUS_FEATURES, *BINARY_FEATURES)
        }
        for name in CATEGORICAL_FEATURES:
            # xgboost cannot take a categorical without levels; a feature with none seen at
            # fit keeps the contract levels and is all missing.
            levels = self.category_levels_[name] or CATEGORY_LEVELS[name]
            codes = self._category_codes(common, name)
            columns[name] = pd.Categorical.from_codes(
                codes, dtype=pd.CategoricalDtype(list(levels))
            )
        return pd.DataFrame(columns, index=index)

    def _linear(self, common: dict, index: pd.Index) -> pd.DataFrame:
        n = len(index)
        matrix = np.empty((n, len(self.feature_names_out_)), dtype="float64", order="F")
        j = 0
        for name in self.numeric_:
            filled = self._filled(common, name)
            if name in self.splines_:
                spline = self.splines_[name]
                # sklearn refuses zero rows (an empty chunk when scoring).
                terms = (
                    spline.transform(filled.reshape(-1, 1))
                    if n
                    else np.empty((0, spline.n_features_out_))
                )
                matrix[:, j : j + terms.shape[1]] = terms
                j += terms.shape[1]
            else:
                if name in self.scales_:
                    mean, sd = self.scales_[name]
                    filled = (filled - mean) / sd
                matrix[:, j] = filled
                j += 1
        for name in CATEGORICAL_FEATURES:
            k = len(self.category_levels_[name])
            if k:
                codes = self._category_codes(common, name)
                block = matrix[:, j : j + k]
                block[:] = 0.0
                known = codes >= 0
                block[np.flatnonzero(known), codes[known]] = 1.0
                j += k
        for name in self.indicators_:
            matrix[:, j] = np.isnan(common[name])
            j += 1
        return pd.DataFrame(matrix, index=index, columns=self.feature_names_out_, copy=False)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Output column names, in output order (``input_features`` is ignored)."""
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The fitted state as JSON-able data (missing numbers as None), for `from_dict`."""
        check_is_fitted(self, "feature_names_out_")
        state: dict = {
            "kind": self.kind,
            "splines": bool(self.splines),
            "burden_mean": _json_floats(self.burden_mean_),
            "burden_sd": _json_floats(self.burden_sd_),
            "category_levels": {k: list(v) for k, v in self.category_levels_.items()},
        }
        if self.kind == "linear":
            state.update(
                numeric=list(self.numeric_),
                medians=dict(self.medians_),
                indicators=list(self.indicators_),
                spline_knots={k: v.ravel().tolist() for k, v in self.spline_knots_.items()},
                scales={k: list(v) for k, v in self.scales_.items()},
            )
        return state

    @classmethod
    def from_dict(cls, state: dict) -> FeatureBuilder:
        """The fitted FeatureBuilder that `to_dict` described.

        Raises
        ------
        ValueError
            The state is not that of a FeatureBuilder of this crsrisk (unknown kind, feature
            or level, wrong lengths, non-finite numbers).
        """
        try:
            builder = cls(kind=state["kind"], splines=bool(state["splines"]))
            if builder.kind not in ("tree", "linear"):
                raise ValueError(f"unknown kind {builder.kind!r}")
            builder.burden_mean_ = _array(state["burden_mean"], len(DIAGNOSES) + 1)
            builder.burden_sd_ = _array(state["burden_sd"], len(DIAGNOSES) + 1)
            levels = state["category_levels"]
            if set(levels) != set(CATEGORICAL_FEATURES):
                raise ValueError("the categorical features differ from this crsrisk's")
            builder.category_levels_ = {}
            for name in CATEGORICAL_FEATURES:
                kept = tuple(levels[name])
                if kept != tuple(x for x in CATEGORY_LEVELS[name] if x in kept):
                    raise ValueError(f"unknown or unordered levels of {name}")
                builder.category_levels_[name] = kept
            if builder.kind == "linear":
                builder._linear_state(state)
            builder._finish()
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"not a crsrisk feature builder state ({detail})") from exc
        return builder

    def _linear_state(self, state: dict) -> None:
        numeric = [str(n) for n in state["numeric"]]
        if not set(numeric) <= {*CONTINUOUS_FEATURES, *BINARY_FEATURES}:
            raise ValueError("unknown numeric feature")
        self.numeric_ = numeric
        self.medians_ = {n: float(state["medians"][n]) for n in numeric}
        self.indicators_ = [str(n) for n in state["indicators"]]
        self.spline_knots_ = {str(k): _array(v).reshape(-1, 1)
                              for k, v in state["spline_knots"].items()}
        self.scales_ = {str(k): (float(m), float(sd)) for k, (m, sd) in state["scales"].items()}
        if not (set(self.indicators_) | set(self.scales_) | set(self.spline_knots_)
                <= set(numeric) and set(self.spline_knots_) <= set(SPLINE_FEATURES)):
            raise ValueError("indicators, knots or scales of features it does not use")
        numbers = [*self.medians_.values(), *np.ravel(list(self.scales_.values())),
                   *(x for k in self.spline_knots_.values() for x in k.ravel())]
        if not np.isfinite(numbers).all():
            raise ValueError("non-finite medians, scales or knots")


# ----------------------------------------------------------------------------------------------
# Names for clinicians
# ----------------------------------------------------------------------------------------------

# Label and unit of each contract column a feature can come from: the contract's.
_COLUMN_LABELS: dict[str, str] = {c.name: c.heading for c in BASELINE_COLUMNS if c.label}
# Derived features: their contract column (None: no single raw value) and label. Labels never
# contain ";", which separates drivers in the score table.
_DERIVED: dict[str, tuple[str | None, str]] = {
    **{name: (column, _COLUMN_LABELS[column]) for name, (column, _) in LOG_LABS.items()},
    "flu_cy": ("lymphodepletion", "Fludarabine/cyclophosphamide lymphodepletion"),
    "costim": ("costim_domain", "Costimulation (CD28, 4-1BB, or none for bispecifics)"),
    "tumour_burden": (
        None,
        "Tumour burden (SPD, marrow blasts or plasma cells, in SDs from the disease mean)",
    ),
    "log2_m_easix": (None, "m-EASIX (LDH x CRP / platelets)"),
    "log2_easix": (None, "EASIX (LDH x creatinine / platelets)"),
    "m_easix": (None, "m-EASIX (LDH x CRP / platelets)"),
    "easix": (None, "EASIX (LDH x creatinine / platelets)"),
    "car_hematotox": (None, "CAR-HEMATOTOX (points)"),
}
_SPLINE = re.compile(r"^(?P<base>.+)_spline_(?P<k>\d+)$")


def _split(name: str) -> tuple[str, str]:
    """(base feature, decoration kind) of an output column name."""
    if "=" in name:
        return name.split("=", 1)[0], "level"
    if name.endswith("_missing"):
        return name[: -len("_missing")], "missing"
    match = _SPLINE.match(name)
    if match:
        return match["base"], "spline"
    return name, ""


def raw_value_column(name: str) -> str | None:
    """The contract column whose raw value a clinician should see for feature ``name``.

    Parameters
    ----------
    name
        A `FeatureBuilder` output column (``log_crp``, ``product=axi-cel``, ``log_crp_missing``,
        ``age_years_spline_2``, ...) or a published score name.

    Returns
    -------
    str or None
        E.g. ``"crp_mg_l"`` for ``log_crp``; None for features with no single raw value
        (m-EASIX, EASIX, tumour burden, published scores) and for unknown names.
    """
    base, _ = _split(name)
    if base in _DERIVED:
        return _DERIVED[base][0]
    if base in _COLUMN_LABELS:
        return base
    return None


def feature_group(name: str) -> str:
    """The driver group of feature ``name``: its contract column, else its undecorated name.

    All output columns born of one input share a group (``log_crp``, ``log_crp_missing`` and
    ``log_crp_spline_1`` -> ``crp_mg_l``; ``tumour_burden_missing`` -> ``tumour_burden``), so
    their contributions can be summed into one driver.
    """
    return raw_value_column(name) or _split(name)[0]


def feature_label(name: str) -> str:
    """A clinician-readable label with unit for feature ``name``.

    Parameters
    ----------
    name
        A `FeatureBuilder` output column, a contract column or a published score name.

    Returns
    -------
    str
        E.g. ``"CRP (mg/L)"`` for ``log_crp``, ``"Product: axi-cel"`` for ``product=axi-cel``,
        ``"CRP (mg/L) missing"`` for ``log_crp_missing``; an unknown name is returned as is.
    """
    base, decoration = _split(name)
    if base in _DERIVED:
        label = _DERIVED[base][1]
    elif base in _COLUMN_LABELS:
        label = _COLUMN_LABELS[base]
    else:
        return name
    if decoration == "level":
        return f"{label}: {name.split('=', 1)[1]}"
    if decoration == "missing":
        return f"{label} missing"
    if decoration == "spline":
        return f"{label} (spline term {_SPLINE.match(name)['k']})"
    return label
