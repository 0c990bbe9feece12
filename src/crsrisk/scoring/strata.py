"""``crsrisk stratify`` as a function: score a file of candidates, then stratify them.

The score step is :func:`crsrisk.scoring.core.score` (drivers off); the strata, expected events
and randomisation come from :mod:`crsrisk.stratify`. Three outputs: per-patient strata, the
per-stratum summary and the rejected rows, each written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crsrisk.contract.mapping import SiteMapping
from crsrisk.errors import ContractError, CrsriskError
from crsrisk.io import check_distinct_paths, read_table, table_format, write_table
from crsrisk.mlops.loading import DEFAULT_MODEL, load_model
from crsrisk.modeling.riskmodel import RiskModel
from crsrisk.scoring.core import score
from crsrisk.scoring.outputs import no_stale_outputs, sibling_path
from crsrisk.stratify import stratify

__all__ = ["StrataRun", "parse_thresholds", "stratify_file"]


@dataclass(frozen=True)
class StrataRun:
    """What one stratification wrote: the tables, where, and with which model."""

    patients: pd.DataFrame
    summary: pd.DataFrame
    n_rejected: int
    model: str
    out: Path
    summary_path: Path
    rejected_path: Path


def parse_thresholds(text: str | None) -> list[float] | None:
    """``"0.03,0.12"`` -> ``[0.03, 0.12]``; None stays None."""
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise CrsriskError(
            f"--thresholds {text!r} must be numbers separated by commas, e.g. 0.03,0.12."
        ) from None


def stratify_file(
    input_path: str | Path,
    out: str | Path,
    *,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    mapping: str | Path | SiteMapping | None = None,
    n_strata: int | None = None,
    thresholds: Sequence[float] | None = None,
    arms: Sequence[str] | None = None,
    block_size: int | None = None,
    seed: int = 0,
    summary_path: str | Path | None = None,
    rejected_path: str | Path | None = None,
) -> StrataRun:
    """Score ``input_path`` and write enrolment strata, their summary and the rejected rows.

    Parameters
    ----------
    input_path
        Baseline table of candidates (CSV or Parquet).
    out
        Per-patient strata (CSV or Parquet).
    model, mapping
        As :func:`crsrisk.scoring.core.score` takes them.
    n_strata, thresholds, arms, block_size, seed
        As :func:`crsrisk.stratify.stratify` takes them; neither ``n_strata`` nor
        ``thresholds``: 3 quantile strata.
    summary_path, rejected_path
        Default ``<out stem>.summary.csv`` and ``<out stem>.rejected.csv`` beside ``out``.

    Returns
    -------
    StrataRun

    Raises
    ------
    CrsriskError
        An output path equals the input or another output, unusable input or model, every
        row rejected (the rejected rows are written; earlier strata files are removed), or
        strata that cannot be formed.
    """
    input_path, out = Path(input_path), Path(out)
    summary_path = Path(summary_path) if summary_path else sibling_path(out, "summary")
    rejected_path = Path(rejected_path) if rejected_path else sibling_path(out, "rejected")
    for path in (out, summary_path, rejected_path):
        table_format(path)
    mapping_file = mapping if isinstance(mapping, (str, Path)) else None
    check_distinct_paths({"input": input_path, "--mapping": mapping_file},
                         {"--out": out, "--summary": summary_path, "--rejected": rejected_path})
    if n_strata is None and thresholds is None:
        n_strata = 3
    with no_stale_outputs(out, summary_path, rejected_path):
        risk_model = model if isinstance(model, RiskModel) else load_model(model)
        scores, rejected = score(read_table(input_path), risk_model, drivers=False,
                                 mapping=mapping)
        if scores.empty:
            write_table(rejected, rejected_path)
    if scores.empty:
        removed = [str(p) for p in (out, summary_path) if _remove(p)]
        raise ContractError(
            f"Every row of {input_path} was rejected, so nothing was stratified: the rejected "
            f"rows are in {rejected_path}"
            + (f"; {' and '.join(removed)}, left by an earlier run, removed." if removed
               else ".")
        )
    with no_stale_outputs(out, summary_path, rejected_path):
        patients, table = stratify(
            scores[["patient_id", "risk", "risk_tier"]], n_strata=n_strata,
            thresholds=thresholds, arms=arms, block_size=block_size, seed=seed,
        )
        write_table(rejected, rejected_path)
        write_table(table, summary_path)
        write_table(patients, out)
    return StrataRun(patients, table, int(rejected["row_number"].nunique()),
                     f"{risk_model.name} v{risk_model.version}", out, summary_path,
                     rejected_path)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
