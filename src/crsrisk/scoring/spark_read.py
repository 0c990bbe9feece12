"""Spark's side of the Spark engine: the session, reading a file as the pandas engine reads it,
and numbering rows in input order (see :mod:`crsrisk.scoring.spark`)."""

from __future__ import annotations

import codecs
import contextlib
import gzip
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from crsrisk.errors import ContractError, CrsriskError
from crsrisk.io import CsvDialect, iter_table, sniff_csv, table_format

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "OVERFLOW",
    "ROW_NUMBER",
    "SparkEngineError",
    "import_pyspark",
    "number_rows",
    "probe_file",
    "quiet_pyspark",
    "quoted",
    "read_table_spark",
    "spark_session",
    "uri",
]

ROW_NUMBER = "_crsrisk_row"  # 1-based input row, added by number_rows
OVERFLOW = "_crsrisk_overflow"
_PID, _MID = "_p", "_m"
# pandas' default missing-value words: pd.read_csv (tableio.iter_table) turns these cells into
# NaN, Spark's CSV reader keeps them as text, so the Spark reader maps them to null itself.
_NA_WORDS = sorted(STR_NA_VALUES)
# Spark must never read an empty cell as null by itself (it could then not tell a trailing empty
# field from a missing one); empty text becomes null through _NA_WORDS like in pandas.
_NEVER = "\u0000crsrisk-never\u0000"


class SparkEngineError(CrsriskError):
    """The Spark engine cannot run here (pyspark or Java missing, the session cannot start)."""


@contextlib.contextmanager
def quiet_pyspark() -> Iterator[None]:
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


def import_pyspark() -> None:
    try:
        with quiet_pyspark():
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
    import_pyspark()
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
        with quiet_pyspark():
            session = builder.getOrCreate()
    except PySparkException as exc:
        raise SparkEngineError(
            f"Spark could not start on {master} ({exc.getCondition() or type(exc).__name__}): "
            "check that Java 17 or newer is installed (java -version, JAVA_HOME) and the master "
            "URL is right."
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def uri(path: Path) -> str:
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


def read_table_spark(
    spark: SparkSession, path: str | Path, dialect: CsvDialect | None = None
) -> DataFrame:
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
    dialect
        The CSV delimiter (default sniffed as the pandas engine does). A decimal comma is not
        rewritten here: the per-chunk function does it (``crsrisk.io.decimal_points``).

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
    probe = probe_file(path, dialect)
    if fmt == "csv":
        _check_utf8(path)
        dialect = dialect or sniff_csv(path)
        names = [str(c) for c in (probe.columns if probe is not None else ())]
        schema = StructType([StructField(n, StringType()) for n in [*names, OVERFLOW]])
        frame = spark.read.csv(
            uri(path),
            schema=schema,
            header=True,
            sep=dialect.delimiter,
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
                F.when(F.col(quoted(n)).isin(_NA_WORDS), None)
                .otherwise(F.col(quoted(n)))
                .alias(n)
                for n in names
            ],
            F.col(OVERFLOW),
        )
    arrow = pq.read_schema(path)
    nanos = {f.name: f.type for f in arrow if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
    if nanos:
        # Spark refuses nanosecond timestamps unless told to read them as integers.
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    frame = spark.read.parquet(uri(path))
    if not nanos:
        return frame
    converted = []
    for name in frame.columns:
        column = F.col(quoted(name))
        if name in nanos:
            # Floor to the microsecond (pmod keeps it exact for instants before 1970).
            micros = f"({quoted(name)} - pmod({quoted(name)}, 1000)) div 1000"
            if nanos[name].tz is None:  # wall-clock time: no session time zone involved
                column = F.expr(
                    f"timestampadd(MICROSECOND, {micros}, TIMESTAMP_NTZ'1970-01-01 00:00:00')"
                )
            else:
                column = F.expr(f"timestamp_micros({micros})")
        converted.append(column.alias(name))
    return frame.select(*converted)


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def probe_file(path: Path, dialect: CsvDialect | None = None) -> pd.DataFrame | None:
    """The first row as the pandas engine reads it (raises its errors for unusable files).

    None when the reader yields no chunk at all (a Parquet file without rows); a CSV file with
    only a header yields an empty chunk, which validation then refuses, as in the pandas engine.
    """
    try:
        return next(iter_table(path, chunk_size=1, dialect=dialect))
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
    has_overflow = OVERFLOW in df.columns
    aggregates = [F.count(F.lit(1)).alias("n")]
    if has_overflow:
        aggregates.append(
            F.min(F.when(F.col(OVERFLOW).isNotNull(), F.col(_MID))).alias("first_overflow")
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
        numbered = numbered.drop(OVERFLOW)
    return numbered, int(sum(sizes))
