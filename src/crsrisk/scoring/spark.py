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

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from crsrisk.contract.load import site_read_options
from crsrisk.contract.mapping import SiteMapping, load_mapping
from crsrisk.contract.spec import REJECTED_COLUMNS_DOC
from crsrisk.errors import ContractError
from crsrisk.io import CsvDialect, decimal_points, sniff_csv, table_format
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, SCORE_COLUMNS, RiskModel
from crsrisk.scoring.core import (
    DEFAULT_CHUNK_SIZE,
    chunk_scores,
    prepare,
    resolve_model_and_mapping,
    score_frame,
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
from crsrisk.scoring.spark_read import (
    OVERFLOW,
    ROW_NUMBER,
    SparkEngineError,
    import_pyspark,
    number_rows,
    probe_file,
    quiet_pyspark,
    quoted,
    read_table_spark,
    spark_session,
    uri,
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

_CHUNK, _KIND, _SEQ = "_crsrisk_chunk", "_crsrisk_kind", "_crsrisk_seq"
# Rows of the combined per-chunk output: scores, rejected rows, warnings, and the chunk's
# scored patients per (therapy_class, tier) as JSON in the warning column.
_SCORES, _REJECTED, _WARNING, _COUNTS = 0, 1, 2, 3
_WARNING_COLUMN = "w0"


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
    names = tuple(c for c in schema.names if c not in (OVERFLOW, ROW_NUMBER))
    return _Layout(names, tuple(scores.columns), tuple(types))


class _ChunkScorer:
    """The per-chunk function: one whole chunk in, tagged score/rejected/warning rows out."""

    def __init__(
        self,
        model: RiskModel,
        layout: _Layout,
        drivers: bool,
        mapping: SiteMapping | None,
        strict: bool = False,
        dialect: CsvDialect | None = None,
    ) -> None:
        self.model = model
        self.layout = layout
        self.drivers = drivers
        self.mapping = mapping
        self.strict = strict
        self.dialect = dialect
        schema = layout.output_schema()
        self.columns = schema.names
        self.text_columns = [f.name for f in schema.fields if f.dataType.typeName() == "string"]

    def __call__(self, raw: pd.DataFrame, chunk: int, offset: int) -> pd.DataFrame:
        if self.dialect is not None:  # Spark's CSV reader leaves decimal commas as written
            raw = decimal_points(raw, self.dialect)
        prepared = prepare(raw, row_offset=offset, mapping=self.mapping, strict=self.strict)
        scores, rejected, found = (
            chunk_scores(prepared, self.model, self.drivers), prepared.rejected, prepared.warnings
        )
        counts = [json.dumps([*key, int(n)]) for key, n in
                  class_tier_counts(scores, prepared.valid["therapy_class"]).items()]
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
            _tag(pd.DataFrame({"w": pd.Series(counts, dtype="str")}), _COUNTS, chunk,
                 [_WARNING_COLUMN]),
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
        *[F.col(quoted(n)).alias(s) for n, s in zip(names, slots, strict=True)],
        F.col(ROW_NUMBER),
        F.expr(f"({ROW_NUMBER} - 1) div {int(chunk_size)}").alias(_CHUNK),
    )

    # Two arguments, so that applyInPandas passes the group key too (it counts the arguments).
    def run(key: tuple, pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(ROW_NUMBER, kind="stable")
        raw = pdf[slots].set_axis(list(names), axis=1).reset_index(drop=True)
        return function(raw, int(pdf[_CHUNK].iat[0]), int(pdf[ROW_NUMBER].iat[0]) - 1)

    with quiet_pyspark():
        return chunked.groupBy(_CHUNK).applyInPandas(run, schema=schema)


def _score_chunks(
    numbered: DataFrame,
    layout: _Layout,
    model: RiskModel,
    *,
    drivers: bool,
    mapping: SiteMapping | None,
    chunk_size: int,
    strict: bool = False,
    dialect: CsvDialect | None = None,
) -> DataFrame:
    """One row per score, rejected row and warning, tagged with kind, chunk and order."""
    scorer = _ChunkScorer(model, layout, drivers, mapping, strict, dialect)
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
    strict: bool = False,
) -> tuple[DataFrame, DataFrame]:
    """Score a baseline table held in Spark: (score table, rejected table) as Spark DataFrames.

    Row for row the same as :func:`crsrisk.scoring.batch.score_file` with the same ``chunk_size`` on
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
    strict
        Reject a row with an implausible laboratory value instead of blanking the value.

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
    with quiet_pyspark():
        probe = spark_df.limit(1).toPandas()
    layout = _layout(spark_df.schema, probe, risk_model, site_mapping)
    numbered, _ = number_rows(spark_df)
    combined = _score_chunks(
        numbered, layout, risk_model, drivers=drivers, mapping=site_mapping,
        chunk_size=chunk_size, strict=strict,
    )
    combined = combined.persist(StorageLevel.MEMORY_AND_DISK)
    return _split(combined, layout)


# ----------------------------------------------------------------------------------------------
# Files: the backend of `crsrisk score --engine spark`
# ----------------------------------------------------------------------------------------------


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
    strict: bool = False,
    sheet: str | None = None,
) -> ScoreSummary:
    """Score a CSV or Parquet file on Spark into a score file and a rejected-rows file.

    The outputs are those of :func:`crsrisk.scoring.batch.score_file` with the same ``chunk_size``
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
    strict
        Reject a row with an implausible laboratory value instead of blanking the value.
    sheet
        Accepted for the same refusals as the pandas engine: Spark reads no Excel workbook, so
        an Excel input (with or without ``sheet``) is refused, and ``sheet`` on a CSV or
        Parquet file is refused as there.

    Returns
    -------
    ScoreSummary

    Raises
    ------
    ContractError
        Unusable input (missing, empty, unreadable, a required column missing, an Excel
        workbook), or every row rejected (the rejected file is written first).
    ModelError
        The model cannot be loaded.
    SparkEngineError
        pyspark or Java is missing, or the session cannot start.
    """
    start = time.perf_counter()
    timings = {} if timings is None else timings
    check_chunk_size(chunk_size)
    input_path, out = Path(input_path), Path(out)
    rejected_path = Path(rejected_path) if rejected_path else sibling_path(out, "rejected")
    check_outputs(input_path, out, rejected_path, mapping)
    if table_format(input_path) == "excel":
        raise ContractError(
            f"--engine spark reads CSV and Parquet files, and {input_path} is an Excel workbook: "
            "score it with --engine pandas (a sheet holds at most 1,048,576 rows), or save the "
            "sheet as CSV."
        )
    if sheet is not None:
        raise ContractError(f"--sheet applies to Excel files only, and {input_path} is "
                            f"{table_format(input_path)}.")
    with no_stale_outputs(out, rejected_path):
        summary = _score_file_on_spark(input_path, out, rejected_path, model, mapping, drivers,
                                       master, chunk_size, timings, start, strict)
    return finish_summary(summary, input_path, rejected_path, start, out=out)


def _score_file_on_spark(
    input_path: Path,
    out: Path,
    rejected_path: Path,
    model: str | Path | RiskModel,
    mapping: str | Path | SiteMapping | None,
    drivers: bool,
    master: str,
    chunk_size: int,
    timings: dict[str, float],
    start: float,
    strict: bool,
) -> ScoreSummary:
    """score_file_spark once its outputs are checked: start Spark, score, write."""
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    dialect = None
    if table_format(input_path) == "csv":  # the mapping's delimiter and decimal mark, or sniffed
        dialect = site_read_options(input_path, mapping)["dialect"] or sniff_csv(input_path)
    probe = probe_file(input_path, dialect)  # unusable files fail here, before Spark starts
    risk_model, site_mapping = resolve_model_and_mapping(model, mapping)
    if probe is not None:
        # An empty table, a missing required column...: the pandas engine's own error.
        score_frame(probe, risk_model, drivers=False, mapping=site_mapping)
    summary = ScoreSummary(model=f"{risk_model.name} v{risk_model.version}")
    timings["load"] = time.perf_counter() - start

    mark = time.perf_counter()
    import_pyspark()
    from pyspark.sql import SparkSession

    owned = SparkSession.getActiveSession() is None
    spark = spark_session(master)
    timings["start_up"] = time.perf_counter() - mark
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.spark-{uuid.uuid4().hex[:12]}"
    try:
        names: tuple[str, ...] = ()
        if probe is not None:
            settings = {"spark.sql.legacy.parquet.nanosAsLong": "true",
                        "spark.sql.session.timeZone": "UTC"}
            with _sql_conf(spark, settings):
                names = _score_to_staging(spark, input_path, probe, staging, risk_model,
                                          site_mapping, drivers, chunk_size, summary, timings,
                                          strict, dialect)
        mark = time.perf_counter()
        _write_outputs(staging, names, out, rejected_path, summary)
        timings["write"] = time.perf_counter() - mark
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owned:
            spark.stop()
    return summary


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
    strict: bool,
    dialect: CsvDialect | None,
) -> tuple[str, ...]:
    """Run the distributed job into ``staging``; returns the score table's column names."""
    from pyspark.errors import PySparkException

    mark = time.perf_counter()
    try:
        frame = read_table_spark(spark, input_path, dialect)
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
        numbered, layout, risk_model, drivers=drivers, mapping=mapping, chunk_size=chunk_size,
        strict=strict, dialect=dialect,
    )
    combined.write.partitionBy(_CHUNK).parquet(uri(staging))
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
    with ScoreOutputs(out, rejected_path, summary) as outputs:
        for chunk in _staged_chunks(staging) if names else ():
            kind = chunk[_KIND]
            scores = chunk.loc[kind == _SCORES, score_slots].set_axis(list(names), axis=1)
            rejected = (
                chunk.loc[kind == _REJECTED, rejected_slots]
                .set_axis(list(REJECTED_COLUMNS_DOC), axis=1)
                .astype({"row_number": "int64"})
            )
            counts = [json.loads(c) for c in chunk.loc[kind == _COUNTS, _WARNING_COLUMN]]
            class_tiers = pd.Series({(c, t): n for c, t, n in counts}, dtype="int64")
            outputs.count(class_tiers, rejected, chunk.loc[kind == _WARNING, _WARNING_COLUMN])
            outputs.write(scores.reset_index(drop=True), rejected.reset_index(drop=True))
