"""The model matrix of the validated baseline table: our derived features, scikit-learn's steps.

`FeatureBuilder` is a transformer in two shapes. ``kind="tree"`` (XGBoost) is the derived
features of `crsrisk.features.derive` with native missing values and native categoricals.
``kind="linear"`` (penalised logistic regression) runs them through a scikit-learn pipeline:

1. `DerivedFeatures` (ours: log labs, tumour burden per diagnosis, EASIX, codes of levels);
2. a ``ColumnTransformer``: ``SimpleImputer(strategy="median", add_indicator=True)`` on the
   numeric features, ``OneHotEncoder(handle_unknown="ignore")`` on the categoricals;
3. a ``ColumnTransformer``: ``StandardScaler`` on the continuous features and, with
   ``splines=True``, ``SplineTransformer`` (cubic, knots at training quantiles) on a few key
   ones; binary features and missing indicators pass through.

Everything that depends on data is learned at ``fit`` on the training rows only.

Persistence is JSON of the fitted parameters (`to_dict` / `from_dict`): burden scaling, seen
levels, medians, indicator features, knots, means and scales; `from_dict` rebuilds the same
scikit-learn objects and sets those parameters, so a round trip transforms identically. JSON
rather than skops: a model artefact stays plain data that nothing executes when it is read, a
reviewer can read it, and the format is the one models saved before this pipeline used (they
still load). skops would store the objects' whole internal state, tie saved models to
scikit-learn's private attributes and need a list of trusted types kept in step with them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted

from crsrisk.contract.products import DIAGNOSES
from crsrisk.features.derive import (
    BINARY_FEATURES,
    BURDEN_MARKER_OF,
    CATEGORICAL_FEATURES,
    CATEGORY_LEVELS,
    CONTINUOUS_FEATURES,
    DERIVED_FEATURES,
    INPUT_COLUMNS,
    DerivedFeatures,
)
from crsrisk.features.names import feature_group, feature_label, raw_value_column

__all__ = [
    "BINARY_FEATURES",
    "BURDEN_MARKER_OF",
    "CATEGORICAL_FEATURES",
    "CONTINUOUS_FEATURES",
    "INPUT_COLUMNS",
    "SPLINE_FEATURES",
    "FeatureBuilder",
    "feature_group",
    "feature_label",
    "raw_value_column",
]

SPLINE_FEATURES: tuple[str, ...] = (
    "age_years",
    "log_ldh",
    "log_crp",
    "log_platelets",
    "tumour_burden",
)
SPLINE_KNOTS = 4
SPLINE_DEGREE = 3
_NUMERIC = (*CONTINUOUS_FEATURES, *BINARY_FEATURES)
_POSITION = {name: j for j, name in enumerate(DERIVED_FEATURES)}


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
    return knots


def _json_floats(values: np.ndarray) -> list[float | None]:
    """A float array as a JSON list, NaN as None (JSON has no NaN)."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype="float64")]


def _array(values: list, size: int | None = None) -> np.ndarray:
    """`_json_floats` back to a float array (None as NaN), of ``size`` entries when given."""
    array = np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if size is not None and array.size != size:
        raise ValueError(f"{array.size} values where {size} were expected")
    return array


def _numpy_output() -> AbstractContextManager:
    """Numpy between the steps, whatever the global scikit-learn output setting (the steps
    would otherwise pass named frames at fit or transform only, and warn)."""
    return config_context(transform_output="default")


