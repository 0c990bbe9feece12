"""The report's figures: ROC curves, calibration, decision curve; each encoded as a PNG.

Figures drawn from counts follow the same privacy rules as the tables
(`crsrisk.evaluation.privacy`): neighbouring calibration bins are pooled until each holds
``min_cell`` events and non-events, and histogram bars of fewer than ``min_cell`` patients are
not drawn.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import binomtest  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from crsrisk.evaluation.metrics import TREAT_ALL, TREAT_NONE  # noqa: E402
from crsrisk.evaluation.privacy import MIN_CELL, pooled_bins, small  # noqa: E402
from crsrisk.evaluation.validation import Evaluation  # noqa: E402
from crsrisk.report.data import SCORE_NAMES  # noqa: E402

__all__ = [
    "png",
    "wilson_interval",
    "roc_figure",
    "calibration_figure",
    "decision_figure",
]

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def png(figure: Figure) -> bytes:
    """``figure`` as PNG bytes (100 dpi); the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def wilson_interval(events: np.ndarray, n: np.ndarray,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score intervals of ``events / n``, one per pair (scipy's `binomtest`)."""
    bounds = [binomtest(int(k), int(m)).proportion_ci(confidence_level=level, method="wilson")
              for k, m in zip(events, n, strict=True)]
    return (np.array([b.low for b in bounds], dtype=float),
            np.array([b.high for b in bounds], dtype=float))


def roc_figure(evaluation: Evaluation, model_label: str) -> Figure:
    """ROC curves of the model and the cross-fitted published scores."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, p in (("model", evaluation.risk), *evaluation.comparator_risk.items()):
        fpr, tpr, _ = roc_curve(evaluation.y, p)
        table = evaluation.metrics if name == "model" else evaluation.comparators[name]
        auroc = table.set_index("metric").loc["auroc"]
        label = model_label if name == "model" else SCORE_NAMES.get(name, name)
        ax.plot(fpr, tpr, lw=2 if name == "model" else 1.2,
                label=f"{label}: {auroc['estimate']:.3f} [{auroc['lower']:.3f}, "
                      f"{auroc['upper']:.3f}]")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (AUROC, 95% CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def calibration_figure(evaluation: Evaluation, min_cell: int = MIN_CELL) -> Figure:
    """Observed against predicted risk in 10 quantile bins (95% Wilson intervals), histogram.

    Neighbouring bins are pooled until each holds ``min_cell`` events and non-events
    (`crsrisk.evaluation.privacy.pooled_bins`); histogram bars of fewer than ``min_cell``
    patients are not drawn.
    """
    table = pooled_bins(evaluation.calibration, min_cell)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [4, 1]})
    lower, upper = wilson_interval(table["events"].to_numpy(), table["n"].to_numpy())
    observed = table["observed"].to_numpy(float)
    pooled = len(table) < len(evaluation.calibration)
    ax.errorbar(table["mean_predicted"], observed, yerr=[observed - lower, upper - observed],
                fmt="o-", capsize=3,
                label=(f"model (10 quantile bins, pooled to >= {min_cell} events)" if pooled
                       else "model (10 quantile bins)"))
    top = float(max(np.max(upper), table["mean_predicted"].max())) * 1.05
    ax.plot([0, top], [0, top], ls=":", color="grey", label="ideal")
    slope = evaluation.metric("calibration_slope")
    intercept = evaluation.metric("calibration_intercept")
    ax.set(ylabel="observed severe CRS rate",
           title=f"Calibration: slope {slope['estimate']:.2f}, "
                 f"intercept {intercept['estimate']:+.2f}")
    ax.legend(fontsize=8)
    counts, edges = np.histogram(evaluation.risk, bins=50, range=(0, top))
    counts = np.where([small(c, min_cell) for c in counts], 0, counts)
    hist.stairs(counts, edges, fill=True, color="grey")
    hist.set(xlabel="predicted risk", ylabel="patients")
    fig.tight_layout()
    return fig


def decision_figure(evaluation: Evaluation, model_label: str) -> Figure:
    """Net benefit of the model, the published scores, treat all and treat none."""
    curve = evaluation.decision
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for strategy, part in curve.groupby("strategy", sort=False):
        if strategy == TREAT_NONE:
            style = {"color": "black", "lw": 1}
        elif strategy == TREAT_ALL:
            style = {"color": "grey", "lw": 1, "ls": "--"}
        elif strategy == "model":
            style = {"lw": 2.2}
        else:
            style = {"lw": 1.2}
        label = model_label if strategy == "model" else SCORE_NAMES.get(strategy, strategy)
        ax.plot(part["threshold"], part["net_benefit"], label=label, **style)
    prevalence = float(evaluation.y.mean())
    ax.set_ylim(-0.2 * prevalence, prevalence * 1.1)
    ax.set(xlabel="threshold probability (risk at which one would act)",
           ylabel="net benefit", title="Decision curve")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
