"""Scoring on Apache Spark with the pandas engine's own per-chunk contract check and model.

The input is numbered row by row (1-based, as the pandas engine numbers a file), cut into the
chunks the pandas engine reads (``chunk_size`` rows each), and every chunk is handed whole to
:func:`crsrisk.scoring.core.score_frame` on an executor through ``groupBy(chunk).applyInPandas``.
Validation, rejected rows, risk, tier and drivers therefore come from the same code applied to
the same rows, chunk for chunk, as ``crsrisk score --engine pandas``; Spark only distributes
the chunks. The model is loaded once on the driver and shipped to the executors inside the
task closure, so only the driver needs to reach the tracking store or the exported model.

pyspark is optional: ``pip install 'crsrisk[spark]'``. See docs/spark.md for clusters.

Public entries
--------------
score_spark
    Spark DataFrame in, (scores, rejected) Spark DataFrames out.
score_file_spark
    The ``crsrisk score --engine spark`` backend: a CSV or Parquet file in, the score and
    rejected tables out as single files, like the pandas engine.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from crsrisk.contract.mapping import SiteMapping
from crsrisk.contract.spec import REJECTED_COLUMNS_DOC
from crsrisk.contract.validate import empty_rejected
from crsrisk.errors import ContractError, CrsriskError
from crsrisk.io import TableWriter, iter_table, table_format
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, SCORE_COLUMNS, RiskModel
from crsrisk.scoring.core import (
    DEFAULT_CHUNK_SIZE,
    ScoreSummary,
    finish_summary,
    resolve_model_and_mapping,
    score_frame,
    sibling_path,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ROW_NUMBER",
    "SparkEngineError",
    "number_rows",
    "read_table_spark",
    "score_file_spark",
    "score_spark",
    "spark_session",
]

ROW_NUMBER = "_crsrisk_row"  # 1-based input row, added by number_rows
_CHUNK, _KIND, _SEQ, _PID, _MID = "_crsrisk_chunk", "_crsrisk_kind", "_crsrisk_seq", "_p", "_m"
_OVERFLOW = "_crsrisk_overflow"
_SCORES, _REJECTED, _WARNING = 0, 1, 2
_WARNING_COLUMN = "w0"
# pandas' default missing-value words: pd.read_csv (tableio.iter_table) turns these cells into
# NaN, Spark's CSV reader keeps them as text, so the Spark reader maps them to null itself.
_NA_WORDS = sorted(STR_NA_VALUES)
# Spark must never read an empty cell as null by itself (it could then not tell a trailing empty
# field from a missing one); empty text becomes null through _NA_WORDS like in pandas.
_NEVER = "\u0000crsrisk-never\u0000"


class SparkEngineError(CrsriskError):
    """The Spark engine cannot run here (pyspark or Java missing, the session cannot start)."""


@contextlib.contextmanager
def _quiet_pyspark() -> Iterator[None]:
    """Silence pyspark 4.3's blanket warnings about pandas 3 (see docs/spark.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="PySpark does not yet fully support pandas",
            category=FutureWarning,
            module="pyspark",
        )
        warnings.filterwarnings(
            "ignore",
            message="The copy keyword is deprecated",
            category=DeprecationWarning,
            module="pyspark",
        )
        yield


def _import_pyspark() -> None:
    try:
        with _quiet_pyspark():
            import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkEngineError(
            "The Spark engine needs pyspark: install it with pip install 'crsrisk[spark]' "
            "(and Java 17 or newer)."
        ) from exc


# ----------------------------------------------------------------------------------------------
# Session and reading
# ----------------------------------------------------------------------------------------------


