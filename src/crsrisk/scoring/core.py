"""Scoring a table in memory: validate, build the model matrix, score, reject.

``score`` and ``score_frame`` score one DataFrame; ``prepare`` and ``chunk_scores`` are the two
halves of scoring one chunk, which the file engines (``scoring.batch``, ``scoring.spark``)
run on every chunk of a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from crsrisk.contract.mapping import SiteMapping, apply_mapping, load_mapping
from crsrisk.contract.rejected import REJECTED, conform_rejected
from crsrisk.contract.spec import BASELINE_NAMES, OUTCOME_NAMES
from crsrisk.contract.validate import stripped_text, validate
from crsrisk.errors import ContractError
from crsrisk.mlops.loading import DEFAULT_MODEL, load_model
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, SCORE_COLUMNS, RiskModel

__all__ = [
    "CONTRACT_COLUMNS",
    "DEFAULT_CHUNK_SIZE",
    "Prepared",
    "SCORE_TYPES",
    "chunk_scores",
    "extra_columns",
    "prepare",
    "resolve_model_and_mapping",
    "score",
    "score_frame",
]

# Part of validation's cost is per call, not per row (pandera's checks, column by column), so
# 100,000-row chunks validate some 5-20 % faster per row than 50,000 (bench/validation.py
# --n 50000 against --n 100000); memory stays a handful of chunks.
DEFAULT_CHUNK_SIZE = 100_000
CONTRACT_COLUMNS = frozenset(BASELINE_NAMES) | frozenset(OUTCOME_NAMES)
# The words contract.validate uses for a repeated patient_id.
UNIQUE_WORDS = "must be unique in the table"
SCORE_TYPES = {name: pa.float64() if name in FLOAT_SCORE_COLUMNS else pa.string()
               for name in SCORE_COLUMNS}


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def resolve_model_and_mapping(
    model: str | Path | RiskModel, mapping: str | Path | SiteMapping | None
) -> tuple[RiskModel, SiteMapping | None]:
    """The loaded model and site mapping, from paths or URIs or as given."""
    risk_model = model if isinstance(model, RiskModel) else load_model(model)
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    return risk_model, mapping


# ----------------------------------------------------------------------------------------------
# One chunk
# ----------------------------------------------------------------------------------------------


def extra_columns(raw: pd.DataFrame) -> list[str]:
    """Input columns outside the contract: carried through scoring untouched."""
    return [c for c in raw.columns if c not in CONTRACT_COLUMNS]


@dataclass
class Prepared:
    """A validated chunk, ready for the model: the first, GIL-bound half of scoring a chunk."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    warnings: tuple[str, ...]
    n_read: int
    carried: pd.DataFrame | None  # the extra columns of the valid rows
    design: pd.DataFrame | None = None  # the model matrix of the valid rows, when asked for
    id_hashes: np.ndarray | None = None  # uint64 per row, of the patient_id as validated
    id_present: np.ndarray | None = None  # False where the patient_id is missing


def prepare(
    raw: pd.DataFrame,
    *,
    row_offset: int,
    mapping: SiteMapping | None,
    repeated: np.ndarray | None = None,
    hash_ids: bool = False,
    model: RiskModel | None = None,
    strict: bool = False,
) -> Prepared:
    """Map and validate one chunk whose first row is row ``row_offset`` of the file.

    ``repeated``: 0-based file rows whose patient_id also occurs in another chunk.
    ``model``: also build its model matrix of the valid rows (pandas work, like validation).
    ``strict``: reject a row with an implausible laboratory value instead of blanking it.
    """
    mapped = {}
    if mapping is not None:
        table = apply_mapping(raw, mapping, row_offset=row_offset)
        raw, mapped = table.frame, table.validate_kwargs()
    raw = raw.reset_index(drop=True)
    result = validate(raw, with_outcome=False, row_offset=row_offset, allow_all_rejected=True,
                      strict=strict, **mapped)
    valid, rejected = result.valid, result.rejected
    if repeated is not None and repeated.size:
        valid, rejected = _reject_repeated(raw, valid, rejected, repeated, row_offset)
    extras = extra_columns(raw)
    clash = [c for c in extras if c in SCORE_TYPES]
    if clash:
        raise ContractError(
            f"The input has column(s) {', '.join(clash)}, which the score table adds: rename "
            "or drop them (is this a score table already?)."
        )
    carried = None
    if extras:
        carried = raw[extras].take(valid.index.to_numpy() - row_offset).set_axis(valid.index)
    prepared = Prepared(valid, rejected, result.warnings, len(raw), carried)
    if model is not None and len(valid):
        prepared.design = model.design(valid)
    if hash_ids:
        ids = stripped_text(raw["patient_id"])
        prepared.id_present = ids.notna().to_numpy()
        # categorize=False: ids are (nearly) all distinct, so factorizing first only costs time.
        prepared.id_hashes = pd.util.hash_pandas_object(ids, index=False,
                                                        categorize=False).to_numpy()
    return prepared


