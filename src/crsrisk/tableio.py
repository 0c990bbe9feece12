"""Reading and writing the pipeline's tables: CSV or Parquet chosen by extension, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crsrisk.errors import ContractError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Cells starting with these are run as formulas by spreadsheet programs (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def table_format(path: str | Path) -> str:
    """Return "csv" or "parquet" from the file name, or raise ContractError for anything else."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ContractError(
        f"{path} is neither CSV nor Parquet: give a file ending in .csv, .csv.gz or .parquet."
    )


def _unreadable(path: Path, exc: Exception) -> ContractError:
    if isinstance(exc, UnicodeDecodeError):
        return ContractError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded): "
            "re-save it as a UTF-8 CSV or as Parquet."
        )
    if isinstance(exc, pd.errors.EmptyDataError):
        return ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    return ContractError(
        f"{path} could not be read as {table_format(path)} ({type(exc).__name__}): "
        "check that it is a valid, uncorrupted table."
    )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ContractError(f"{path} does not exist: check the path.")
    if path.is_dir():
        raise ContractError(f"{path} is a directory: give a CSV or Parquet file.")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a whole table. CSV cells are read as text, so the contract parser sees them as given."""
    return pd.concat(list(iter_table(path, chunk_size=None)), ignore_index=True)


def iter_table(path: str | Path, chunk_size: int | None = 100_000) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of at most ``chunk_size`` rows (one chunk when None).

    Each chunk keeps a RangeIndex continuing from the previous one, so that index + 1 is the
    1-based data row of the file.
    """
    path = Path(path)
    fmt = table_format(path)
    _check_exists(path)
    if path.stat().st_size == 0:
        raise ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    try:
        if fmt == "csv":
            yield from _iter_csv(path, chunk_size)
        else:
            yield from _iter_parquet(path, chunk_size)
    except ContractError:
        raise
    except (ValueError, OSError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise _unreadable(path, exc) from exc


def _iter_csv(path: Path, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    # utf-8-sig also accepts the byte-order mark that spreadsheet exports add.
    reader = pd.read_csv(
        path,
        dtype=str,
        encoding="utf-8-sig",
        chunksize=chunk_size,
        skipinitialspace=True,
        on_bad_lines="error",
    )
    if chunk_size is None:
        yield reader
        return
    with reader:
        yield from reader


def _iter_parquet(path: Path, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    file = pq.ParquetFile(path)
    if chunk_size is None:
        yield file.read().to_pandas()
        return
    start = 0
    for batch in file.iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield frame


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a single quote."""
    out = df
    for name in df.columns:
        col = df[name]
        if not (pd.api.types.is_string_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype)):
            continue
        text = col.astype("str")
        risky = text.str.startswith(FORMULA_PREFIXES) & col.notna()
        if risky.any():
            if out is df:
                out = df.copy()
            out[name] = text.where(~risky, "'" + text).where(col.notna())
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension)."""
    with TableWriter(path) as writer:
        writer.write(df)


class TableWriter:
    """Append chunks to one CSV or Parquet file, made visible atomically on a clean close."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = table_format(self.path)
        self._atomic = atomic_path(self.path)
        self._tmp: Path | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._wrote_header = False

    def __enter__(self) -> TableWriter:
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, df: pd.DataFrame) -> None:
        assert self._tmp is not None, "use TableWriter as a context manager"
        if self.format == "csv":
            neutralise_formulas(df).to_csv(
                self._tmp,
                mode="a" if self._wrote_header else "w",
                header=not self._wrote_header,
                index=False,
                compression="gzip" if str(self.path).endswith(".gz") else None,
            )
            self._wrote_header = True
            return
        table = pa.Table.from_pandas(df, preserve_index=False, schema=self._schema)
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self._tmp, self._schema)
        self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.format == "parquet" and exc_type is None and self._tmp is not None:
            pq.write_table(pa.table({}), self._tmp)
        return self._atomic.__exit__(exc_type, exc, tb)
