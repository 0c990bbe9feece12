"""Reading and writing the pipeline's tables: CSV (any common delimiter, decimal commas, gzip),
Excel or Parquet chosen by extension; atomic writes.

A CSV row with too few or too many fields is never padded or cut: it is delivered as a row of
missing values and named in the frame's ``attrs[BAD_ROWS]`` ({row position: what is wrong}), so
that validation rejects it with its row number and the counts of a file stay whole.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import errno
import glob
import gzip
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    "EXCEL_SUFFIXES",
    "PARQUET_SUFFIXES",
    "BAD_ROWS",
    "CsvDialect",
    "sniff_csv",
    "decimal_points",
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
    "check_distinct_paths",
    "write_table",
    "TableWriter",
]

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")
PARQUET_SUFFIXES = (".parquet", ".pq")
# frame.attrs key: {0-based row position in the file: why that row could not be read}.
BAD_ROWS = "crsrisk.bad_rows"
DELIMITERS = (",", ";", "\t", "|")
# A number written with a decimal comma (1,5 or -0,25), as many European exports do.
_DECIMAL_COMMA = r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?"
# Cells starting with these are run as formulas by spreadsheet programs (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# The cells pd.read_csv reads as missing.
_NA_WORDS = pa.array(sorted(STR_NA_VALUES), pa.large_string())


def table_format(path: str | Path) -> str:
    """Return "csv", "excel" or "parquet" from the file name; ContractError for anything else."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(EXCEL_SUFFIXES):
        return "excel"
    raise ContractError(
        f"{path} is neither CSV, Excel nor Parquet: give a file ending in .csv, .csv.gz, .xlsx, "
        ".xls or .parquet."
    )


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is written: its field delimiter and decimal mark."""

    delimiter: str = ","
    decimal: str = "."

    def describe(self) -> str:
        names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
        mark = "decimal comma" if self.decimal == "," else "decimal point"
        return f"{names.get(self.delimiter, repr(self.delimiter))}-separated, {mark}"


def _open_text(path: Path):
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    # utf-8-sig also accepts the byte-order mark that spreadsheet exports add.
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def sniff_csv(path: str | Path, sample_bytes: int = 65_536) -> CsvDialect:
    """The delimiter (the one splitting the header into most fields) and the decimal mark (a
    comma where a non-comma-separated file holds numbers such as ``1,5``) of a CSV file."""
    path = Path(path)
    try:
        with _open_text(path) as handle:
            sample = handle.read(sample_bytes)
    except (UnicodeDecodeError, OSError, EOFError):
        return CsvDialect()  # the reader then reports the file as unreadable
    lines = sample.splitlines()
    header = lines[0] if lines else ""

    def fields(delimiter: str) -> int:
        return len(next(csv.reader([header], delimiter=delimiter), []))

    delimiter = max(DELIMITERS, key=lambda d: (fields(d), d == ","))
    decimal = "."
    if delimiter != ",":
        body = lines[1:-1] if len(lines) > 2 else lines[1:]
        cells = (c.strip() for row in csv.reader(body, delimiter=delimiter) for c in row)
        if any(re.fullmatch(_DECIMAL_COMMA, c) for c in cells):
            decimal = ","
    return CsvDialect(delimiter, decimal)


def _unreadable(path: Path, exc: Exception) -> ContractError:
    if isinstance(exc, UnicodeDecodeError):
        return ContractError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded): "
            "re-save it as a UTF-8 CSV or as Parquet."
        )
    if isinstance(exc, pd.errors.EmptyDataError):
        return ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    if isinstance(exc, csv.Error):
        return ContractError(f"{path} is not a well-formed CSV file ({exc}): check its quoting.")
    return ContractError(
        f"{path} could not be read as {table_format(path)} ({type(exc).__name__}): "
        "check that it is a valid, uncorrupted table."
    )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ContractError(f"{path} does not exist: check the path.")
    if path.is_dir():
        raise ContractError(f"{path} is a directory: give a CSV, Excel or Parquet file.")


def read_table(
    path: str | Path,
    *,
    sheet: str | None = None,
    dialect: CsvDialect | None = None,
) -> pd.DataFrame:
    """Read a whole table. CSV and Excel cells are read as text, so that the contract parser
    sees them as given; unreadable rows are named in ``attrs[BAD_ROWS]``."""
    frames = list(iter_table(path, chunk_size=None, sheet=sheet, dialect=dialect))
    bad = {k: v for frame in frames for k, v in frame.attrs.get(BAD_ROWS, {}).items()}
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.attrs = {BAD_ROWS: bad} if bad else {}
    return frame


def iter_table(
    path: str | Path,
    chunk_size: int | None = 100_000,
    *,
    sheet: str | None = None,
    dialect: CsvDialect | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of at most ``chunk_size`` rows (one chunk when None).

    Each chunk keeps a RangeIndex continuing from the previous one, so that index + 1 is the
    1-based data row of the file.

    Parameters
    ----------
    path
        CSV (``.csv``, ``.csv.gz``, ``.txt``, ``.tsv``), Excel (``.xlsx``, ``.xls``) or Parquet.
    chunk_size
        Rows per chunk; None for one chunk.
    sheet
        The Excel sheet to read (name, or 0-based position as text); default the first.
    dialect
        The CSV delimiter and decimal mark; default sniffed from the file (`sniff_csv`).
    """
    path = Path(path)
    fmt = table_format(path)
    _check_exists(path)
    if path.stat().st_size == 0:
        raise ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    if sheet is not None and fmt != "excel":
        raise ContractError(f"--sheet applies to Excel files only, and {path} is {fmt}.")
    try:
        if fmt == "csv":
            yield from _iter_csv(path, chunk_size, dialect or sniff_csv(path))
        elif fmt == "excel":
            yield from _iter_excel(path, chunk_size, sheet)
        else:
            yield from _iter_parquet(path, chunk_size)
    except ContractError:
        raise
    except (ValueError, OSError, EOFError, csv.Error, pa.ArrowException,
            pd.errors.ParserError) as exc:
        raise _unreadable(path, exc) from exc