class _LinearDesign:
    """The two fitted ColumnTransformers of the linear shape and the order of their output.

    Parameters
    ----------
    numeric
        Numeric features used (observed at fit), in `_NUMERIC` order.
    indicators
        Those with a missing value at fit (a ``<feature>_missing`` column each).
    knots
        Spline knots per splined feature.
    levels
        Level codes seen at fit per categorical feature (contract codes, ascending).
    """

    def __init__(self, numeric: list[str], indicators: list[str], knots: dict[str, np.ndarray],
                 levels: dict[str, list[int]]) -> None:
        self.numeric = numeric
        self.indicators = indicators
        self.knots = knots
        self.scaled = [n for n in numeric if n in CONTINUOUS_FEATURES and n not in knots]
        self.splined = [n for n in numeric if n in knots]
        encoded = [n for n in CATEGORICAL_FEATURES if levels[n]]
        impute_encode = [("impute", SimpleImputer(strategy="median", add_indicator=True),
                          [_POSITION[n] for n in numeric])]
        if encoded:
            impute_encode.append(("one_hot", OneHotEncoder(
                categories=[np.array(levels[n], dtype="float64") for n in encoded],
                handle_unknown="ignore", sparse_output=False, dtype=np.float64),
                [_POSITION[n] for n in encoded]))
        # The first step's output: numeric (imputed), indicators, one-hot blocks.
        first = [*numeric, *(f"{n}_missing" for n in indicators),
                 *(f"{n}={CATEGORY_LEVELS[n][c]}" for n in encoded for c in levels[n])]
        expand = [("scale", StandardScaler(), [first.index(n) for n in self.scaled])]
        if self.splined:
            splines = SplineTransformer(
                knots=np.column_stack([knots[n] for n in self.splined]), degree=SPLINE_DEGREE,
                extrapolation="linear", include_bias=False)
            expand.append(("splines", splines, [first.index(n) for n in self.splined]))
        n_terms = SPLINE_KNOTS + SPLINE_DEGREE - 2  # B-splines without the bias term
        # The second step's output: scaled, spline terms, the rest as they were (passthrough).
        used = {*self.scaled, *self.splined}
        second = [*self.scaled,
                  *(f"{n}_spline_{k}" for n in self.splined for k in range(n_terms)),
                  *(name for name in first if name not in used)]
        # Output order: numeric features in order (spline terms in their place), one-hot
        # blocks, indicators -- the order models saved before this pipeline rely on.
        self.names = [*(term for n in numeric for term in (
                          [f"{n}_spline_{k}" for k in range(n_terms)] if n in knots else [n])),
                      *(name for name in first if "=" in name),
                      *(f"{n}_missing" for n in indicators)]
        self.order = np.array([second.index(name) for name in self.names], dtype=np.intp)
        self.pipeline = Pipeline([
            ("impute_encode", ColumnTransformer(impute_encode)),
            ("scale_expand", ColumnTransformer(expand, remainder="passthrough")),
        ])

    def fit(self, derived: np.ndarray) -> _LinearDesign:
        """Fit both steps on the derived training matrix."""
        with _numpy_output():
            self.pipeline.fit(derived)
        self._check()
        return self

    def restore(self, medians: dict[str, float], scales: dict[str, tuple[float, float]],
                levels: dict[str, list[int]]) -> _LinearDesign:
        """Rebuild the fitted steps from saved parameters (no training data).

        The steps are fitted on a two-row skeleton that has the saved structure (every numeric
        feature observed, the indicator features missing in one row, a seen level per
        categorical), then given the saved medians, means and scales.
        """
        skeleton = np.zeros((2, len(DERIVED_FEATURES)))
        for name in self.indicators:
            skeleton[1, _POSITION[name]] = np.nan
        for name, codes in levels.items():
            skeleton[:, _POSITION[name]] = codes[0] if codes else np.nan
        with _numpy_output():
            self.pipeline.fit(skeleton)
        impute = self.pipeline.named_steps["impute_encode"].named_transformers_["impute"]
        impute.statistics_ = np.array([medians[n] for n in self.numeric], dtype="float64")
        if self.scaled:
            scaler = self.pipeline.named_steps["scale_expand"].named_transformers_["scale"]
            scaler.mean_ = np.array([scales[n][0] for n in self.scaled], dtype="float64")
            scaler.scale_ = np.array([scales[n][1] for n in self.scaled], dtype="float64")
            scaler.var_ = scaler.scale_**2
        self._check()
        return self

    def _check(self) -> None:
        impute = self.pipeline.named_steps["impute_encode"].named_transformers_["impute"]
        flagged = [self.numeric[j] for j in impute.indicator_.features_]
        if flagged != self.indicators or len(self.order) != len(self.names):
            raise ValueError("the fitted steps do not have the planned columns")

    def parameters(self) -> dict:
        """Medians, indicators, knots and scales, as JSON-able data."""
        steps = self.pipeline.named_steps
        impute = steps["impute_encode"].named_transformers_["impute"]
        scales = {}
        if self.scaled:
            scaler = steps["scale_expand"].named_transformers_["scale"]
            scales = {n: [float(m), float(s)]
                      for n, m, s in zip(self.scaled, scaler.mean_, scaler.scale_, strict=True)}
        return {
            "numeric": list(self.numeric),
            "medians": {n: float(v) for n, v in zip(self.numeric, impute.statistics_,
                                                    strict=True)},
            "indicators": list(self.indicators),
            "spline_knots": {n: self.knots[n].tolist() for n in self.splined},
            "scales": scales,
        }

    def transform(self, derived: np.ndarray) -> np.ndarray:
        """The linear model matrix of derived rows, columns in `names` order."""
        if not len(derived):  # scikit-learn refuses zero rows (an empty chunk when scoring)
            return np.empty((0, len(self.names)))
        # Our derived matrix is float64 with NaN only where imputation expects it: the
        # finiteness scans are skipped.
        with _numpy_output(), config_context(assume_finite=True):
            first = _apply(self.pipeline.named_steps["impute_encode"], derived)
            matrix = _apply(self.pipeline.named_steps["scale_expand"], first)
        return matrix[:, self.order]


