"""Streaming a file through scoring: read, validate, score and write chunk by chunk.

Every input row is either scored or in the rejected table, in input order, and the answer does
not depend on the chunk size: a patient_id repeated anywhere in the file (not only within one
chunk) rejects every row carrying it, as validating the whole table at once would. Outputs
appear atomically: a run that fails or is killed leaves no partial output file behind, and a run
that writes no score file removes an earlier one at its ``out``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from crsrisk.contract.load import site_read_options
from crsrisk.contract.mapping import SiteMapping
from crsrisk.io import iter_table, table_format
from crsrisk.mlops.loading import DEFAULT_MODEL
from crsrisk.modeling.riskmodel import RiskModel
from crsrisk.scoring.core import (
    CONTRACT_COLUMNS,
    DEFAULT_CHUNK_SIZE,
    SCORE_TYPES,
    Prepared,
    chunk_scores,
    prepare,
    resolve_model_and_mapping,
)
from crsrisk.scoring.outputs import (
    ScoreOutputs,
    ScoreSummary,
    check_chunk_size,
    check_outputs,
    class_tier_counts,
    finish_summary,
    no_stale_outputs,
    sibling_path,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "ScoreSummary", "score_file"]

# Chunks that may wait for the booster, and for the writer: enough that neither waits for the
# validation of the next chunk, few enough that memory stays a handful of chunks.
QUEUED_CHUNKS = 2
# Score columns whose values are (nearly) all distinct: no Parquet dictionary.
DISTINCT_SCORE_COLUMNS = ("patient_id", "risk", "top_drivers")


class _RepeatedIds(Exception):
    """patient_ids repeat across chunks: score again, rejecting the rows at ``positions``."""

    def __init__(self, positions: np.ndarray) -> None:
        super().__init__(f"{positions.size} rows repeat a patient_id of another chunk")
        self.positions = positions


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
    strict: bool = False,
    sheet: str | None = None,
) -> ScoreSummary:
    """Stream ``input_path`` in chunks into ``out`` (scores) and ``rejected_path``.

    Memory stays flat in the input length: a few chunks are held at a time (see
    ``_Run.stream``), plus 9 bytes per row
    to find patient_ids repeated across chunks. Should any repeat, the file is scored a
    second time so that every row carrying them is rejected, exactly as with one big chunk.

    Parameters
    ----------
    input_path
        Baseline table: CSV or Excel (cells read as text) or Parquet.
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
    strict
        Reject a row with an implausible laboratory value instead of blanking the value.
    sheet
        The Excel sheet to read (default: the mapping's ``file.sheet``, else the first).

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
    check_chunk_size(chunk_size)
    input_path, out = Path(input_path), Path(out)
    rejected_path = Path(rejected_path) if rejected_path else sibling_path(out, "rejected")
    check_outputs(input_path, out, rejected_path, mapping)
    with no_stale_outputs(out, rejected_path):
        risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
        show = sys.stderr.isatty() if progress is None else progress
        run = _Run(input_path, out, rejected_path, risk_model, site_mapping, drivers,
                   chunk_size, show, strict, site_read_options(input_path, site_mapping, sheet))
        try:
            summary = run.stream(repeated=None)
        except _RepeatedIds as again:
            summary = run.stream(repeated=again.positions)
    return finish_summary(summary, input_path, rejected_path, start, out=out)


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
    strict: bool
    read_options: dict  # sheet and CSV dialect, as iter_table takes them

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
        with ScoreOutputs(self.out, self.rejected_path, summary, schema=self._score_schema(),
                          plain=DISTINCT_SCORE_COLUMNS) as outputs, tqdm(
            desc=label, total=_row_count(self.input_path), unit=" rows",
            disable=not self.show, file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
        ) as bar, ThreadPoolExecutor(1, thread_name_prefix="crsrisk-score") as scorer, \
                ThreadPoolExecutor(1, thread_name_prefix="crsrisk-write") as writer:
            scoring: deque[Future] = deque()
            writing: deque[Future] = deque()

            def hand_over() -> None:
                """Count the oldest scored chunk and queue its writing."""
                prepared, scores = scoring.popleft().result()
                outputs.count(class_tier_counts(scores, prepared.valid["therapy_class"]),
                              prepared.rejected, prepared.warnings, n_read=prepared.n_read)
                bar.update(prepared.n_read)
                writing.append(writer.submit(outputs.write, scores, prepared.rejected))
                if len(writing) > QUEUED_CHUNKS:
                    writing.popleft().result()

            offset = 0
            for raw in _prefetch(iter_table(self.input_path, self.chunk_size,
                                            **self.read_options)):
                here = None
                if repeated is not None:
                    lo, hi = np.searchsorted(repeated, [offset, offset + len(raw)])
                    here = repeated[lo:hi]
                prepared = prepare(raw, row_offset=offset, mapping=self.mapping,
                                   repeated=here, hash_ids=repeated is None, model=self.model,
                                   strict=self.strict)
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
        return summary

    def _score(self, prepared: Prepared) -> tuple[Prepared, pd.DataFrame]:
        return prepared, chunk_scores(prepared, self.model, self.drivers)

    def _score_schema(self) -> pa.Schema | None:
        """The score file's Parquet schema: fixed score columns, extras typed as in the input.

        Fixing it up front keeps every chunk alike (pandas would read an integer column with a
        missing value as float in one chunk and as integer in another).
        """
        if table_format(self.out) != "parquet":
            return None
        names = _input_columns(self.input_path, self.read_options)
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


def _input_columns(path: Path, read_options: dict) -> dict[str, pa.DataType]:
    """The input's column names and types (CSV and Excel cells are text)."""
    if table_format(path) == "parquet":
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError):
            return {}  # iter_table reports the unreadable file
        return {f.name: f.type for f in schema}
    first = next(iter_table(path, chunk_size=1, **read_options), None)
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

    def add(self, start: int, chunk: Prepared) -> None:
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