def spark_session(
    master: str = "local[2]",
    *,
    app_name: str = "crsrisk",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """The active SparkSession, or a new one on ``master``.

    Parameters
    ----------
    master
        A Spark master URL. For ``local[...]`` masters the session binds to 127.0.0.1, runs
        without the web UI, and starts its Python workers with this interpreter and one
        OpenMP thread each (``OMP_NUM_THREADS``, unless set).
    app_name
        The application name shown by the cluster manager.
    conf
        Further Spark settings, applied last.

    Returns
    -------
    pyspark.sql.SparkSession
        An already active session is returned as it is (its master is not changed).
    """
    _import_pyspark()
    from pyspark.sql import SparkSession

    settings = {"spark.ui.showConsoleProgress": "false"}
    if master.startswith("local"):
        settings |= {
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.shuffle.partitions": "8",
            # One core per task: XGBoost and SHAP would otherwise start a thread per core in
            # every worker, and the workers would fight over the cores.
            "spark.executorEnv.OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            # pyspark's own pandas-3 warnings would otherwise be printed by every worker.
            "spark.executorEnv.PYTHONWARNINGS": (
                "ignore:PySpark does not yet fully support pandas:FutureWarning,"
                "ignore:The copy keyword is deprecated:DeprecationWarning"
            ),
        }
        # pyspark starts local workers with $PYSPARK_PYTHON (default: python3 on the PATH),
        # which may lack crsrisk; this interpreter has it.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings |= dict(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    from pyspark.errors import PySparkException

    try:
        with _quiet_pyspark():
            session = builder.getOrCreate()
    except PySparkException as exc:
        raise SparkEngineError(
            f"Spark could not start on {master} ({exc.getCondition() or type(exc).__name__}): "
            "check that Java 17 or newer is installed (java -version, JAVA_HOME) and the master "
            "URL is right."
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def _uri(path: Path) -> str:
    # An explicit file: URI, so that a cluster whose default file system is HDFS reads the path
    # the user gave, on a file system shared by driver and executors.
    return path.resolve().as_uri()


def _check_utf8(path: Path) -> None:
    """Refuse text that is not UTF-8 as tableio does; Spark would silently replace the bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    offset = 0
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise ContractError(
                    f"{path} is not UTF-8 text (byte {offset + exc.start} cannot be decoded): "
                    "re-save it as a UTF-8 CSV or as Parquet."
                ) from None
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ContractError(
                f"{path} is not UTF-8 text (it ends inside a character): re-save it as a UTF-8 "
                "CSV or as Parquet."
            ) from None


def read_table_spark(spark: SparkSession, path: str | Path) -> DataFrame:
    """Read a CSV or Parquet file as the pandas engine sees it, as a Spark DataFrame.

    CSV cells stay text, with the header names, quoting, leading-space skipping and
    missing-value words of ``pandas.read_csv`` (as ``crsrisk.io`` calls it). A data row with
    more fields than the header is detected later, by :func:`number_rows`' pass. Parquet is read
    typed; nanosecond timestamps (the pandas default), which Spark cannot read as such, are read
    as integers (this sets ``spark.sql.legacy.parquet.nanosAsLong`` on the session) and turned
    back into timestamps, floored to the microsecond.

    Parameters
    ----------
    spark
        The session to read with.
    path
        A local or shared-file-system path ending in .csv, .csv.gz, .parquet or .pq.

    Returns
    -------
    pyspark.sql.DataFrame
        For CSV, one string column per header name plus an internal overflow column.

    Raises
    ------
    ContractError
        The file is missing, empty, not UTF-8, or not a readable table.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    path = Path(path)
    fmt = table_format(path)
    probe = _probe_file(path)
    if fmt == "csv":
        _check_utf8(path)
        names = [str(c) for c in (probe.columns if probe is not None else ())]
        schema = StructType([StructField(n, StringType()) for n in [*names, _OVERFLOW]])
        frame = spark.read.csv(
            _uri(path),
            schema=schema,
            header=True,
            enforceSchema=True,
            multiLine=True,  # quoted line breaks, as pandas reads them
            escape='"',
            ignoreLeadingWhiteSpace=True,
            nullValue=_NEVER,
            encoding="UTF-8",
            mode="PERMISSIVE",
        )
        return frame.select(
            *[
                F.when(F.col(_quoted(n)).isin(_NA_WORDS), None)
                .otherwise(F.col(_quoted(n)))
                .alias(n)
                for n in names
            ],
            F.col(_OVERFLOW),
        )
    arrow = pq.read_schema(path)
    nanos = {f.name: f.type for f in arrow if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
    if nanos:
        # Spark refuses nanosecond timestamps unless told to read them as integers.
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    frame = spark.read.parquet(_uri(path))
    if not nanos:
        return frame
    converted = []
    for name in frame.columns:
        column = F.col(_quoted(name))
        if name in nanos:
            # Floor to the microsecond (pmod keeps it exact for instants before 1970).
            micros = f"({_quoted(name)} - pmod({_quoted(name)}, 1000)) div 1000"
            if nanos[name].tz is None:  # wall-clock time: no session time zone involved
                column = F.expr(
                    f"timestampadd(MICROSECOND, {micros}, TIMESTAMP_NTZ'1970-01-01 00:00:00')"
                )
            else:
                column = F.expr(f"timestamp_micros({micros})")
        converted.append(column.alias(name))
    return frame.select(*converted)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _probe_file(path: Path) -> pd.DataFrame | None:
    """The first row as the pandas engine reads it (raises its errors for unusable files).

    None when the reader yields no chunk at all (a Parquet file without rows); a CSV file with
    only a header yields an empty chunk, which validation then refuses, as in the pandas engine.
    """
    try:
        return next(iter_table(path, chunk_size=1))
    except StopIteration:
        return None


# ----------------------------------------------------------------------------------------------
# Row numbers and chunks
# ----------------------------------------------------------------------------------------------


def number_rows(df: DataFrame, *, source: str = "the input") -> tuple[DataFrame, int]:
    """Add ``_crsrisk_row``, the 1-based position of each row in ``df``'s partition order.

    Like ``RDD.zipWithIndex`` it runs one job to count the rows of each partition; the numbers
    are stable only if ``df`` yields the same partitions every time it is computed (true for a
    file read; a shuffled input should be checkpointed first).

    Parameters
    ----------
    df
        Any DataFrame. A CSV read by :func:`read_table_spark` is also checked here for data rows
        with more fields than the header.
    source
        How to name the input in errors.

    Returns
    -------
    (pyspark.sql.DataFrame, int)
        The numbered DataFrame and its number of rows.

    Raises
    ------
    ContractError
        A CSV data row has more fields than the header (pandas refuses such a file too).
    """
    from pyspark.sql import functions as F

    tagged = df.select(
        "*", F.spark_partition_id().alias(_PID), F.monotonically_increasing_id().alias(_MID)
    )
    has_overflow = _OVERFLOW in df.columns
    aggregates = [F.count(F.lit(1)).alias("n")]
    if has_overflow:
        aggregates.append(
            F.min(F.when(F.col(_OVERFLOW).isNotNull(), F.col(_MID))).alias("first_overflow")
        )
    counts = {row[_PID]: row for row in tagged.groupBy(_PID).agg(*aggregates).collect()}
    sizes = [counts[p]["n"] if p in counts else 0 for p in range(max(counts, default=-1) + 1)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int64").tolist()
    if has_overflow:
        bad = [
            (p, r["first_overflow"]) for p, r in counts.items() if r["first_overflow"] is not None
        ]
        if bad:
            pid, mid = min(bad)
            row = offsets[pid] + (mid - (pid << 33)) + 1
            raise ContractError(
                f"{source} could not be read as csv (data row {row} has more fields than the "
                "header): check that it is a valid, uncorrupted table."
            )
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col(_PID) + 1)
    # monotonically_increasing_id = partition id << 33 | position within the partition.
    position = F.col(_MID) - F.shiftleft(F.col(_PID).cast("long"), 33)
    numbered = tagged.withColumn(ROW_NUMBER, offset + position + 1).drop(_PID, _MID)
    if has_overflow:
        numbered = numbered.drop(_OVERFLOW)
    return numbered, int(sum(sizes))


# ----------------------------------------------------------------------------------------------
# Scoring chunks on the executors
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Column names and Spark types of the input and of the combined per-chunk output."""

    input_names: tuple[str, ...]
    score_names: tuple[str, ...]
    score_types: tuple[DataType, ...]

    @property
    def score_slots(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.score_names))]

    @property
    def rejected_slots(self) -> list[str]:
        return [f"r{i}" for i in range(len(REJECTED_COLUMNS_DOC))]

    def output_schema(self) -> StructType:
        from pyspark.sql.types import (
            ByteType,
            LongType,
            StringType,
            StructField,
            StructType,
        )

        fields = [
            StructField(_KIND, ByteType()),
            StructField(_CHUNK, LongType()),
            StructField(_SEQ, LongType()),
        ]
        fields += [
            StructField(s, t) for s, t in zip(self.score_slots, self.score_types, strict=True)
        ]
        fields += [
            StructField(s, LongType() if s == "r0" else StringType()) for s in self.rejected_slots
        ]
        fields.append(StructField(_WARNING_COLUMN, StringType()))
        return StructType(fields)


def _layout(
    schema: StructType, probe: pd.DataFrame, model: RiskModel, mapping: SiteMapping | None
) -> _Layout:
    """Learn the score table's columns from a probe chunk; raises the table-level errors."""
    from pyspark.sql.types import DoubleType, StringType

    scores, _, _ = score_frame(probe.reset_index(drop=True), model, drivers=False, mapping=mapping)
    given = {f.name: f.dataType for f in schema.fields}
    types = []
    for name in scores.columns:
        if name in FLOAT_SCORE_COLUMNS:
            types.append(DoubleType())
        elif name in given and name not in SCORE_COLUMNS:
            types.append(given[name])  # an extra column, carried through untouched
        else:
            types.append(StringType())
    names = tuple(c for c in schema.names if c not in (_OVERFLOW, ROW_NUMBER))
    return _Layout(names, tuple(scores.columns), tuple(types))


class _ChunkScorer:
    """The per-chunk function: one whole chunk in, tagged score/rejected/warning rows out."""

    def __init__(
        self, model: RiskModel, layout: _Layout, drivers: bool, mapping: SiteMapping | None
    ) -> None:
        self.model = model
        self.layout = layout
        self.drivers = drivers
        self.mapping = mapping
        schema = layout.output_schema()
        self.columns = schema.names
        self.text_columns = [f.name for f in schema.fields if f.dataType.typeName() == "string"]

    def __call__(self, raw: pd.DataFrame, chunk: int, offset: int) -> pd.DataFrame:
        scores, rejected, found = score_frame(
            raw, self.model, drivers=self.drivers, row_offset=offset, mapping=self.mapping
        )
        if tuple(scores.columns) != self.layout.score_names:
            raise RuntimeError(
                f"chunk {chunk} scored into columns {list(scores.columns)}, expected "
                f"{list(self.layout.score_names)}"
            )
        rejected = rejected.assign(row_number=rejected["row_number"].astype("Int64"))
        parts = [
            _tag(scores, _SCORES, chunk, self.layout.score_slots),
            _tag(
                rejected[list(REJECTED_COLUMNS_DOC)], _REJECTED, chunk, self.layout.rejected_slots
            ),
            _tag(
                pd.DataFrame({"w": pd.Series(found, dtype="str")}),
                _WARNING,
                chunk,
                [_WARNING_COLUMN],
            ),
        ]
        out = pd.concat([p for p in parts if len(p)], ignore_index=True)
        return _for_arrow(out.reindex(columns=self.columns), self.text_columns)


def _for_arrow(frame: pd.DataFrame, text: list[str]) -> pd.DataFrame:
    """Text columns as Python objects with None for missing: pyspark 4.3 cannot send pandas 3
    ``str`` columns, nor all-missing float ones, as strings (``Cannot convert
    pyarrow.lib.ChunkedArray to pyarrow.lib.Array``)."""
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), None) for c in text})


