"""Reading and writing the pipeline's tables: CSV or Parquet chosen by extension, atomic writes."""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import gzip
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from crsrisk.errors import ContractError, EnvironmentFault

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "FORMULA_PREFIXES",
    "PLAIN_NUMBER",
    "table_format",
    "read_table",
    "iter_table",
    "neutralise_formulas",
    "atomic_path",
    "WRITE_FAULTS",
    "write_fault",
    "remove_stale_temporaries",
    "write_table",
    "TableWriter",
]

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Cells starting with these are run as formulas by spreadsheet programs (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# The cells pd.read_csv reads as missing.
_NA_WORDS = pa.array(sorted(STR_NA_VALUES), pa.large_string())


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
    """CSV cells as text, as ``pd.read_csv(dtype=str, skipinitialspace=True)`` reads them.

    Arrow's parser is tried first (several times faster); whatever it refuses (short rows,
    invalid UTF-8, duplicated column names, a quoted cell after spaces) is read by pandas from
    the first row Arrow did not deliver, so both give the same frames.
    """
    delivered = 0
    try:
        for frame in _iter_csv_arrow(path, chunk_size):
            yield frame
            delivered += len(frame)
    except _ArrowDeclined:
        yield from _iter_csv_pandas(path, chunk_size, skip=delivered)


class _ArrowDeclined(Exception):
    """Arrow cannot read this CSV exactly as pandas would: let pandas read it."""


def _iter_csv_pandas(path: Path, chunk_size: int | None, skip: int = 0) -> Iterator[pd.DataFrame]:
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
        yield reader.iloc[skip:] if skip else reader
        return
    with reader:
        for frame in reader:
            if skip and frame.index[-1] < skip:
                continue
            yield frame[frame.index >= skip] if skip else frame


def _csv_header(path: Path) -> list[str]:
    """The column names as pandas reads them (byte-order mark and leading spaces dropped)."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle, skipinitialspace=True), [])


def _iter_csv_arrow(path: Path, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    try:
        names = _csv_header(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _ArrowDeclined from exc
    if not names or len(set(names)) < len(names):
        raise _ArrowDeclined  # pandas' own messages, and its renaming of duplicated names
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=1),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            # large_string is what pandas' str dtype holds: no conversion per chunk.
            column_types=dict.fromkeys(names, pa.large_string()),
            null_values=sorted(STR_NA_VALUES),
            strings_can_be_null=True,
        ),
    }
    try:
        if chunk_size is None:
            table = pacsv.read_csv(path, **options)
            yield _like_pandas(table.combine_chunks(), 0)
            return
        start, pending, rows = 0, [], 0
        for batch in pacsv.open_csv(path, **options):
            pending.append(batch)
            rows += batch.num_rows
            while rows >= chunk_size:
                table = pa.Table.from_batches(pending)
                yield _like_pandas(table.slice(0, chunk_size), start)
                start += chunk_size
                rest = table.slice(chunk_size)
                pending, rows = rest.to_batches(), rest.num_rows
        if rows or start == 0:
            yield _like_pandas(pa.Table.from_batches(pending, schema=_text_schema(names)), start)
    except pa.ArrowInvalid as exc:
        raise _ArrowDeclined from exc


def _text_schema(names: list[str]) -> pa.Schema:
    return pa.schema([(name, pa.large_string()) for name in names])


def _like_pandas(table: pa.Table, start: int) -> pd.DataFrame:
    """A text table as pandas' reader gives it: leading spaces skipped, index from ``start``."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        spaced = pc.starts_with(column, " ")
        if pc.any(spaced).as_py():
            trimmed = pc.utf8_ltrim(column, characters=" ")
            if pc.any(pc.and_(spaced, pc.starts_with(trimmed, '"'))).as_py():
                raise _ArrowDeclined  # pandas unquotes a quoted cell after spaces
            is_na = pc.is_in(trimmed, value_set=_NA_WORDS)
            column = pc.if_else(is_na, pa.scalar(None, pa.large_string()), trimmed)
        columns[name] = column
    frame = pa.table(columns).to_pandas() if columns else pd.DataFrame()
    frame.index = pd.RangeIndex(start, start + table.num_rows)
    return frame


# Parquet integers and booleans as pandas' nullable types: by default a chunk with a missing
# value would turn an integer column into float (inexact beyond 2**53) and booleans into
# objects, so that chunks of one file would differ in type.
_NULLABLE = {
    **{getattr(pa, f"{sign}int{bits}")(): pd.api.types.pandas_dtype(f"{sign.upper()}Int{bits}")
       for sign in ("", "u") for bits in (8, 16, 32, 64)},
    pa.bool_(): pd.BooleanDtype(),
}


def _iter_parquet(path: Path, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    file = pq.ParquetFile(path)
    if chunk_size is None:
        yield file.read().to_pandas(types_mapper=_NULLABLE.get)
        return
    start = 0
    for batch in file.iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas(types_mapper=_NULLABLE.get)
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
            # A signed number ("-3", "+1.5e3") is no formula: carried data stays as it was.
            risky &= ~text.str.fullmatch(PLAIN_NUMBER).fillna(False).astype(bool)
        if risky.any():
            if out is df:
                out = df.copy()
            out[name] = text.where(~risky, "'" + text).where(col.notna())
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto ``path`` if the block succeeds.

    The temporary file is hidden and carries the writer's process id
    (``.NAME.PID.RANDOM.tmp``), so that `remove_stale_temporaries` can tell a killed writer's
    leftovers from a running writer's file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise write_fault(path, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); the output gets the usual permissions instead.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        # Only faults of this output: an error about another file (an input) is not ours.
        if exc.errno in WRITE_FAULTS and exc.filename in (None, str(tmp_path), str(path)):
            raise write_fault(path, exc) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


# errno values that mean the machine cannot hold an output, whatever the input.
WRITE_FAULTS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                          errno.ENOTDIR, errno.EISDIR, errno.EEXIST})


