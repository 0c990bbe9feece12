"""Batch scoring: stream a table in chunks, validate, score, write scores and rejected rows.

Every input row is either scored or in the rejected table. Outputs appear atomically: a run that
fails or is killed leaves no partial file behind.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from crsrisk.columns import BASELINE_NAMES, OUTCOME_NAMES
from crsrisk.contract import empty_rejected, validate
from crsrisk.errors import ContractError, CrsriskError
from crsrisk.mapping import SiteMapping, apply_mapping, load_mapping
from crsrisk.riskmodel import SCORE_COLUMNS, TIERS, RiskModel
from crsrisk.tableio import TableWriter, iter_table, table_format

DEFAULT_MODEL = "models:/crs-severe@champion"
CONTRACT_COLUMNS = frozenset(BASELINE_NAMES) | frozenset(OUTCOME_NAMES)


class _NothingScored(Exception):
    """Every row was rejected: abandon the score file, keep the rejected one."""


class ModelError(CrsriskError):
    """The model cannot be loaded or used."""


def load_model(uri: str | Path = DEFAULT_MODEL) -> RiskModel:
    """The RiskModel behind a registered model URI or an exported model directory."""
    from crsrisk.export import load_exported, looks_exported

    if looks_exported(uri):
        return load_exported(uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    from crsrisk.registry import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri())
    try:
        pyfunc = mlflow.pyfunc.load_model(str(uri))
    except (MlflowException, OSError) as exc:
        raise ModelError(
            f"The model {uri} could not be loaded ({type(exc).__name__}): train one with "
            "crsrisk train, or give --model a registered URI or an exported model directory."
        ) from exc
    return pyfunc.unwrap_python_model().risk_model


def extra_columns(raw: pd.DataFrame) -> list[str]:
    """Input columns outside the contract: carried through scoring untouched."""
    return [c for c in raw.columns if c not in CONTRACT_COLUMNS]


def score_frame(
    raw: pd.DataFrame,
    model: RiskModel,
    *,
    drivers: bool = True,
    row_offset: int = 0,
    mapping: SiteMapping | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Score one table or chunk: (scores with extra columns, rejected rows, unit warnings)."""
    problems = None
    if mapping is not None:
        mapped = apply_mapping(raw, mapping, row_offset=row_offset)
        raw, problems = mapped.frame, mapped.problems
    result = validate(raw, with_outcome=False, row_offset=row_offset, allow_all_rejected=True,
                      extra_problems=problems)
    scores = model.score(result.valid, drivers=drivers) if len(result.valid) else _no_scores()
    extras = extra_columns(raw)
    if extras:
        positions = result.valid.index.to_numpy() - row_offset
        carried = raw[extras].iloc[positions].set_axis(result.valid.index)
        scores = pd.concat([scores, carried], axis=1)
    return scores.reset_index(drop=True), result.rejected, result.warnings


def _no_scores() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "risk" else "str")
                         for c in SCORE_COLUMNS})


def score(
    df: pd.DataFrame,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    *,
    drivers: bool = True,
    mapping: str | Path | SiteMapping | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a baseline table in memory: (score table, rejected table).

    Parameters
    ----------
    df
        A baseline table (contract section 1), as read from CSV (text) or typed.
    model
        A registered model URI (default ``models:/crs-severe@champion``), an exported model
        directory, or a loaded RiskModel.
    drivers
        Add the SHAP drivers (``top_drivers``); off is faster.
    mapping
        A site mapping (YAML path or loaded) applied before validation.
    """
    risk_model = model if isinstance(model, RiskModel) else load_model(model)
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    scores, rejected, _ = score_frame(df.reset_index(drop=True), risk_model, drivers=drivers,
                                      mapping=mapping)
    return scores, rejected


@dataclass
class ScoreSummary:
    n_read: int = 0
    n_scored: int = 0
    n_rejected: int = 0
    tiers: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0

    def add(self, chunk: pd.DataFrame, scores: pd.DataFrame, rejected: pd.DataFrame,
            warnings: tuple[str, ...]) -> None:
        self.n_read += len(chunk)
        self.n_scored += len(scores)
        self.n_rejected += int(rejected["row_number"].nunique())
        self.tiers.update(scores["risk_tier"].tolist())
        self.warnings.extend(w for w in warnings if w not in self.warnings)

    def line(self) -> str:
        tiers = ", ".join(f"{t} {self.tiers.get(t, 0):,}" for t in TIERS)
        return (f"read {self.n_read:,}, scored {self.n_scored:,}, rejected {self.n_rejected:,} "
                f"({tiers}); model {self.model}; {self.seconds:.1f} s")


def score_file(
    input_path: str | Path,
    out: str | Path,
    *,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    rejected_path: str | Path | None = None,
    drivers: bool = True,
    chunk_size: int = 50_000,
    mapping: str | Path | SiteMapping | None = None,
    progress: bool | None = None,
) -> ScoreSummary:
    """Stream ``input_path`` in chunks into ``out`` (scores) and ``rejected_path``.

    Memory stays flat in the input length: one chunk is held at a time.
    """
    start = time.perf_counter()
    table_format(out)
    rejected_path = Path(rejected_path) if rejected_path else _default_rejected(out)
    table_format(rejected_path)
    risk_model = model if isinstance(model, RiskModel) else load_model(model)
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    summary = ScoreSummary(model=f"{risk_model.name} v{risk_model.version}")
    show = sys.stderr.isatty() if progress is None else progress
    with TableWriter(rejected_path) as rejected_out:
        rejected_out.write(empty_rejected().iloc[:0])
        try:
            with TableWriter(out) as scores_out, tqdm(
                desc="scoring", unit=" rows", disable=not show, file=sys.stderr
            ) as bar:
                for chunk in iter_table(input_path, chunk_size):
                    scores, rejected, warnings = score_frame(
                        chunk, risk_model, drivers=drivers, row_offset=summary.n_read,
                        mapping=mapping,
                    )
                    summary.add(chunk, scores, rejected, warnings)
                    if len(scores):
                        scores_out.write(scores)
                    if len(rejected):
                        rejected_out.write(rejected)
                    bar.update(len(chunk))
                if summary.n_scored == 0:
                    raise _NothingScored
        except _NothingScored:
            pass  # the rejected table is still written; the score file is not
    if summary.n_read == 0:
        raise ContractError(f"{input_path} has no data rows: give at least one row.")
    if summary.n_scored == 0:
        raise ContractError(
            f"Every row of {input_path} was rejected, so nothing was scored: the rejected "
            f"rows are in {rejected_path}."
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _default_rejected(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name.split('.')[0]}.rejected.csv")