def _iter_csv(path: Path, chunk_size: int | None, dialect: CsvDialect) -> Iterator[pd.DataFrame]:
    """CSV cells as text, as ``pd.read_csv(dtype=str, skipinitialspace=True)`` reads them.

    Arrow's parser is tried first (several times faster); whatever it refuses (rows with too few
    or too many fields, invalid UTF-8, a quoted cell after spaces) is read by Python's csv module
    from the first row Arrow did not deliver, so both give the same frames.
    """
    header = _csv_header(path, dialect.delimiter)
    delivered = 0
    try:
        for frame in _iter_csv_arrow(path, chunk_size, header, dialect.delimiter):
            yield decimal_points(frame, dialect)
            delivered += len(frame)
    except _ArrowDeclined:
        for frame in _iter_csv_python(path, chunk_size, header, dialect.delimiter, delivered):
            yield decimal_points(frame, dialect)


class _ArrowDeclined(Exception):
    """Arrow cannot read this CSV exactly as pandas would: let Python's csv module read it."""


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """The column names (byte-order mark and leading spaces dropped), refused when repeated."""
    with _open_text(path) as handle:
        names = next(csv.reader(handle, delimiter=delimiter, skipinitialspace=True), [])
    if not names:
        raise ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    names = [name or f"Unnamed: {i}" for i, name in enumerate(names)]
    _refuse_repeated_names(path, names)
    return names


