"""Batch scoring: stream a table in chunks, validate, score, write scores and rejected rows.

Every input row is either scored or in the rejected table, in input order, and the answer does
not depend on the chunk size: a patient_id repeated anywhere in the file (not only within one
chunk) rejects every row carrying it, as validating the whole table at once would. Outputs
appear atomically: a run that fails or is killed leaves no partial output file behind.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from crsrisk.contract.mapping import SiteMapping, apply_mapping, load_mapping
from crsrisk.contract.spec import BASELINE_NAMES, OUTCOME_NAMES
from crsrisk.contract.validate import empty_rejected, stripped_text, validate
from crsrisk.errors import ContractError
from crsrisk.io import (
    TableWriter,
    iter_table,
    remove_stale_temporaries,
    table_format,
)
from crsrisk.mlops.loading import DEFAULT_MODEL, load_model
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, SCORE_COLUMNS, TIERS, RiskModel

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ScoreSummary",
    "score",
    "score_file",
    "score_frame",
]

# Part of validation's cost is per call, not per row (pandera's checks, column by column), so
# 100,000-row chunks validate some 5-20 % faster per row than 50,000 (bench/validation.py
# --n 50000 against --n 100000); memory stays a handful of chunks.
DEFAULT_CHUNK_SIZE = 100_000
# Chunks that may wait for the booster, and for the writer: enough that neither waits for the
# validation of the next chunk, few enough that memory stays a handful of chunks.
QUEUED_CHUNKS = 2
CONTRACT_COLUMNS = frozenset(BASELINE_NAMES) | frozenset(OUTCOME_NAMES)
# The words contract.validate uses for a repeated patient_id.
UNIQUE_WORDS = "must be unique in the table"
SCORE_TYPES = {name: pa.float64() if name in FLOAT_SCORE_COLUMNS else pa.string()
               for name in SCORE_COLUMNS}
# Score columns whose values are (nearly) all distinct: no Parquet dictionary.
DISTINCT_SCORE_COLUMNS = ("patient_id", "risk", "top_drivers")




class _NothingScored(Exception):
    """Every row was rejected: abandon the score file, keep the rejected one."""


class _RepeatedIds(Exception):
    """patient_ids repeat across chunks: score again, rejecting the rows at ``positions``."""

    def __init__(self, positions: np.ndarray) -> None:
        super().__init__(f"{positions.size} rows repeat a patient_id of another chunk")
        self.positions = positions


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
class _Prepared:
    """A validated chunk, ready for the model: the first, GIL-bound half of scoring a chunk."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    warnings: tuple[str, ...]
    n_read: int
    carried: pd.DataFrame | None  # the extra columns of the valid rows
    design: pd.DataFrame | None = None  # the model matrix of the valid rows, when asked for
    id_hashes: np.ndarray | None = None  # uint64 per row, of the patient_id as validated
    id_present: np.ndarray | None = None  # False where the patient_id is missing


def _prepare(
    raw: pd.DataFrame,
    *,
    row_offset: int,
    mapping: SiteMapping | None,
    repeated: np.ndarray | None = None,
    hash_ids: bool = False,
    model: RiskModel | None = None,
) -> _Prepared:
    """Map and validate one chunk whose first row is row ``row_offset`` of the file.

    ``repeated``: 0-based file rows whose patient_id also occurs in another chunk.
    ``model``: also build its model matrix of the valid rows (pandas work, like validation).
    """
    problems = None
    if mapping is not None:
        mapped = apply_mapping(raw, mapping, row_offset=row_offset)
        raw, problems = mapped.frame, mapped.problems
    raw = raw.reset_index(drop=True)
    result = validate(raw, with_outcome=False, row_offset=row_offset, allow_all_rejected=True,
                      extra_problems=problems)
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
    prepared = _Prepared(valid, rejected, result.warnings, len(raw), carried)
    if model is not None and len(valid):
        prepared.design = model.design(valid)
    if hash_ids:
        ids = stripped_text(raw["patient_id"])
        prepared.id_present = ids.notna().to_numpy()
        # categorize=False: ids are (nearly) all distinct, so factorizing first only costs time.
        prepared.id_hashes = pd.util.hash_pandas_object(ids, index=False,
                                                        categorize=False).to_numpy()
    return prepared


