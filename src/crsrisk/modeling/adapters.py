"""One adapter per model type: the margin (log-odds), its contributions, and the model as data.

A `RiskModel` holds one of these and never asks which it is:

- `XGBoostAdapter`: tree features and an XGBoost booster; contributions by TreeSHAP (the
  booster's ``pred_contribs``); saved as the booster's UBJSON and the features as JSON.
- `LogisticAdapter`: linear features and the coefficients of a penalised logistic regression;
  contributions are the exact linear terms; saved as JSON.
- `ScoreAdapter`: a published score (m-EASIX, EASIX, CAR-HEMATOTOX) turned into log-odds by a
  logistic regression; its single driver is the score itself; saved as JSON.

Every adapter writes ``state()`` (JSON-able) and ``files()`` (name -> bytes, only the booster
today) and is rebuilt by `adapter_from_data`; nothing is pickled. For per-patient intervals
(crsrisk.modeling.uncertainty) each adapter also refits its estimator on bootstrap resamples
(``refits``) and says how the spread of its refits is kept (``spread_form``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from crsrisk.explain.drivers import (
    LINEAR_METHOD,
    SCORE_METHOD,
    TREE_METHOD,
    CohortTerms,
    Contributions,
    contributions_of,
    tree_shap_values,
)
from crsrisk.features.builder import FeatureBuilder
from crsrisk.features.published import PUBLISHED_SCORES, ScoreComparator
from crsrisk.modeling.candidates import ParsimoniousFeatures

__all__ = [
    "BOOSTER_FILE",
    "ModelAdapter",
    "Refit",
    "XGBoostAdapter",
    "LogisticAdapter",
    "ScoreAdapter",
    "adapter_files",
    "SMALL_FRAME",
    "shared_xgboost_inputs",
    "xgboost_input",
    "xgboost_matrix",
    "adapter_from_data",
    "fitted_adapter",
]

BOOSTER_FILE = "booster.ubj"
# The emulator of an XGBoost model's spread (see crsrisk.modeling.uncertainty).
_EMULATOR = dict(max_depth=3, n_estimators=40, learning_rate=0.1, subsample=0.8)


@dataclass(frozen=True)
class Refit:
    """One bootstrap refit: its margin on every development row and, for a linear model, its
    intercept and coefficients."""

    margin: np.ndarray
    coefficients: np.ndarray | None = None


class ModelAdapter(Protocol):
    """What a RiskModel needs of a fitted model type."""

    kind: str  # a name for display: "xgboost", "logistic", or the published score's name

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        """The model matrix of validated contract rows."""

    def margin(self, design: pd.DataFrame) -> np.ndarray:
        """Log-odds before calibration, one per row."""

    def contributions(self, design: pd.DataFrame) -> Contributions:
        """Per driver group contributions to the margin, for drivers in words."""

    def cohort_terms(self, design: pd.DataFrame) -> CohortTerms:
        """Contributions over a cohort, for global explanations."""

    def state(self) -> dict:
        """The fitted model as JSON-able data."""

    def files(self) -> dict[str, bytes]:
        """Binary parts of the fitted model (file name -> content), saved beside the JSON."""

    def refits(self, estimator: object, design: pd.DataFrame, y: np.ndarray,
               resamples: list[np.ndarray]) -> list[Refit]:
        """Fit a clone of ``estimator`` (unfitted, this model type, on this design) on each
        resample's rows of ``design`` and ``y``; each refit's margins on every row."""

    def spread_form(self, design: pd.DataFrame, margin: np.ndarray, log_spread: np.ndarray,
                    refits: list[Refit], seed: int) -> dict:
        """How a new row's spread across the refits is predicted: ``method`` and its data, as
        fields of `crsrisk.modeling.uncertainty.BootstrapEnsemble`."""


def xgboost_matrix(design: pd.DataFrame, names: list[str] | None = None) -> np.ndarray:
    """``design`` as XGBoost reads it: float64, a categorical column as its category codes and
    a missing value as NaN, columns in the order ``names`` (default: as they are).

    XGBoost's own reading of a DataFrame costs some 10-30 ms per call whatever the number of
    rows (most of a one-patient request); this array gives the same predictions, as the
    categories are the model's fixed levels (`FeatureBuilder`). See `xgboost_input`.
    """
    if names is not None and list(design.columns) != names:
        design = design[names]
    out = np.empty(design.shape, dtype="float64")
    for j, (_, col) in enumerate(design.items()):
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy()
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = col.to_numpy(dtype="float64", na_value=np.nan)
    return out


# Up to this many rows XGBoost gets `xgboost_matrix`; larger frames it reads itself (without a
# copy, its per-call cost then negligible), as batch scoring always did.
SMALL_FRAME = 2_000


# Designs converted in the current `shared_xgboost_inputs` block: (id, names) -> (design, matrix).
_SHARED_INPUTS: ContextVar[dict | None] = ContextVar("crsrisk_xgboost_inputs", default=None)


@contextlib.contextmanager
def shared_xgboost_inputs() -> Iterator[None]:
    """Within the block, `xgboost_input` converts each design frame once.

    Scoring hands one design, unchanged, to the booster, its SHAP values and the interval
    emulator: for a one-patient request the conversion costs more than each prediction.
    The block must not change a design it has handed over.
    """
    token = _SHARED_INPUTS.set({})
    try:
        yield
    finally:
        _SHARED_INPUTS.reset(token)


def xgboost_input(design: pd.DataFrame, names: list[str]) -> pd.DataFrame | np.ndarray:
    """What to hand XGBoost for ``design``: the code matrix for a few rows, else the frame."""
    if len(design) > SMALL_FRAME:
        return design if list(design.columns) == names else design[names]
    shared = _SHARED_INPUTS.get()
    if shared is None:
        return xgboost_matrix(design, names)
    key = (id(design), tuple(names))
    if key not in shared:  # the design is kept with its matrix, so its id is not reused
        shared[key] = (design, xgboost_matrix(design, names))
    return shared[key][1]


class XGBoostAdapter:
    """Gradient-boosted trees: `FeatureBuilder` (tree) features into an XGBoost booster."""

    kind = "xgboost"
    FILES: ClassVar[tuple[str, ...]] = (BOOSTER_FILE,)

    def __init__(self, features: FeatureBuilder, booster: xgb.Booster) -> None:
        self.features = features
        self.booster = booster

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        return self.features.transform(valid)

    def margin(self, design: pd.DataFrame) -> np.ndarray:
        # In-place prediction skips the DMatrix copy; the margins are identical.
        matrix = xgboost_input(design, self.booster.feature_names)
        return self.booster.inplace_predict(matrix, predict_type="margin")

    def contributions(self, design: pd.DataFrame) -> Contributions:
        booster = self.booster
        data = xgboost_input(design, booster.feature_names)
        if isinstance(data, pd.DataFrame):
            matrix = xgb.DMatrix(data, enable_categorical=True)
        else:
            matrix = xgb.DMatrix(data, feature_names=booster.feature_names,
                                 feature_types=booster.feature_types, enable_categorical=True)
        raw = booster.predict(matrix, pred_contribs=True)
        return contributions_of(raw[:, :-1], list(booster.feature_names), raw[:, -1],
                                design.index)

    def cohort_terms(self, design: pd.DataFrame) -> CohortTerms:
        values, base = tree_shap_values(self.booster, design)
        return CohortTerms(values, list(design.columns), base, TREE_METHOD)

    def state(self) -> dict:
        return {"features": self.features.to_dict()}

    def files(self) -> dict[str, bytes]:
        return {BOOSTER_FILE: bytes(self.booster.save_raw("ubj"))}

    def refits(self, estimator: xgb.XGBClassifier, design: pd.DataFrame, y: np.ndarray,
               resamples: list[np.ndarray]) -> list[Refit]:
        # The estimator's threads go to refits side by side, one thread each: a boosting
        # round on a few thousand rows is too short to keep several threads busy, so this is
        # faster than one refit at a time on every thread. Each refit is seeded: the same
        # refits on any number of workers.
        workers = max(1, int(estimator.get_params().get("n_jobs") or 1))
        single = clone(estimator).set_params(n_jobs=1)

        def refit(rows: np.ndarray) -> Refit:
            fitted = clone(single).fit(design.iloc[rows], y[rows])
            booster = fitted.get_booster()
            return Refit(booster.inplace_predict(design, predict_type="margin"))

        if workers == 1:
            return [refit(rows) for rows in resamples]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(refit, resamples))

    def spread_form(self, design: pd.DataFrame, margin: np.ndarray, log_spread: np.ndarray,
                    refits: list[Refit], seed: int) -> dict:
        emulator = xgb.XGBRegressor(**_EMULATOR, tree_method="hist", enable_categorical=True,
                                    max_cat_to_onehot=1, n_jobs=2, random_state=seed)
        emulator.fit(design, log_spread)
        return {"method": "emulator", "emulator": bytes(emulator.get_booster().save_raw("ubj"))}

    @classmethod
    def from_data(cls, state: dict, files: dict[str, bytes]) -> XGBoostAdapter:
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(files[BOOSTER_FILE]))
        except xgb.core.XGBoostError as exc:
            raise ValueError(f"{BOOSTER_FILE} is not an XGBoost model") from exc
        features = _features(state, "tree")
        if booster.feature_names != list(features.feature_names_out_):
            raise ValueError(f"the features of {BOOSTER_FILE} are not those of the model's "
                             "feature builder")
        # Training fixes the threads for reproducible fits; a prediction is the same on any
        # number of threads, so a loaded model scores on every core of this machine.
        booster.set_param({"nthread": os.cpu_count() or 1})
        return cls(features, booster)


class LogisticAdapter:
    """Penalised logistic regression on `FeatureBuilder` (linear) features."""

    kind = "logistic"
    FILES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, features: FeatureBuilder, coef: np.ndarray, intercept: float) -> None:
        self.features = features
        self.coef = np.asarray(coef, dtype="float64").ravel()
        self.intercept = float(intercept)
        names = features.get_feature_names_out()
        if self.coef.size != len(names):
            raise ValueError(f"{self.coef.size} coefficients for {len(names)} features")
        if not (np.isfinite(self.coef).all() and np.isfinite(self.intercept)):
            raise ValueError("the coefficients must be finite")

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        return self.features.transform(valid)

    def margin(self, design: pd.DataFrame) -> np.ndarray:
        # Added term by term in a fixed order, not by BLAS (scikit-learn's decision_function):
        # BLAS blocks the product by the number of rows, so a row's margin would change in its
        # last bits with the chunk it is scored in.
        x = np.asarray(design, dtype="float64")
        margin = np.full(len(x), float(self.intercept))
        for j in range(x.shape[1]):
            margin += x[:, j] * self.coef[j]
        return margin

    def _terms(self, design: pd.DataFrame) -> np.ndarray:
        return np.asarray(design, dtype="float64") * self.coef

    def contributions(self, design: pd.DataFrame) -> Contributions:
        base = np.full(len(design), self.intercept)
        return contributions_of(self._terms(design), list(design.columns), base, design.index)

    def cohort_terms(self, design: pd.DataFrame) -> CohortTerms:
        terms = self._terms(design)
        centre = terms.mean(axis=0)
        return CohortTerms(terms - centre, list(design.columns),
                           float(self.intercept + centre.sum()), LINEAR_METHOD)

    def state(self) -> dict:
        return {"features": self.features.to_dict(), "coef": self.coef.tolist(),
                "intercept": self.intercept}

    def files(self) -> dict[str, bytes]:
        return {}

    def refits(self, estimator: object, design: pd.DataFrame, y: np.ndarray,
               resamples: list[np.ndarray]) -> list[Refit]:
        return _sequential_refits(estimator, design, y, resamples, coefficients=True)

    def spread_form(self, design: pd.DataFrame, margin: np.ndarray, log_spread: np.ndarray,
                    refits: list[Refit], seed: int) -> dict:
        # Exact for the refits: the covariance of their (intercept, coefficients).
        coefficients = np.array([r.coefficients for r in refits])
        return {"method": "linear", "columns": list(design.columns),
                "covariance": np.cov(coefficients, rowvar=False)}

    @classmethod
    def from_data(cls, state: dict, files: dict[str, bytes]) -> LogisticAdapter:
        return cls(_features(state, "linear"), np.asarray(state["coef"], dtype="float64"),
                   float(state["intercept"]))


class ScoreAdapter:
    """A published score as a model: its `ScoreComparator` log-odds; one driver, the score."""

    FILES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, comparator: ScoreComparator) -> None:
        self.comparator = comparator
        self.kind = comparator.score

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        return valid  # the comparator computes its score from the contract columns

    def margin(self, design: pd.DataFrame) -> np.ndarray:
        return self.comparator.decision_function(design)

    def contributions(self, design: pd.DataFrame) -> Contributions:
        margin = self.margin(design)
        return contributions_of(margin.reshape(-1, 1), [self.kind], np.zeros(len(margin)),
                                design.index)

    def cohort_terms(self, design: pd.DataFrame) -> CohortTerms:
        margin = self.margin(design)
        data = pd.DataFrame({self.kind: margin}, index=design.index)
        return CohortTerms((margin - margin.mean()).reshape(-1, 1), [self.kind],
                           float(margin.mean()), SCORE_METHOD, data)

    def state(self) -> dict:
        return {"comparator": self.comparator.to_dict()}

    def files(self) -> dict[str, bytes]:
        return {}

    def refits(self, estimator: object, design: pd.DataFrame, y: np.ndarray,
               resamples: list[np.ndarray]) -> list[Refit]:
        return _sequential_refits(estimator, design, y, resamples, coefficients=False)

    def spread_form(self, design: pd.DataFrame, margin: np.ndarray, log_spread: np.ndarray,
                    refits: list[Refit], seed: int) -> dict:
        # Refits only move the score's intercept and slope: log spread is a quadratic in m.
        poly = np.polyfit(margin, log_spread, 2)[::-1]
        return {"method": "margin", "polynomial": [float(v) for v in poly]}

    @classmethod
    def from_data(cls, state: dict, files: dict[str, bytes]) -> ScoreAdapter:
        return cls(ScoreComparator.from_dict(state["comparator"]))


def _sequential_refits(estimator: object, design: pd.DataFrame, y: np.ndarray,
                       resamples: list[np.ndarray], coefficients: bool) -> list[Refit]:
    """Refits of a scikit-learn style estimator (``decision_function`` gives its margin)."""
    out = []
    for rows in resamples:
        fitted = clone(estimator).fit(design.iloc[rows], y[rows])
        coef = (np.r_[fitted.intercept_.ravel(), fitted.coef_.ravel()] if coefficients
                else None)
        out.append(Refit(np.asarray(fitted.decision_function(design), dtype=float), coef))
    return out


def _features(state: dict, kind: str) -> FeatureBuilder:
    saved = state["features"]
    builder = ParsimoniousFeatures if "parsimonious" in saved else FeatureBuilder
    features = builder.from_dict(saved)
    if features.kind != kind:
        raise ValueError(f"{kind} features expected, {features.kind} found")
    return features


_ADAPTERS: dict[str, type] = {
    "xgboost": XGBoostAdapter,
    "logistic": LogisticAdapter,
    **{score: ScoreAdapter for score in PUBLISHED_SCORES},
}


def adapter_files(kind: str) -> tuple[str, ...]:
    """The binary files a saved model of ``kind`` has besides its JSON.

    Raises
    ------
    ValueError
        ``kind`` is not a model type of this crsrisk.
    """
    if kind not in _ADAPTERS:
        raise ValueError(f"unknown model type {kind!r}")
    return _ADAPTERS[kind].FILES


def adapter_from_data(kind: str, state: dict, files: dict[str, bytes]) -> ModelAdapter:
    """The adapter that ``state()`` and ``files()`` described.

    Raises
    ------
    ValueError, KeyError, TypeError
        The data does not describe a model of ``kind`` of this crsrisk.
    """
    adapter = _ADAPTERS[kind].from_data(state, files)
    if adapter.kind != kind:
        raise ValueError(f"the data is that of a {adapter.kind} model, not {kind}")
    return adapter


def fitted_adapter(candidate: str, estimator: Pipeline | ScoreComparator) -> ModelAdapter:
    """The adapter of a candidate as training fits it (see crsrisk.modeling.train).

    Parameters
    ----------
    candidate
        ``"xgboost"``, ``"logistic"`` or a published score's name.
    estimator
        The fitted estimator: a Pipeline of ``features`` and ``model`` steps, or, for a
        published score, its fitted `ScoreComparator`.
    """
    if candidate in PUBLISHED_SCORES:
        return ScoreAdapter(estimator)
    features, model = estimator.named_steps["features"], estimator.named_steps["model"]
    if candidate == "xgboost":
        return XGBoostAdapter(features, model.get_booster())
    if candidate == "logistic":
        return LogisticAdapter(features, model.coef_, float(model.intercept_[0]))
    raise ValueError(f"unknown candidate {candidate!r}")