def chunk_scores(prepared: Prepared, model: RiskModel, drivers: bool) -> pd.DataFrame:
    """The score table of a prepared chunk, extra columns last: the model's half."""
    valid = prepared.valid
    scores = (model.score(valid, drivers=drivers, design=prepared.design) if len(valid)
              else _no_scores())
    if prepared.carried is not None:
        scores = pd.concat([scores, prepared.carried], axis=1)
    return scores.reset_index(drop=True)


def _reject_repeated(
    raw: pd.DataFrame,
    valid: pd.DataFrame,
    rejected: pd.DataFrame,
    repeated: np.ndarray,
    row_offset: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reject the rows at ``repeated`` for their patient_id, as whole-table validation does."""
    reported = rejected.loc[rejected["column"].eq("patient_id"), "row_number"].to_numpy() - 1
    new = np.setdiff1d(repeated, reported)
    ids = raw["patient_id"].take(new - row_offset)
    text = pd.Series([None if pd.isna(v) else str(v) for v in ids], dtype="str")
    added = pd.DataFrame({
        "row_number": (new + 1).astype("int64"),
        "patient_id": text,
        "column": pd.Series("patient_id", index=text.index, dtype="str"),
        "check": pd.Series(UNIQUE_WORDS, index=text.index, dtype="str"),
        "value": text.fillna(""),
    })
    rejected = pd.concat([rejected, conform_rejected(added)], ignore_index=True)
    # A repeated row is not used: a value blanked in it was not used either.
    rejected.loc[rejected["row_number"].isin(repeated + 1), "action"] = REJECTED
    rejected = rejected.sort_values(["row_number", "column"], kind="stable").reset_index(drop=True)
    return valid.drop(index=repeated, errors="ignore"), rejected


def _no_scores() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in FLOAT_SCORE_COLUMNS else "str")
                         for c in SCORE_COLUMNS})


def score_frame(
    raw: pd.DataFrame,
    model: RiskModel,
    *,
    drivers: bool = True,
    row_offset: int = 0,
    mapping: SiteMapping | None = None,
    strict: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Score one table or chunk: (scores with extra columns, rejected rows, unit warnings).

    Parameters
    ----------
    raw
        Rows as read (text cells from CSV or typed from Parquet).
    model
        A loaded RiskModel.
    drivers
        Add ``top_drivers`` (SHAP); off is faster.
    row_offset
        Rows of the file before this chunk, so that rejected row numbers count from its top.
    mapping
        A loaded site mapping, applied before validation.
    strict
        Reject a row with an implausible laboratory value instead of blanking the value.

    Returns
    -------
    (pd.DataFrame, pd.DataFrame, tuple of str)
        The score table (contract section 5, then the input's extra columns) of the valid
        rows in input order, the rejected table (section 6) and unit warnings.
    """
    prepared = prepare(raw, row_offset=row_offset, mapping=mapping, strict=strict)
    return chunk_scores(prepared, model, drivers), prepared.rejected, prepared.warnings


def score(
    df: pd.DataFrame,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    *,
    drivers: bool = True,
    mapping: str | Path | SiteMapping | None = None,
    strict: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a baseline table in memory: (score table, rejected table).

    The same rows give the same numbers as ``crsrisk score`` and the REST server.

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
    strict
        Reject a row with an implausible laboratory value instead of blanking the value (as
        ``crsrisk score --strict``).

    Returns
    -------
    (pd.DataFrame, pd.DataFrame)
        The score table (contract section 5 plus the input's extra columns, valid rows in
        input order) and the rejected table (section 6).

    Raises
    ------
    ContractError
        The table is unusable (no rows, a required column missing).
    ModelError
        The model cannot be loaded.

    Examples
    --------
    >>> import crsrisk
    >>> scores, rejected = crsrisk.score(table)  # doctest: +SKIP
    """
    risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
    scores, rejected, _ = score_frame(df.reset_index(drop=True), risk_model, drivers=drivers,
                                      mapping=site_mapping, strict=strict)
    return scores, rejected
