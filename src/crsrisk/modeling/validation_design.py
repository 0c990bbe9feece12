"""Internal validation by cohort size: bootstrap optimism of the whole procedure, or a split.

A small cohort loses too much by holding rows out: the model is developed on every row and its
optimism is estimated by repeating the whole development procedure (search, calibration and
selection between candidates) on bootstrap resamples (Harrell's optimism bootstrap, as in
``rms::validate``; Steyerberg). Each repeat's models are tested on the original rows; the mean
gap between a repeat's performance on its own resample and on the original rows is subtracted
from the final model's apparent performance. Because each repeat selects its own candidate, the
figure for the selected model includes the optimism of the selection itself.

Internal-external cross-validation (`internal_external`, run by training through
`internal_external_design`) leaves out one site or one infusion year at a time, develops the
model on the rest with the same procedure and tests it on the group left out: how the model
travels to a centre or a period it has not seen (Steyerberg and Harrell 2016).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import roc_auc_score

from crsrisk.evaluation.metrics import calibration_slope_intercept

__all__ = [
    "OPTIMISM_METRICS",
    "SELECTED",
    "Developed",
    "Optimism",
    "bootstrap_design",
    "performance",
    "bootstrap_optimism",
    "internal_external",
    "InternalExternal",
    "internal_external_design",
]

OPTIMISM_METRICS = ("auroc", "calibration_slope", "calibration_intercept", "brier")
SELECTED = "selected"  # the row of the procedure: whichever candidate each repeat selected


@dataclass
class Developed:
    """What the development procedure returns: a risk function per candidate and the choice."""

    predict: dict[str, Callable[[pd.DataFrame], np.ndarray]]
    selected: str


@dataclass
class Optimism:
    """Apparent, optimism and corrected figures per candidate (and the procedure, `SELECTED`)."""

    table: pd.DataFrame  # candidate, metric, apparent, optimism, corrected, repeats
    repeats: int
    seconds: float
    selections: dict[str, int] = field(default_factory=dict)  # candidate -> times selected

    def corrected(self, candidate: str = SELECTED) -> dict[str, float]:
        rows = self.table[self.table["candidate"] == candidate]
        return dict(zip(rows["metric"], rows["corrected"], strict=True))


def bootstrap_design(smaller_class: int, threshold: int, design: str) -> bool:
    """Whether to develop on all rows with bootstrap validation (``design`` "auto": below the
    threshold of events in the smaller class)."""
    if design == "auto":
        return smaller_class < threshold
    return design == "bootstrap"


def performance(y: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    """AUROC, calibration slope and intercept (calibration-in-the-large) and Brier score."""
    y = np.asarray(y, dtype=int)
    if y.min() == y.max():
        return {m: float("nan") for m in OPTIMISM_METRICS}
    slope, intercept = calibration_slope_intercept(y, risk)
    return {
        "auroc": float(roc_auc_score(y, risk)),
        "calibration_slope": float(slope),
        "calibration_intercept": float(intercept),
        "brier": float(np.mean((risk - y) ** 2)),
    }


def _one_repeat(develop, valid: pd.DataFrame, y: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(y), len(y))
    if y[rows].min() == y[rows].max():
        return None
    resample = valid.iloc[rows]
    developed: Developed = develop(resample, y[rows], rows)
    gaps = {}
    for name, predict in developed.predict.items():
        own = performance(y[rows], predict(resample))
        original = performance(y, predict(valid))
        gaps[name] = {m: own[m] - original[m] for m in OPTIMISM_METRICS}
    gaps[SELECTED] = gaps[developed.selected]
    return developed.selected, gaps


def bootstrap_optimism(
    develop: Callable[[pd.DataFrame, np.ndarray, np.ndarray], Developed],
    valid: pd.DataFrame,
    y: np.ndarray,
    apparent: dict[str, dict[str, float]],
    repeats: int,
    seed: int = 0,
    n_jobs: int = 1,
) -> Optimism:
    """Optimism-corrected performance of a development procedure, by the bootstrap.

    Parameters
    ----------
    develop
        The whole procedure: ``develop(rows, y, original_positions)`` fits every candidate on
        ``rows`` (positions tell duplicates of one patient apart, for grouped inner folds) and
        returns a `Developed`.
    valid, y
        The development cohort and its outcomes.
    apparent
        Performance of the final models on ``valid`` itself, per candidate and `SELECTED`.
    repeats
        Bootstrap resamples (a resample with one outcome only is left out of the mean).
    seed, n_jobs
        Reproducibility and parallel repeats.

    Returns
    -------
    Optimism
        Per candidate and for the procedure: apparent, mean optimism, corrected figures.
    """
    start = time.perf_counter()
    y = np.asarray(y, dtype=int)
    seeds = np.random.SeedSequence(seed).generate_state(repeats)
    runs = Parallel(n_jobs=n_jobs)(
        delayed(_one_repeat)(develop, valid, y, int(s)) for s in seeds
    )
    done = [r for r in runs if r is not None]
    selections: dict[str, int] = {}
    for chosen, _ in done:
        selections[chosen] = selections.get(chosen, 0) + 1
    rows = []
    for candidate, figures in apparent.items():
        for metric in OPTIMISM_METRICS:
            gaps = [gap[candidate][metric] for _, gap in done if candidate in gap]
            gaps = [g for g in gaps if np.isfinite(g)]
            optimism = float(np.mean(gaps)) if gaps else float("nan")
            rows.append({"candidate": candidate, "metric": metric,
                         "apparent": figures[metric], "optimism": optimism,
                         "corrected": figures[metric] - optimism, "repeats": len(gaps)})
    return Optimism(pd.DataFrame(rows), len(done), time.perf_counter() - start, selections)


def internal_external(
    develop: Callable[[pd.DataFrame, np.ndarray, np.ndarray], Developed],
    valid: pd.DataFrame,
    y: np.ndarray,
    by: str,
    min_rows: int = 20,
) -> pd.DataFrame:
    """Internal-external cross-validation: develop without one group, test on it.

    Parameters
    ----------
    develop
        The development procedure, as for `bootstrap_optimism`.
    valid, y
        The cohort and its outcomes.
    by
        ``"site"`` or ``"year"`` (of the infusion date).
    min_rows
        Groups with fewer rows, or with one outcome only, are not held out alone (their
        figures would be noise) but stay in every development set.

    Returns
    -------
    pd.DataFrame
        One row per held-out group: rows, events, the selected candidate and its performance.
    """
    y = np.asarray(y, dtype=int)
    groups = _groups(valid, by)
    out = []
    for group in _held_out(groups, y, min_rows):
        held = groups == group
        keep = np.flatnonzero(~held)
        developed = develop(valid.iloc[keep], y[keep], keep)
        risk = developed.predict[developed.selected](valid.iloc[np.flatnonzero(held)])
        out.append({by: group, "rows": int(held.sum()), "events": int(y[held].sum()),
                    "selected": developed.selected, **performance(y[held], risk)})
    return pd.DataFrame(out)


def _groups(valid: pd.DataFrame, by: str) -> np.ndarray:
    if by == "site":
        return valid["site"].astype("str").fillna("missing").to_numpy()
    if by == "year":
        return pd.to_datetime(valid["infusion_date"]).dt.year.astype("str").to_numpy()
    raise ValueError(f"by must be 'site' or 'year', got {by!r}")


def _held_out(groups: np.ndarray, y: np.ndarray, min_rows: int) -> list[str]:
    """Groups large enough to be held out alone: ``min_rows`` rows and both outcomes."""
    return [g for g in sorted(set(groups))
            if (groups == g).sum() >= min_rows and y[groups == g].min() < y[groups == g].max()]


@dataclass
class InternalExternal:
    """Internal-external cross-validation as training ran it.

    ``tables`` holds one `internal_external` table per grouping run (``"site"``, ``"year"``);
    ``notes`` says, per grouping, why it was not run or which groups were not held out alone.
    """

    tables: dict[str, pd.DataFrame]
    notes: dict[str, str]
    seconds: float
    min_rows: int


def internal_external_design(
    develop: Callable[[pd.DataFrame, np.ndarray, np.ndarray], Developed],
    valid: pd.DataFrame,
    y: np.ndarray,
    setting: str,
    design: str,
    min_rows: int = 20,
) -> InternalExternal | None:
    """Internal-external cross-validation by site and by infusion year, as configured.

    Parameters
    ----------
    develop
        The whole development procedure, as for `bootstrap_optimism`.
    valid, y
        The development rows and their outcomes.
    setting
        ``validation.internal_external``: ``"auto"`` (site and year, under the bootstrap design
        only: on a large cohort each development is costly and a test set exists), ``"site"``,
        ``"year"``, ``"both"`` (under either design) or ``"off"``.
    design
        The validation design training chose (``"bootstrap"`` or ``"split"``).
    min_rows
        The fewest rows of a group held out alone; it also needs both outcomes. A grouping runs
        only when at least two groups qualify.

    Returns
    -------
    InternalExternal or None
        None when nothing was asked for; else the tables run and the notes on what was not.
    """
    if setting == "off" or (setting == "auto" and design != "bootstrap"):
        return None
    start = time.perf_counter()
    y = np.asarray(y, dtype=int)
    tables: dict[str, pd.DataFrame] = {}
    notes: dict[str, str] = {}
    noun = {"site": "site", "year": "infusion year"}
    for by in ("site", "year") if setting in ("auto", "both") else (setting,):
        groups = _groups(valid, by)
        held = _held_out(groups, y, min_rows)
        if len(held) < 2:
            notes[by] = (f"not run: {len(held)} of {len(set(groups))} {noun[by]}s "
                         f"{'has' if len(held) == 1 else 'have'} at least {min_rows} rows and "
                         "both outcomes; at least 2 are needed")
            continue
        tables[by] = internal_external(develop, valid, y, by, min_rows)
        left = sorted(set(groups) - set(held))
        if left:
            notes[by] = (f"{len(left)} {noun[by]}(s) under {min_rows} rows or with one outcome "
                         "only were never held out alone (they stay in every development set)")
    return InternalExternal(tables, notes, time.perf_counter() - start, min_rows)
