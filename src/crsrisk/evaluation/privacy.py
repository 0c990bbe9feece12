"""Privacy of aggregates: small cells withheld and sites coded in every table that leaves the site.

The report, ``crsrisk evaluate``'s JSON and the MLflow evaluation artefact are read by people
outside the treating centre. Three rules apply to each table in them:

- A count of fewer than ``min_cell`` patients (but not zero: a cell of nobody identifies nobody)
  is shown as ``"< 10"`` (for the default ``min_cell`` of 10), never as its value. ``min_cell``
  comes from ``privacy.min_cell`` of the training config and may not be set below 5.
- A subgroup (or calibration bin) of fewer than ``min_cell`` patients shows no outcome count and
  no metric; one with fewer than ``min_cell`` events or non-events shows neither its events nor
  anything computed from the outcome, since an observed rate times ``n`` gives the events back.
- ``site`` is free text at many centres (a ward, a physician's name): it appears only as
  ``site_1`` .. ``site_k``, numbered in the sorted order of the names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pydantic

from crsrisk.config import MIN_CELL_FLOOR, ConfigError, PrivacyConfig

__all__ = [
    "MIN_CELL",
    "MIN_CELL_FLOOR",
    "SITE_CODE_PREFIX",
    "COMPLEMENT",
    "check_min_cell",
    "small",
    "withheld",
    "site_code_map",
    "site_codes",
    "suppress_small_counts",
    "private_groups",
    "pooled_bins",
    "private_internal_external",
    "private_thresholds",
]

MIN_CELL: int = PrivacyConfig().min_cell
SITE_CODE_PREFIX = "site_"
# A count withheld only so that a small one cannot be had by subtraction (it is not small).
COMPLEMENT = "withheld"
# Columns of a subgroup or calibration table that are computed from the outcome.
_OUTCOME_COLUMNS = ("events", "prevalence", "observed", "auroc", "auroc_lower", "auroc_upper",
                    "calibration_slope", "calibration_intercept", "brier", "too_few_events")
_THRESHOLD_PREFIXES = ("sensitivity_", "specificity_", "ppv_", "npv_")


def check_min_cell(min_cell: int) -> int:
    """``min_cell`` if it is an allowed threshold, else a `ConfigError` saying why.

    Parameters
    ----------
    min_cell
        The smallest count of patients shown as a number.

    Returns
    -------
    int
        ``min_cell``, unchanged.
    """
    try:
        return PrivacyConfig(min_cell=min_cell).min_cell
    except pydantic.ValidationError as exc:
        raise ConfigError(
            f"privacy.min_cell is {min_cell!r}: it must be a whole number of at least "
            f"{MIN_CELL_FLOOR}, since smaller published counts can identify patients."
        ) from exc


def small(count: float, min_cell: int = MIN_CELL) -> bool:
    """True when ``count`` patients is a small cell: more than none, fewer than ``min_cell``."""
    return bool(0 < count < min_cell)


def withheld(min_cell: int = MIN_CELL) -> str:
    """What a withheld count reads as, e.g. ``"< 10"``."""
    return f"< {min_cell}"


def site_code_map(names: Iterable[object]) -> dict[str, str]:
    """Each distinct site name (missing values left out) to ``site_1`` .. ``site_k``.

    Codes follow the sorted order of the names (as text, ignoring case first), so the same
    cohort always gets the same codes, in the report and in the JSON alike.
    """
    distinct = sorted({str(n) for n in names if not pd.isna(n)}, key=lambda n: (n.casefold(), n))
    return {name: f"{SITE_CODE_PREFIX}{i}" for i, name in enumerate(distinct, start=1)}


def site_codes(series: pd.Series) -> pd.Series:
    """``series`` of site names as ``site_1`` .. ``site_k`` (see `site_code_map`); NA stays NA.

    Parameters
    ----------
    series
        The ``site`` column of a cohort.

    Returns
    -------
    pandas.Series
        Categorical, its categories in code order (``site_2`` before ``site_10``), aligned
        with ``series``.
    """
    codes = site_code_map(series)
    coded = series.map(lambda v: None if pd.isna(v) else codes[str(v)])
    return pd.Series(pd.Categorical(coded, categories=list(codes.values())),
                     index=series.index, name=series.name)


def suppress_small_counts(
    table: pd.DataFrame,
    columns: Sequence[str],
    min_cell: int = MIN_CELL,
    *,
    complementary: bool = False,
) -> pd.DataFrame:
    """``table`` with the small counts of ``columns`` replaced by ``withheld(min_cell)``.

    Parameters
    ----------
    table
        A table whose ``columns`` hold counts of patients.
    columns
        The count columns.
    min_cell
        Counts from 1 to ``min_cell - 1`` are withheld.
    complementary
        Treat each column as the levels of one variable adding up to a known total: where a
        column has exactly one withheld cell, also withhold its smallest other non-zero cell, so
        the withheld one cannot be had by subtraction; that cell reads `COMPLEMENT`.

    Returns
    -------
    pandas.DataFrame
        A copy; the count columns hold ints or the withheld text (object dtype).
    """
    check_min_cell(min_cell)
    out = table.copy()
    for column in columns:
        counts = pd.to_numeric(table[column]).to_numpy(dtype=float)
        cells: list[object] = [int(c) for c in counts]
        hide = (counts > 0) & (counts < min_cell)
        for i in np.flatnonzero(hide):
            cells[i] = withheld(min_cell)
        if complementary and hide.sum() == 1:
            others = np.where(~hide & (counts > 0), counts, np.inf)
            if np.isfinite(others).any():
                cells[int(np.argmin(others))] = COMPLEMENT
        out[column] = pd.Series(cells, index=table.index, dtype=object)
    return out


def private_groups(
    table: pd.DataFrame,
    min_cell: int = MIN_CELL,
    *,
    site_variable: str = "site",
) -> pd.DataFrame:
    """A subgroup or calibration table fit to leave the site.

    Parameters
    ----------
    table
        Rows of patients grouped by a characteristic (`crsrisk.evaluation.metrics.subgroup_table`,
        with ``variable``, ``level``, ``n``, ``events``, ...) or by predicted risk
        (`calibration_table`, with ``n``, ``events``, ``observed``, ``mean_predicted``).
    min_cell
        The smallest count shown.
    site_variable
        Subgroup rows of this variable get their level coded (`site_code_map`).

    Returns
    -------
    pandas.DataFrame
        A copy (object dtype): a row of fewer than ``min_cell`` patients keeps only its variable
        and level, ``n`` withheld and every other value missing; a row with fewer than
        ``min_cell`` events or non-events has its events withheld and every value computed from
        the outcome missing. A column ``withheld`` says which rows lost values.
    """
    check_min_cell(min_cell)
    out = table.astype(object).copy()
    if "variable" in out.columns and "level" in out.columns:
        sites = out["variable"].eq(site_variable) & out["level"].ne("missing")
        codes = site_code_map(out.loc[sites, "level"])
        out.loc[sites, "level"] = out.loc[sites, "level"].map(lambda v: codes[str(v)])
        if codes:  # site rows (contiguous) in code order, so their order says nothing
            rank = {code: i for i, code in enumerate(codes.values())}
            position = np.arange(len(out), dtype=float)
            rows = np.flatnonzero(sites.to_numpy())
            position[rows] = rows[0] + np.array(
                [rank[v] for v in out.loc[sites, "level"]], dtype=float) / len(rank)
            order = np.argsort(position, kind="stable")
            out, table = out.iloc[order], table.iloc[order]
    n = pd.to_numeric(table["n"]).to_numpy(dtype=float)
    events = pd.to_numeric(table["events"]).to_numpy(dtype=float)
    tiny = n < min_cell
    rare = ~tiny & ((events < min_cell) | (n - events < min_cell))
    keep = {"variable", "level", "bin"}
    outcome = [c for c in out.columns
               if c in _OUTCOME_COLUMNS or c.startswith(_THRESHOLD_PREFIXES)]
    everything = [c for c in out.columns if c not in keep]
    for column in everything:
        out.loc[tiny, column] = None
    for column in outcome:
        out.loc[rare, column] = None
    out.loc[tiny, "n"] = withheld(min_cell)
    out.loc[rare, "events"] = withheld(min_cell)
    out["withheld"] = np.where(tiny, "n", np.where(rare, "outcome", ""))
    return out.reset_index(drop=True)


def pooled_bins(table: pd.DataFrame, min_cell: int = MIN_CELL) -> pd.DataFrame:
    """A calibration table whose neighbouring bins are pooled until none is a small cell.

    Parameters
    ----------
    table
        From `crsrisk.evaluation.metrics.calibration_table`: ``bin``, ``mean_predicted``,
        ``observed``, ``n``, ``events``, lowest risk first.
    min_cell
        Each pooled bin holds at least this many events and this many non-events (when the
        whole cohort does).

    Returns
    -------
    pandas.DataFrame
        The same columns; ``bin`` names the bins pooled (``"1-4"``), the rest is recomputed.
    """
    check_min_cell(min_cell)
    groups: list[list[dict]] = []
    current: list[dict] = []
    for row in table.to_dict("records"):
        current.append(row)
        events = sum(r["events"] for r in current)
        if min(events, sum(r["n"] for r in current) - events) >= min_cell:
            groups.append(current)
            current = []
    if current:  # what is left joins the last full bin, or stands alone when there is none
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    rows = []
    for group in groups:
        n = sum(r["n"] for r in group)
        events = sum(r["events"] for r in group)
        first, last = group[0]["bin"], group[-1]["bin"]
        rows.append({"bin": str(first) if first == last else f"{first}-{last}",
                     "mean_predicted": sum(r["mean_predicted"] * r["n"] for r in group) / n,
                     "observed": events / n, "n": n, "events": events})
    return pd.DataFrame(rows, columns=["bin", "mean_predicted", "observed", "n", "events"])


def private_internal_external(table: pd.DataFrame, by: str, min_cell: int,
                              site_names: pd.Series | None = None) -> pd.DataFrame:
    """An internal-external table (`crsrisk.modeling.validation_design.internal_external`) fit
    to leave the site: small counts withheld, no figure from a group with fewer than
    ``min_cell`` events or non-events, and sites coded against ``site_names`` when given."""
    frame = table.rename(columns={by: "level", "rows": "n"}).assign(variable=by)
    if by == "site" and site_names is not None:
        frame["level"] = frame["level"].map(site_code_map(site_names))
    out = private_groups(frame, min_cell, site_variable="")
    return out.drop(columns="variable").rename(columns={"level": by, "n": "rows"})


def private_thresholds(table: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """The tier-threshold table (`crsrisk.modeling.tiers.threshold_performance`) fit to leave
    the site: counts of 1 to ``min_cell - 1`` patients withheld, and no sensitivity or NPV from
    a therapy class with fewer than ``min_cell`` events or non-events."""
    events, rows = table["events"].to_numpy(), table["rows"].to_numpy()
    thin = (events < min_cell) | (rows - events < min_cell)
    out = suppress_small_counts(table, ["rows", "events", "at_or_above"], min_cell)
    out[["sensitivity", "npv"]] = out[["sensitivity", "npv"]].astype(object)
    out.loc[thin, ["sensitivity", "npv"]] = None
    out.loc[thin, "note"] = f"fewer than {min_cell} events or non-events: not shown"
    return out
