"""Performance of predicted probabilities of severe CRS: discrimination, calibration, utility.

Pure functions of outcomes ``y`` (0/1) and predicted probabilities ``p``: point metrics,
bootstrap intervals, net benefit and decision curves, calibration tables and subgroup tables,
as reported under TRIPOD+AI. No I/O, no tracking, no plotting.

- `point`: the metrics on all patients (scikit-learn for AUROC, AUPRC, Brier and log loss).
- `weighted`: every metric of many weightings of the patients at once; the point metrics use it
  with unit weights for calibration, ECE and thresholds, the bootstrap with resample counts.
- `bootstrap`: seeded resamples and intervals that contain their estimate.
- `subgroups`: performance by level of a grouping column; age bands.
- `inputs`: checks that give one sentence naming the first bad value.

Conventions shared by every function:

- ``y``, ``p`` may be lists, numpy arrays or pandas Series (nullable dtypes included); they are
  matched by position, never by index.
- A patient is test-positive at threshold ``t`` when ``p >= t``.
- A metric that is undefined on the data given (AUROC with one outcome class, PPV with no
  test-positives, ...) is NaN, never an exception; `undefined_reason` says why in words.
- Expected calibration error and calibration tables use equal-frequency bins: the bin edges are
  the ``k / n_bins`` quantiles of ``p`` (linear interpolation, as ``numpy.quantile``), each bin is
  right-closed, and tied predictions always share a bin, so bins can be unequal or empty when
  ``p`` has ties. Quantile bins keep every bin populated when predictions crowd near the low
  prevalence of severe CRS, where equal-width bins leave most bins empty.
"""

from crsrisk.evaluation.metrics.bootstrap import INTERVAL_METHOD, bootstrap_metrics
from crsrisk.evaluation.metrics.point import (
    TREAT_ALL,
    TREAT_NONE,
    calibration_slope_intercept,
    calibration_table,
    decision_curve,
    expected_calibration_error,
    net_benefit,
    point_metrics,
)
from crsrisk.evaluation.metrics.reasons import undefined_reason
from crsrisk.evaluation.metrics.subgroups import age_band, subgroup_table

__all__ = [
    "INTERVAL_METHOD",
    "TREAT_ALL",
    "TREAT_NONE",
    "age_band",
    "bootstrap_metrics",
    "calibration_slope_intercept",
    "calibration_table",
    "decision_curve",
    "expected_calibration_error",
    "net_benefit",
    "point_metrics",
    "subgroup_table",
    "undefined_reason",
]