def write_fault(path: str | Path, exc: OSError) -> EnvironmentFault:
    """One sentence saying why ``path`` cannot be written and what to do about it.

    Parameters
    ----------
    path
        The output that was being written.
    exc
        The error the operating system gave.

    Returns
    -------
    EnvironmentFault
        For the caller to raise (the CLI exits 3 with its message).
    """
    path = Path(path)
    folder = path.parent
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk holding {folder} is full: free some space or choose another folder."
    elif code == errno.EROFS:
        why = f"{folder} is on a read-only file system: choose a folder you can write to."
    elif code in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       folder)
        why = f"{blocker} is a file, not a folder: choose another output path."
    elif code == errno.EISDIR or path.is_dir():
        why = f"{path} is a folder: give a file name."
    elif code in (errno.EACCES, errno.EPERM):
        why = (f"permission to write in {folder} is denied: choose a folder you can write to, "
               "or ask for write access.")
    else:
        why = f"{exc.strerror or exc}: check the folder {folder}."
    return EnvironmentFault(f"Cannot write {path}: {why}")


def _umask() -> int:
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # no race-free way here; done once, at import
        os.umask(mask)
        return mask


_UMASK = _umask()


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left beside it.

    Only files named by `atomic_path` whose writer process no longer exists are removed, so a
    concurrent writer is never disturbed. Returns the removed paths.
    """
    path = Path(path)
    removed = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = candidate.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _process_exists(int(pid)):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension)."""
    with TableWriter(path) as writer:
        writer.write(df)


class TableWriter:
    """Append chunks to one CSV or Parquet file, made visible atomically on a clean close."""

    def __init__(self, path: str | Path, schema: pa.Schema | None = None,
                 plain: Sequence[str] = ()) -> None:
        """``schema``: the Parquet schema of every chunk (default: the first chunk's).

        ``plain``: Parquet columns of (nearly) all-distinct values, written without the
        dictionary that Arrow would otherwise build for them and then abandon.
        """
        self.path = Path(path)
        self.format = table_format(self.path)
        self._atomic = atomic_path(self.path)
        self._tmp: Path | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = schema
        self._wrote_header = False
        self._plain = frozenset(plain)

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
            dictionary = [n for n in self._schema.names if n not in self._plain]
            self._parquet = pq.ParquetWriter(self._tmp, self._schema, use_dictionary=dictionary)
        self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.format == "parquet" and exc_type is None and self._tmp is not None:
            pq.write_table(pa.table({}), self._tmp)
        return self._atomic.__exit__(exc_type, exc, tb)