def _tag(frame: pd.DataFrame, kind: int, chunk: int, slots: list[str]) -> pd.DataFrame:
    frame = frame.set_axis(slots, axis=1).reset_index(drop=True)
    return frame.assign(
        **{_KIND: np.int8(kind), _CHUNK: chunk, _SEQ: np.arange(len(frame), dtype="int64")}
    )


def _map_chunks(
    numbered: DataFrame,
    names: tuple[str, ...],
    function: Callable[[pd.DataFrame, int, int], pd.DataFrame],
    schema: StructType,
    chunk_size: int,
) -> DataFrame:
    """Apply ``function(raw, chunk, row_offset)`` to each chunk of ``chunk_size`` numbered rows.

    ``raw`` is the whole chunk in input order with the input's column names and a RangeIndex,
    as ``tableio.iter_table`` yields it to the pandas engine; ``row_offset`` is the number of
    rows before it.
    """
    from pyspark.sql import functions as F

    slots = [f"i{i}" for i in range(len(names))]
    chunked = numbered.select(
        *[F.col(_quoted(n)).alias(s) for n, s in zip(names, slots, strict=True)],
        F.col(ROW_NUMBER),
        F.expr(f"({ROW_NUMBER} - 1) div {int(chunk_size)}").alias(_CHUNK),
    )

    # Two arguments, so that applyInPandas passes the group key too (it counts the arguments).
    def run(key: tuple, pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(ROW_NUMBER, kind="stable")
        raw = pdf[slots].set_axis(list(names), axis=1).reset_index(drop=True)
        return function(raw, int(pdf[_CHUNK].iat[0]), int(pdf[ROW_NUMBER].iat[0]) - 1)

    with _quiet_pyspark():
        return chunked.groupBy(_CHUNK).applyInPandas(run, schema=schema)


def _score_chunks(
    numbered: DataFrame,
    layout: _Layout,
    model: RiskModel,
    *,
    drivers: bool,
    mapping: SiteMapping | None,
    chunk_size: int,
) -> DataFrame:
    """One row per score, rejected row and warning, tagged with kind, chunk and order."""
    scorer = _ChunkScorer(model, layout, drivers, mapping)
    return _map_chunks(numbered, layout.input_names, scorer, layout.output_schema(), chunk_size)


def _split(combined: DataFrame, layout: _Layout) -> tuple[DataFrame, DataFrame]:
    from pyspark.sql import functions as F

    order = [F.col(_CHUNK), F.col(_SEQ)]
    scores = (
        combined.filter(F.col(_KIND) == _SCORES)
        .orderBy(*order)
        .select(
            *[
                F.col(s).alias(n)
                for s, n in zip(layout.score_slots, layout.score_names, strict=True)
            ]
        )
    )
    rejected = (
        combined.filter(F.col(_KIND) == _REJECTED)
        .orderBy(*order)
        .select(
            *[
                F.col(s).alias(n)
                for s, n in zip(layout.rejected_slots, REJECTED_COLUMNS_DOC, strict=True)
            ]
        )
    )
    return scores, rejected


def score_spark(
    spark_df: DataFrame,
    model: str | Path | RiskModel,
    *,
    drivers: bool = True,
    mapping: str | Path | SiteMapping | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[DataFrame, DataFrame]:
    """Score a baseline table held in Spark: (score table, rejected table) as Spark DataFrames.

    Row for row the same as :func:`crsrisk.scoring.core.score_file` with the same ``chunk_size`` on
    the same rows in the same order: each chunk of ``chunk_size`` consecutive rows is validated
    and scored by :func:`crsrisk.scoring.core.score_frame` on an executor.

    Parameters
    ----------
    spark_df
        A baseline table (contract section 1): string columns as read from CSV, or typed
        columns. Its partition order is its row order; it must be reproducible (see
        :func:`number_rows`).
    model
        A registered model URI (``models:/crs-severe@champion``), an exported model directory,
        or a loaded RiskModel. It is loaded here, on the driver, and shipped to the executors.
    drivers
        Add the SHAP drivers (``top_drivers``); off is several times faster.
    mapping
        A site mapping (YAML path or loaded) applied to each chunk before validation.
    chunk_size
        Rows per chunk: patient_id uniqueness and the unit warnings are checked per chunk, as
        in the pandas engine.

    Returns
    -------
    (pyspark.sql.DataFrame, pyspark.sql.DataFrame)
        Scores (contract section 5, then the input's extra columns) and rejected rows
        (row_number, patient_id, column, check, value), each sorted by input row. Both come
        from one cached computation: ``unpersist`` is left to Spark's cache eviction or to
        ``spark.catalog.clearCache()``.

    Raises
    ------
    ContractError
        The table is empty or lacks a required column (checked on its first row, on the driver).
    """
    from pyspark import StorageLevel

    risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
    with _quiet_pyspark():
        probe = spark_df.limit(1).toPandas()
    layout = _layout(spark_df.schema, probe, risk_model, site_mapping)
    numbered, _ = number_rows(spark_df)
    combined = _score_chunks(
        numbered, layout, risk_model, drivers=drivers, mapping=site_mapping, chunk_size=chunk_size
    )
    combined = combined.persist(StorageLevel.MEMORY_AND_DISK)
    return _split(combined, layout)


# ----------------------------------------------------------------------------------------------
# Files: the backend of `crsrisk score --engine spark`
# ----------------------------------------------------------------------------------------------


class _NothingScored(Exception):
    """Every row was rejected: abandon the score file, keep the rejected one."""


@contextlib.contextmanager
def _sql_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def score_file_spark(
    input_path: str | Path,
    out: str | Path,
    *,
    model: str | Path | RiskModel,
    rejected_path: str | Path | None,
    drivers: bool,
    master: str,
    mapping: str | Path | SiteMapping | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timings: dict[str, float] | None = None,
) -> ScoreSummary:
    """Score a CSV or Parquet file on Spark into a score file and a rejected-rows file.

    The outputs are those of :func:`crsrisk.scoring.core.score_file` with the same ``chunk_size``
    (same columns, rows in input order, files that appear atomically, no score file when every
    row is rejected). Executors write their chunks to a temporary Parquet folder beside
    ``out``; the driver then appends them in order to the two files, so ``out``'s folder must be
    on a file system that the driver and every executor share (any folder in local mode).

    Parameters
    ----------
    input_path
        A .csv, .csv.gz, .parquet or .pq file readable from the driver and the executors.
    out
        Where to write the score table (CSV or Parquet by extension).
    model
        A registered model URI, an exported model directory, or a loaded RiskModel.
    rejected_path
        Where to write the rejected rows; None: ``<out stem>.rejected.csv`` beside ``out``.
    drivers
        Add the SHAP drivers.
    master
        Spark master URL for a new session, e.g. ``local[2]``; an active session is reused as
        it is (and then not stopped at the end).
    mapping
        A site mapping (YAML path or loaded), or None.
    chunk_size
        Rows per chunk, as ``crsrisk score --chunk-size``.
    timings
        If given, filled with the wall-clock seconds of each phase: ``load`` (model, input
        probe), ``start_up`` (Spark session), ``number_rows`` (the counting pass), ``score``
        (the distributed validation and scoring job), ``write`` (the two output files).

    Returns
    -------
    ScoreSummary

    Raises
    ------
    ContractError
        Unusable input (missing, empty, unreadable, a required column missing), or every row
        rejected (the rejected file is written first).
    ModelError
        The model cannot be loaded.
    SparkEngineError
        pyspark or Java is missing, or the session cannot start.
    """
    start = time.perf_counter()
    timings = {} if timings is None else timings
    input_path, out = Path(input_path), Path(out)
    table_format(out)
    rejected_path = Path(rejected_path) if rejected_path else sibling_path(out, "rejected")
    table_format(rejected_path)
    probe = _probe_file(input_path)  # unusable files fail here, before Spark starts
    risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
    if probe is not None:
        # An empty table, a missing required column...: the pandas engine's own error.
        score_frame(probe, risk_model, drivers=False, mapping=site_mapping)
    summary = ScoreSummary(model=f"{risk_model.name} v{risk_model.version}")
    timings["load"] = time.perf_counter() - start

    mark = time.perf_counter()
    _import_pyspark()
    from pyspark.sql import SparkSession

    owned = SparkSession.getActiveSession() is None
    spark = spark_session(master)
    timings["start_up"] = time.perf_counter() - mark
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.spark-{uuid.uuid4().hex[:12]}"
    try:
        names: tuple[str, ...] = ()
        if probe is not None:
            with _sql_conf(
                spark,
                {
                    "spark.sql.legacy.parquet.nanosAsLong": "true",
                    "spark.sql.session.timeZone": "UTC",
                },
            ):
                names = _score_to_staging(
                    spark,
                    input_path,
                    probe,
                    staging,
                    risk_model,
                    site_mapping,
                    drivers,
                    chunk_size,
                    summary,
                    timings,
                )
        mark = time.perf_counter()
        _write_outputs(staging, names, out, rejected_path, summary)
        timings["write"] = time.perf_counter() - mark
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owned:
            spark.stop()
    return finish_summary(summary, input_path, rejected_path, start)


def _score_to_staging(
    spark: SparkSession,
    input_path: Path,
    probe: pd.DataFrame,
    staging: Path,
    risk_model: RiskModel,
    mapping: SiteMapping | None,
    drivers: bool,
    chunk_size: int,
    summary: ScoreSummary,
    timings: dict[str, float],
) -> tuple[str, ...]:
    """Run the distributed job into ``staging``; returns the score table's column names."""
    from pyspark.errors import PySparkException

    mark = time.perf_counter()
    try:
        frame = read_table_spark(spark, input_path)
        layout = _layout(frame.schema, probe, risk_model, mapping)
        numbered, summary.n_read = number_rows(frame, source=str(input_path))
    except PySparkException as exc:
        raise ContractError(
            f"{input_path} could not be read as {table_format(input_path)} by Spark "
            f"({exc.getCondition() or type(exc).__name__}): check that it is a valid, "
            "uncorrupted table."
        ) from exc
    timings["number_rows"] = time.perf_counter() - mark
    mark = time.perf_counter()
    combined = _score_chunks(
        numbered, layout, risk_model, drivers=drivers, mapping=mapping, chunk_size=chunk_size
    )
    combined.write.partitionBy(_CHUNK).parquet(_uri(staging))
    timings["score"] = time.perf_counter() - mark
    return layout.score_names


def _staged_chunks(staging: Path) -> Iterator[pd.DataFrame]:
    """The staged chunks in input order, each as one _ChunkScorer call returned it."""
    found = sorted((int(p.name.split("=", 1)[1]), p) for p in staging.glob(f"{_CHUNK}=*"))
    for _, folder in found:
        yield pq.read_table(folder).to_pandas().sort_values([_KIND, _SEQ], kind="stable")


def _write_outputs(
    staging: Path, names: tuple[str, ...], out: Path, rejected_path: Path, summary: ScoreSummary
) -> None:
    """Append the staged chunks to the score and rejected files, as score_file does."""
    score_slots = [f"s{i}" for i in range(len(names))]
    rejected_slots = [f"r{i}" for i in range(len(REJECTED_COLUMNS_DOC))]
    with TableWriter(rejected_path) as rejected_out:
        rejected_out.write(empty_rejected().iloc[:0])
        try:
            with TableWriter(out) as scores_out:
                for chunk in _staged_chunks(staging) if names else ():
                    kind = chunk[_KIND]
                    scores = chunk.loc[kind == _SCORES, score_slots].set_axis(list(names), axis=1)
                    rejected = (
                        chunk.loc[kind == _REJECTED, rejected_slots]
                        .set_axis(list(REJECTED_COLUMNS_DOC), axis=1)
                        .astype({"row_number": "int64"})
                    )
                    summary.add(scores["risk_tier"].value_counts(), rejected,
                                chunk.loc[kind == _WARNING, _WARNING_COLUMN])
                    if len(scores):
                        scores_out.write(scores.reset_index(drop=True))
                    if len(rejected):
                        rejected_out.write(rejected.reset_index(drop=True))
                if summary.n_scored == 0:
                    raise _NothingScored
        except _NothingScored:
            pass  # the rejected table is still written; the score file is not