def _apply(columns: ColumnTransformer, X: np.ndarray) -> np.ndarray:
    """What the fitted ``columns.transform(X)`` returns (numpy in and out): each fitted
    transformer on its columns, side by side.

    ColumnTransformer.transform's own per-call dispatch (parallel machinery, dataframe checks)
    cost more than all its transformers together on one row (REST scoring); a test checks that
    this gives the same matrix.
    """
    blocks = [X[:, selected] if isinstance(step, str) else step.transform(X[:, selected])
              for _, step, selected in columns.transformers_
              if len(selected) and not (isinstance(step, str) and step == "drop")]
    return np.hstack(blocks)


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
        A numeric feature never observed at fit is left out.
    splines
        ``kind="linear"`` only: replace a few key continuous features (`SPLINE_FEATURES`) by
        cubic B-spline terms (``<feature>_spline_<k>``) with knots at training quantiles.

    Attributes
    ----------
    feature_names_out_ : list of str
        Output column names, in output order.
    category_levels_ : dict
        Category levels seen at fit, per categorical feature, in contract order.
    derive_ : DerivedFeatures
        The fitted derivation step (tumour-burden scaling per diagnosis).
    design_ : object
        ``kind="linear"``: the fitted scikit-learn steps (``design_.pipeline``); None for trees.

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
        derive = DerivedFeatures().fit(X)
        with _numpy_output():  # DerivedFeatures is a scikit-learn transformer too
            derived = derive.transform(X)
        levels = {}
        for name in CATEGORICAL_FEATURES:
            seen = set(np.unique(derived[:, _POSITION[name]]).tolist())
            levels[name] = tuple(level for code, level in enumerate(CATEGORY_LEVELS[name])
                                 if code in seen)
        design = None
        if self.kind == "linear":
            column = {n: derived[:, _POSITION[n]] for n in _NUMERIC}
            # A feature never observed in training carries nothing to learn: left out.
            numeric = [n for n in _NUMERIC if not np.isnan(column[n]).all()]
            knots = {}
            if self.splines:
                for name in (n for n in SPLINE_FEATURES if n in numeric):
                    found = _knots(column[name])
                    if found is not None:
                        knots[name] = found
            design = _LinearDesign(numeric, [n for n in numeric if np.isnan(column[n]).any()],
                                   knots, _codes_of(levels)).fit(derived)
        self._set_fitted(derive, levels, design)
        return self

    def _set_fitted(self, derive: DerivedFeatures, levels: dict[str, tuple[str, ...]],
                    design: _LinearDesign | None) -> None:
        self.derive_ = derive
        self.category_levels_ = levels
        self.design_ = design
        # Contract code -> output code (-1: unseen) per categorical, for native categoricals.
        self.level_maps_ = {}
        for name in CATEGORICAL_FEATURES:
            seen = np.array([level in levels[name] for level in CATEGORY_LEVELS[name]])
            self.level_maps_[name] = np.where(seen, np.cumsum(seen) - 1, -1)
        self.feature_names_out_ = (list(DERIVED_FEATURES) if design is None
                                   else list(design.names))

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
        with _numpy_output():
            derived = self.derive_.transform(X)
        if self.design_ is not None:
            return pd.DataFrame(self.design_.transform(derived), index=X.index,
                                columns=self.feature_names_out_, copy=False)
        columns: dict[str, object] = {name: derived[:, j] for j, name in enumerate(_NUMERIC)}
        for name in CATEGORICAL_FEATURES:
            code = derived[:, _POSITION[name]]
            known = ~np.isnan(code)
            codes = np.full(len(code), -1, dtype=np.int64)
            codes[known] = self.level_maps_[name][code[known].astype(np.intp)]
            # xgboost cannot take a categorical without levels; a feature with none seen at
            # fit keeps the contract levels and is all missing.
            levels = self.category_levels_[name] or CATEGORY_LEVELS[name]
            columns[name] = pd.Categorical.from_codes(
                codes, dtype=pd.CategoricalDtype(list(levels)))
        return pd.DataFrame(columns, index=X.index)

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
            "burden_mean": _json_floats(self.derive_.burden_mean_),
            "burden_sd": _json_floats(self.derive_.burden_sd_),
            "category_levels": {k: list(v) for k, v in self.category_levels_.items()},
        }
        if self.design_ is not None:
            state.update(self.design_.parameters())
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
            derive = DerivedFeatures()
            derive.burden_mean_ = _array(state["burden_mean"], len(DIAGNOSES) + 1)
            derive.burden_sd_ = _array(state["burden_sd"], len(DIAGNOSES) + 1)
            saved = state["category_levels"]
            if set(saved) != set(CATEGORICAL_FEATURES):
                raise ValueError("the categorical features differ from this crsrisk's")
            levels = {}
            for name in CATEGORICAL_FEATURES:
                kept = tuple(saved[name])
                if kept != tuple(x for x in CATEGORY_LEVELS[name] if x in kept):
                    raise ValueError(f"unknown or unordered levels of {name}")
                levels[name] = kept
            design = _restore_linear(state, levels) if builder.kind == "linear" else None
            builder._set_fitted(derive, levels, design)
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"not a crsrisk feature builder state ({detail})") from exc
        return builder