def _scores(prepared: _Prepared, model: RiskModel, drivers: bool) -> pd.DataFrame:
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
    rejected = pd.concat([rejected, added], ignore_index=True)
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

    Returns
    -------
    (pd.DataFrame, pd.DataFrame, tuple of str)
        The score table (contract section 5, then the input's extra columns) of the valid
        rows in input order, the rejected table (section 6) and unit warnings.
    """
    prepared = _prepare(raw, row_offset=row_offset, mapping=mapping)
    return _scores(prepared, model, drivers), prepared.rejected, prepared.warnings


def score(
    df: pd.DataFrame,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    *,
    drivers: bool = True,
    mapping: str | Path | SiteMapping | None = None,
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
                                      mapping=site_mapping)
    return scores, rejected


# ----------------------------------------------------------------------------------------------
# A whole file
# ----------------------------------------------------------------------------------------------


@dataclass
class ScoreSummary:
    """Counts of one scoring run; ``n_read == n_scored + n_rejected``."""

    n_read: int = 0
    n_scored: int = 0
    n_rejected: int = 0
    tiers: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0

    def add(self, tiers: pd.Series, rejected: pd.DataFrame, warnings: Iterable[str],
            n_read: int = 0) -> None:
        """Count one chunk: ``tiers`` is its ``risk_tier.value_counts()``."""
        self.n_read += n_read
        self.n_scored += int(tiers.sum())
        self.n_rejected += int(rejected["row_number"].nunique())
        self.tiers.update(tiers.to_dict())
        for warning in warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)

    def line(self) -> str:
        """One line for the terminal: counts, tiers, model, time."""
        tiers = ", ".join(f"{t} {self.tiers.get(t, 0):,}" for t in TIERS)
        rate = f", {self.n_read / self.seconds:,.0f} rows/s" if self.seconds > 0 else ""
        return (f"read {self.n_read:,}, scored {self.n_scored:,}, rejected {self.n_rejected:,} "
                f"({tiers}); model {self.model}; {self.seconds:.1f} s{rate}")


def score_file(
    input_path: str | Path,
    out: str | Path,
    *,
    model: str | Path | RiskModel = DEFAULT_MODEL,
    rejected_path: str | Path | None = None,
    drivers: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    mapping: str | Path | SiteMapping | None = None,
    progress: bool | None = None,
) -> ScoreSummary:
    """Stream ``input_path`` in chunks into ``out`` (scores) and ``rejected_path``.

    Memory stays flat in the input length: a few chunks are held at a time (see
    ``_Run.stream``), plus 9 bytes per row
    to find patient_ids repeated across chunks. Should any repeat, the file is scored a
    second time so that every row carrying them is rejected, exactly as with one big chunk.

    Parameters
    ----------
    input_path
        Baseline table, CSV (cells read as text) or Parquet.
    out
        Score table, CSV or Parquet by extension; written only when at least one row scored.
    model
        Registered model URI, exported model folder or loaded RiskModel.
    rejected_path
        Rejected rows (always written); default ``<out stem>.rejected.csv`` beside ``out``.
    drivers
        Add the SHAP drivers.
    chunk_size
        Rows per chunk; the answer is the same for every chunk size.
    mapping
        Site mapping (YAML path or loaded) applied to each chunk before validation.
    progress
        Show a progress bar on stderr; default: when stderr is a terminal.

    Returns
    -------
    ScoreSummary

    Raises
    ------
    ContractError
        Unusable input: missing, unreadable, empty, a required column missing, a column
        clashing with the score table, or every row rejected (the rejected file is written).
    ModelError
        The model cannot be loaded.
    """
    start = time.perf_counter()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    input_path, out = Path(input_path), Path(out)
    rejected_path = Path(rejected_path) if rejected_path else sibling_path(out, "rejected")
    for path in (input_path, out, rejected_path):
        table_format(path)
    check_distinct_paths(input_path, out, rejected_path)
    risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
    for path in (out, rejected_path):
        remove_stale_temporaries(path)  # left by a killed run
    show = sys.stderr.isatty() if progress is None else progress
    run = _Run(input_path, out, rejected_path, risk_model, site_mapping, drivers, chunk_size,
               show)
    try:
        summary = run.stream(repeated=None)
    except _RepeatedIds as again:
        summary = run.stream(repeated=again.positions)
    return finish_summary(summary, input_path, rejected_path, start)


def finish_summary(summary: ScoreSummary, input_path: str | Path, rejected_path: Path,
                   start: float) -> ScoreSummary:
    """Refuse a run that read no row or scored none; stamp the wall time since ``start``."""
    if summary.n_read == 0:
        raise ContractError(f"{input_path} has no data rows: give at least one row.")
    if summary.n_scored == 0:
        raise ContractError(
            f"Every row of {input_path} was rejected, so nothing was scored: the rejected "
            f"rows are in {rejected_path}."
        )
    summary.seconds = time.perf_counter() - start
    return summary


def sibling_path(out: str | Path, what: str) -> Path:
    """``<stem of out>.<what>.csv`` beside ``out`` (scores.parquet -> scores.rejected.csv)."""
    out = Path(out)
    name = out.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.{what}.csv")


def check_distinct_paths(input_path: Path, out: Path, rejected_path: Path) -> None:
    """Refuse outputs that would overwrite the input, or each other."""
    resolved = {"input": input_path.resolve(), "--out": out.resolve(),
                "--rejected": rejected_path.resolve()}
    if resolved["--out"] == resolved["input"] or resolved["--rejected"] == resolved["input"]:
        raise ContractError(
            f"The output would overwrite the input {input_path}: write to another file (input "
            "files are never changed)."
        )
    if resolved["--out"] == resolved["--rejected"]:
        raise ContractError(
            f"--out and --rejected are both {out}: give the rejected rows their own file."
        )


@dataclass
class _Run:
    """One scoring of a file: its settings, and `stream` to do one pass."""

    input_path: Path
    out: Path
    rejected_path: Path
    model: RiskModel
    mapping: SiteMapping | None
    drivers: bool
    chunk_size: int
    show: bool

    def stream(self, repeated: np.ndarray | None) -> ScoreSummary:
        """One pass over the input; raises _RepeatedIds (writing nothing) on a first pass that
        finds patient_ids repeated across chunks.

        Four threads overlap, so that the booster always has a chunk ready: one reads (Arrow
        parses without the GIL), this one validates and builds the model matrix (pandas,
        pandera), one predicts (XGBoost, without the GIL) and one writes (Arrow encodes
        without the GIL). At most QUEUED_CHUNKS chunks wait for each of the last two.
        """
        summary = ScoreSummary(model=f"{self.model.name} v{self.model.version}")
        ids = _RepeatTracker()
        label = "scoring" if repeated is None else "scoring again (repeated patient_ids)"
        try:
            with TableWriter(self.out, schema=self._score_schema(),
                             plain=DISTINCT_SCORE_COLUMNS) as scores_out:
                with TableWriter(self.rejected_path) as rejected_out, tqdm(
                    desc=label, total=_row_count(self.input_path), unit=" rows",
                    disable=not self.show, file=sys.stderr, mininterval=0.5,
                    dynamic_ncols=True,
                ) as bar, ThreadPoolExecutor(1, thread_name_prefix="crsrisk-score") as scorer, \
                        ThreadPoolExecutor(1, thread_name_prefix="crsrisk-write") as writer:
                    rejected_out.write(empty_rejected())
                    scoring: deque[Future] = deque()
                    writing: deque[Future] = deque()

                    def hand_over() -> None:
                        """Count the oldest scored chunk and queue its writing."""
                        prepared, scores = scoring.popleft().result()
                        summary.add(scores["risk_tier"].value_counts(), prepared.rejected,
                                    prepared.warnings, n_read=prepared.n_read)
                        bar.update(prepared.n_read)
                        writing.append(writer.submit(self._write, scores, prepared.rejected,
                                                     scores_out, rejected_out))
                        if len(writing) > QUEUED_CHUNKS:
                            writing.popleft().result()

                    offset = 0
                    for raw in _prefetch(iter_table(self.input_path, self.chunk_size)):
                        here = None
                        if repeated is not None:
                            lo, hi = np.searchsorted(repeated, [offset, offset + len(raw)])
                            here = repeated[lo:hi]
                        prepared = _prepare(raw, row_offset=offset, mapping=self.mapping,
                                            repeated=here, hash_ids=repeated is None,
                                            model=self.model)
                        ids.add(offset, prepared)
                        offset += len(raw)
                        scoring.append(scorer.submit(self._score, prepared))
                        if len(scoring) > QUEUED_CHUNKS:
                            hand_over()
                    while scoring:
                        hand_over()
                    while writing:
                        writing.popleft().result()
                    if repeated is None:
                        across = ids.repeated_across_chunks()
                        if across.size:
                            raise _RepeatedIds(across)
                # The rejected file is in place; the score file follows unless empty.
                if summary.n_scored == 0:
                    raise _NothingScored
        except _NothingScored:
            pass
        return summary

    def _score(self, prepared: _Prepared) -> tuple[_Prepared, pd.DataFrame]:
        return prepared, _scores(prepared, self.model, self.drivers)

    @staticmethod
    def _write(scores: pd.DataFrame, rejected: pd.DataFrame, scores_out: TableWriter,
               rejected_out: TableWriter) -> None:
        if len(scores):
            scores_out.write(scores)
        if len(rejected):
            rejected_out.write(rejected)

    def _score_schema(self) -> pa.Schema | None:
        """The score file's Parquet schema: fixed score columns, extras typed as in the input.

        Fixing it up front keeps every chunk alike (pandas would read an integer column with a
        missing value as float in one chunk and as integer in another).
        """
        if table_format(self.out) != "parquet":
            return None
        names = _input_columns(self.input_path)
        if self.mapping is not None:
            names = {self.mapping.rename.get(n, n): t for n, t in names.items()}
        extras = [(n, t) for n, t in names.items() if n not in CONTRACT_COLUMNS]
        return pa.schema([*SCORE_TYPES.items(), *extras])


_END = object()


def _prefetch(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """``chunks``, read one ahead by a background thread; its errors are raised here."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def give(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not give(chunk):
                    break
            else:
                give(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            give(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="crsrisk-read", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _input_columns(path: Path) -> dict[str, pa.DataType]:
    """The input's column names and types (CSV cells are text)."""
    if table_format(path) == "parquet":
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError):
            return {}  # iter_table reports the unreadable file
        return {f.name: f.type for f in schema}
    first = next(iter_table(path, chunk_size=1), None)
    return dict.fromkeys(first.columns, pa.string()) if first is not None else {}


def _row_count(path: Path) -> int | None:
    """Data rows of a Parquet file (from its footer); None for CSV."""
    if table_format(path) != "parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None


class _RepeatTracker:
    """Hashes of every row's patient_id, to find ids repeated in different chunks.

    8 bytes of hash and 1 byte of flag per row. Two different ids sharing a 64-bit hash (odds
    about n**2 / 2**65: 4e-7 for 4 million rows) would both be rejected as repeated.
    """

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self._present: list[np.ndarray] = []
        self._starts: list[int] = []

    def add(self, start: int, chunk: _Prepared) -> None:
        if chunk.id_hashes is not None:
            self._starts.append(start)
            self._hashes.append(chunk.id_hashes)
            self._present.append(chunk.id_present)

    def repeated_across_chunks(self) -> np.ndarray:
        """Sorted 0-based rows whose patient_id occurs in more than one chunk."""
        if len(self._hashes) < 2:
            return np.array([], dtype=np.int64)
        hashes = np.concatenate(self._hashes)
        rows = np.flatnonzero(np.concatenate(self._present))
        hashes = hashes[rows]
        # Almost always no id repeats: a plain sort says so in half the time of the argsort,
        # and this runs after the last chunk, when nothing else overlaps it.
        ordered = np.sort(hashes)
        if not (ordered[1:] == ordered[:-1]).any():
            return np.array([], dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        same_next = ordered[1:] == ordered[:-1]
        repeated = np.r_[same_next, False] | np.r_[False, same_next]
        candidates = rows[order[repeated]]
        chunk_of = np.searchsorted(np.asarray(self._starts), candidates, side="right") - 1
        groups = pd.DataFrame({"hash": ordered[repeated], "chunk": chunk_of})
        spread = groups.groupby("hash")["chunk"].transform("nunique").to_numpy() > 1
        return np.sort(candidates[spread]).astype(np.int64)
