"""Logistic recalibration (intercept and slope) of a fitted model for a new cohort.

The fit and the recalibrated calibrator live with all calibration in crsrisk.modeling.calibration;
this module runs it on a cohort, cross-validates it and records what it did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from crsrisk.evaluation.metrics import point_metrics
from crsrisk.evaluation.validation import MIN_EVENTS, EvaluationError
from crsrisk.modeling.calibration import (
    Recalibrated,
    fit_logistic_recalibration,
    logistic_recalibration,
)
from crsrisk.modeling.riskmodel import RiskModel

__all__ = ["RECALIBRATION_METRICS", "Recalibration", "recalibrate"]

RECALIBRATION_METRICS = ("calibration_intercept", "calibration_slope", "log_loss", "brier",
                         "ece", "auroc")


@dataclass
class Recalibration:
    """A model recalibrated for a new cohort, with calibration before and after."""

    model: RiskModel
    intercept: float
    slope: float
    before: dict[str, float]  # the original model on the whole cohort
    after_cv: dict[str, float]  # cross-validated: each row recalibrated by a fit without it
    after_apparent: dict[str, float]  # the final fit on the rows it was fitted on
    folds: int
    cohort: str


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def recalibrate(
    model: RiskModel,
    valid: pd.DataFrame,
    severe: pd.Series,
    *,
    cohort: str,
    folds: int = 5,
    seed: int = 0,
) -> Recalibration:
    """Refit the calibration intercept and slope of ``model`` on a new cohort.

    Logistic recalibration: ``logit(new risk) = a + b * logit(current risk)``, fitted by
    maximum likelihood on all rows. "After" is also estimated by ``folds``-fold cross-validation
    (each row recalibrated by a fit that did not see it), since the apparent calibration of the
    final fit on its own rows is intercept 0 and slope 1 by construction.

    Parameters
    ----------
    model
        The model to update; its estimator and features are kept, only calibration changes.
    valid, severe
        Validated rows of the new cohort and their outcomes (0/1).
    cohort
        A name for the cohort (site or file), recorded in the new model.
    folds, seed
        The cross-validation of "after".

    Returns
    -------
    Recalibration
    """
    y = severe.astype(int).to_numpy()
    events = int(y.sum())
    rarer = min(events, len(y) - events)
    if rarer < max(MIN_EVENTS, folds):
        raise EvaluationError(
            f"The cohort has only {rarer} rows of its rarer outcome: recalibration needs at "
            f"least {max(MIN_EVENTS, folds)} events and non-events; add rows."
        )
    z = _logit(model.risk(valid))
    intercept, slope = fit_logistic_recalibration(z, y)
    if not slope > 0:
        raise EvaluationError(
            f"Recalibration on {cohort} gives a slope of {slope:.3f}: the model does not rank "
            "patients at this site; do not recalibrate it, retrain or do not use it there."
        )
    oof = np.empty(len(y))
    for train_pos, test_pos in StratifiedKFold(folds, shuffle=True,
                                              random_state=seed).split(z, y):
        a, b = fit_logistic_recalibration(z[train_pos], y[train_pos])
        oof[test_pos] = logistic_recalibration(z[test_pos], a, b)

    def pick(metrics: dict[str, float]) -> dict[str, float]:
        return {k: float(metrics[k]) for k in RECALIBRATION_METRICS}

    before = pick(point_metrics(y, model.risk(valid)))
    after_cv = pick(point_metrics(y, oof))
    after_apparent = pick(point_metrics(y, logistic_recalibration(z, intercept, slope)))
    calibrator = Recalibrated(model.calibrator, intercept, slope, cohort)
    info = {
        **model.info,
        "candidate": f"{model.info.get('candidate', model.kind)}+recalibrated",
        "calibration": calibrator.method,
        "recalibrated_from": f"{model.name}/{model.version}",
        "recalibration_cohort": cohort,
        "recalibration_intercept": intercept,
        "recalibration_slope": slope,
    }
    new = dataclasses.replace(model, calibrator=calibrator, info=info)
    return Recalibration(new, intercept, slope, before, after_cv, after_apparent, folds, cohort)