def _codes_of(levels: dict[str, tuple[str, ...]]) -> dict[str, list[int]]:
    """Contract codes of the seen levels of each categorical."""
    return {n: [CATEGORY_LEVELS[n].index(level) for level in kept] for n, kept in levels.items()}


def _restore_linear(state: dict, levels: dict[str, tuple[str, ...]]) -> _LinearDesign:
    """The fitted linear steps that `_LinearDesign.parameters` described, checked."""
    numeric = [str(n) for n in state["numeric"]]
    if not set(numeric) <= set(_NUMERIC):
        raise ValueError("unknown numeric feature")
    numeric = [n for n in _NUMERIC if n in numeric]
    medians = {n: float(state["medians"][n]) for n in numeric}
    indicators = [str(n) for n in state["indicators"]]
    knots = {str(k): _array(v) for k, v in state["spline_knots"].items()}
    scales = {str(k): (float(m), float(sd)) for k, (m, sd) in state["scales"].items()}
    if not (set(indicators) | set(scales) | set(knots) <= set(numeric)
            and set(knots) <= set(SPLINE_FEATURES)):
        raise ValueError("indicators, knots or scales of features it does not use")
    numbers = [*medians.values(), *np.ravel(list(scales.values())),
               *(x for k in knots.values() for x in k)]
    if not np.isfinite(numbers).all():
        raise ValueError("non-finite medians, scales or knots")
    if any(k.size != SPLINE_KNOTS or np.any(np.diff(k) <= 0) for k in knots.values()):
        raise ValueError(f"spline knots must be {SPLINE_KNOTS} increasing values")
    design = _LinearDesign(numeric, [n for n in numeric if n in indicators], knots,
                           _codes_of(levels))
    if set(scales) != set(design.scaled):
        raise ValueError("scales of other features than the standardised ones")
    return design.restore(medians, scales, _codes_of(levels))