def _refuse_repeated_names(path: Path, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise ContractError(
                f"{path} has the column {name!r} twice (columns {seen[name]} and {i}): drop or "
                "rename one, as which of them to use cannot be guessed."
            )
        seen[name] = i


_NA_CELLS = frozenset(STR_NA_VALUES)


def _iter_csv_python(
    path: Path, chunk_size: int | None, names: list[str], delimiter: str, skip: int
) -> Iterator[pd.DataFrame]:
    """The slow, exact reader: each row checked for its number of fields."""
    width = len(names)
    rows: list[list[str | None]] = []
    bad: dict[int, str] = {}
    start = position = 0
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
        next(reader, None)
        for record in reader:
            if not record or record == [""]:
                continue  # a blank line, as pandas skips it
            if len(record) != width:
                if position >= skip:
                    bad[position] = (
                        f"has {len(record)} fields where the header has {width} (line "
                        f"{reader.line_num} of the file): the row was not read"
                    )
                record = [None] * width
            else:
                record = [None if cell in _NA_CELLS else cell for cell in record]
            position += 1
            if position <= skip:
                start = position
                continue
            rows.append(record)
            if chunk_size is not None and len(rows) == chunk_size:
                yield _text_frame(rows, names, start, bad)
                start, rows, bad = position, [], {}
    if rows or (start == 0 and chunk_size is None) or position == 0:
        yield _text_frame(rows, names, start, bad)


def _text_frame(rows: list, names: list[str], start: int, bad: dict[int, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=names, dtype="str") if rows else pd.DataFrame(
        {name: pd.Series(dtype="str") for name in names})
    frame.index = pd.RangeIndex(start, start + len(frame))
    if bad:
        frame.attrs[BAD_ROWS] = dict(bad)
    return frame


def decimal_points(frame: pd.DataFrame, dialect: CsvDialect) -> pd.DataFrame:
    """Text cells holding a number written with a decimal comma (``1,5``), rewritten with a
    point when ``dialect`` has a decimal comma; other text untouched."""
    if dialect.decimal != ",":
        return frame
    for name in frame.columns:
        col = frame[name]
        comma = col.str.fullmatch(_DECIMAL_COMMA).fillna(False).astype(bool)
        if comma.any():
            frame[name] = col.where(~comma, col.str.replace(",", ".", regex=False))
    return frame


def _iter_csv_arrow(
    path: Path, chunk_size: int | None, names: list[str], delimiter: str
) -> Iterator[pd.DataFrame]:
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=1),
        "parse_options": pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
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


def _iter_excel(path: Path, chunk_size: int | None, sheet: str | None) -> Iterator[pd.DataFrame]:
    """An Excel sheet as text cells: numbers as written (7, not 7.0), dates as YYYY-MM-DD."""
    try:
        with pd.ExcelFile(path, engine="calamine") as book:
            names = book.sheet_names
            chosen: str | int = 0
            if sheet is not None:
                if sheet in names:
                    chosen = sheet
                elif sheet.isdigit() and int(sheet) < len(names):
                    chosen = int(sheet)
                else:
                    raise ContractError(f"{path} has no sheet {sheet!r}: its sheets are "
                                        f"{', '.join(map(repr, names))}.")
            cells = pd.read_excel(book, sheet_name=chosen, header=None, dtype=object)
    except ContractError:
        raise
    except Exception as exc:  # calamine's own error types, for a damaged or mislabelled file
        raise ContractError(
            f"{path} could not be read as an Excel workbook ({type(exc).__name__}): check that "
            "it is a valid, uncorrupted .xlsx or .xls file."
        ) from exc
    if cells.empty:
        raise ContractError(f"{path} is empty: it needs a header row and at least one data row.")
    header = [_excel_text(v) or f"Unnamed: {i}" for i, v in enumerate(cells.iloc[0])]
    _refuse_repeated_names(path, header)
    body = cells.iloc[1:]
    body = body[body.notna().any(axis=1)]  # blank rows, as a CSV reader skips blank lines
    columns = {
        name: pd.Series([_excel_text(v) for v in body.iloc[:, i]], dtype="str")
        for i, name in enumerate(header)
    }
    frame = pd.DataFrame(columns) if len(body) else pd.DataFrame(
        {name: pd.Series(dtype="str") for name in header})
    step = chunk_size or max(len(frame), 1)
    for start in range(0, max(len(frame), 1), step):
        chunk = frame.iloc[start:start + step]
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        yield chunk


def _excel_text(value: object) -> str | None:
    """One spreadsheet cell as the text it shows (integers without .0, ISO dates)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, pd.Timestamp | dt.datetime):
        stamp = pd.Timestamp(value)
        return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value)
    return text if text.strip() else None


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
    except OSError as exc:
        raise write_fault(path, exc) from exc
    tmp_path = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        # Created inside this try (not by tempfile.mkstemp before it), so that an interrupt
        # arriving just after the file appears (Ctrl-C, SIGTERM) still removes it. Mode 0o666
        # less the umask: the usual permissions of an output.
        try:
            _create_new(tmp_path)
        except OSError as exc:
            raise write_fault(path, exc) from exc
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        # Only faults of this output: an error about another file (an input) is not ours.
        if exc.errno in WRITE_FAULTS and exc.filename in (None, str(tmp_path), str(path)):
            raise write_fault(path, exc) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _create_new(path: Path) -> None:
    """Create the empty file ``path``, refusing one that exists."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


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


def check_distinct_paths(
    inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]
) -> None:
    """Refuse an output that would overwrite an input, or another output.

    Paths are compared after resolving symbolic links and relative parts, so ``./a.csv``, a
    link to it and its absolute path are the same file.

    Parameters
    ----------
    inputs, outputs
        What the user calls each path (``"input"``, ``"--out"``) -> the path; None is skipped.

    Raises
    ------
    ContractError
        Two of the paths are one file.
    """
    def resolved(paths: Mapping[str, str | Path | None]) -> list[tuple[str, Path, Path]]:
        return [(name, Path(p), Path(p).resolve()) for name, p in paths.items() if p is not None]

    read = resolved(inputs)
    written: dict[Path, str] = {}
    for name, path, real in resolved(outputs):
        for input_name, input_path, input_real in read:
            if real == input_real:
                raise ContractError(
                    f"{name} {path} would overwrite the {input_name} {input_path}: write to "
                    "another file (input files are never changed)."
                )
        if real in written:
            raise ContractError(
                f"{written[real]} and {name} are both {path}: give them their own file each."
            )
        written[real] = name


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
