"""What both scoring engines (pandas and Spark) do around the model: the output checks, the
run's counts, and the two output files written chunk by chunk.

One implementation, so that ``crsrisk score --engine spark`` refuses, cleans up and writes
exactly what ``--engine pandas`` does.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa

from crsrisk.contract.products import THERAPY_CLASSES
from crsrisk.contract.rejected import BLANKED, REJECTED
from crsrisk.contract.validate import empty_rejected
from crsrisk.errors import ContractError
from crsrisk.io import TableWriter, check_distinct_paths, remove_stale_temporaries, table_format
from crsrisk.modeling.riskmodel import TIERS

__all__ = [
    "ScoreOutputs",
    "ScoreSummary",
    "check_chunk_size",
    "class_tier_counts",
    "check_outputs",
    "finish_summary",
    "no_stale_outputs",
    "sibling_path",
]


@dataclass
class ScoreSummary:
    """Counts of one scoring run; ``n_read == n_scored + n_rejected``."""

    n_read: int = 0
    n_scored: int = 0
    n_rejected: int = 0
    n_blanked: int = 0  # implausible laboratory values set to missing in scored rows
    # (therapy_class, tier) -> scored patients
    class_tiers: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0

    def add(self, class_tiers: pd.Series, rejected: pd.DataFrame, warnings: Iterable[str],
            n_read: int = 0) -> None:
        """Count one chunk: ``class_tiers`` is its scored patients per (therapy_class,
        risk_tier)."""
        self.n_read += n_read
        self.n_scored += int(class_tiers.sum())
        action = rejected["action"]
        self.n_rejected += int(rejected.loc[action.eq(REJECTED), "row_number"].nunique())
        self.n_blanked += int(action.eq(BLANKED).sum())
        for (therapy, tier), n in class_tiers.items():
            self.class_tiers[(str(therapy), str(tier))] += int(n)
        for warning in warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)

    @property
    def tiers(self) -> Counter:
        """Scored patients per tier, over every therapy class."""
        counts: Counter = Counter()
        for (_, tier), n in self.class_tiers.items():
            counts[tier] += n
        return counts

    def tier_table(self) -> pd.DataFrame:
        """Scored patients per therapy class (rows, in the contract's order) and tier."""
        classes = sorted({c for c, _ in self.class_tiers}, key=_class_order)
        table = pd.DataFrame([[self.class_tiers.get((c, t), 0) for t in TIERS] for c in classes],
                             index=pd.Index(classes, name="therapy_class"),
                             columns=pd.Index(TIERS, name="tier"), dtype="int64")
        table.loc["total"] = table.sum()
        return table

    def line(self) -> str:
        """One line for the terminal: counts, tiers, model, time."""
        tiers = ", ".join(f"{t} {self.tiers.get(t, 0):,}" for t in TIERS)
        rate = f", {self.n_read / self.seconds:,.0f} rows/s" if self.seconds > 0 else ""
        blanked = f", blanked {self.n_blanked:,} values" if self.n_blanked else ""
        return (f"read {self.n_read:,}, scored {self.n_scored:,}, rejected {self.n_rejected:,}"
                f"{blanked} ({tiers}); model {self.model}; {self.seconds:.1f} s{rate}")


def _class_order(therapy: str) -> tuple[int, str]:
    known = THERAPY_CLASSES
    return (known.index(therapy) if therapy in known else len(known), therapy)


def class_tier_counts(scores: pd.DataFrame, classes: pd.Series) -> pd.Series:
    """Scored patients per (therapy_class, risk_tier) of one chunk; ``classes`` holds the
    therapy class of each score row, in the same order."""
    # .array: no conversion to text (a categorical stays one) and no alignment on the index.
    keys = pd.DataFrame({"therapy_class": classes.array, "tier": scores["risk_tier"].array})
    return keys.groupby(["therapy_class", "tier"], observed=True).size()


def sibling_path(out: str | Path, what: str) -> Path:
    """``<stem of out>.<what>.csv`` beside ``out`` (scores.parquet -> scores.rejected.csv)."""
    out = Path(out)
    name = out.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.{what}.csv")


def check_chunk_size(chunk_size: int) -> None:
    """Refuse a chunk size below one row."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")


def check_outputs(input_path: Path, out: Path, rejected_path: Path,
                  mapping: object = None) -> None:
    """Before any work: known table formats, no output over an input (the table, a mapping
    file) or over the other output, and the temporary files of a killed earlier run removed."""
    for path in (input_path, out, rejected_path):
        table_format(path)
    mapping_file = mapping if isinstance(mapping, (str, Path)) else None
    check_distinct_paths({"input": input_path, "--mapping": mapping_file},
                         {"--out": out, "--rejected": rejected_path})
    for path in (out, rejected_path):
        remove_stale_temporaries(path)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def no_stale_outputs(*paths: Path) -> Iterator[None]:
    """Should the block fail, remove earlier files at ``paths``: none is taken for this run's.

    The exception carries a note naming what was removed (the CLI prints it).
    """
    try:
        yield
    except BaseException as exc:
        removed = [str(p) for p in paths if _remove(p)]
        if removed:
            exc.add_note(f"{' and '.join(removed)}, left by an earlier run, "
                         f"{'were' if len(removed) > 1 else 'was'} removed so that "
                         f"{'they are' if len(removed) > 1 else 'it is'} not taken for this "
                         "run's output.")
        raise


def finish_summary(summary: ScoreSummary, input_path: str | Path, rejected_path: Path,
                   start: float, out: Path | None = None) -> ScoreSummary:
    """Refuse a run that read no row or scored none; stamp the wall time since ``start``.

    When nothing was scored, an earlier file at ``out`` is removed (and the error says so).
    """
    if summary.n_read == 0:
        raise ContractError(f"{input_path} has no data rows: give at least one row.")
    if summary.n_scored == 0:
        removed = out is not None and _remove(out)
        raise ContractError(
            f"Every row of {input_path} was rejected, so nothing was scored: the rejected "
            f"rows are in {rejected_path}"
            + (f"; {out}, left by an earlier run, was removed so that it is not taken for "
               "today's scores." if removed else ".")
        )
    summary.seconds = time.perf_counter() - start
    return summary


class _NothingScored(Exception):
    """Every row was rejected: abandon the score file, keep the rejected one."""


class ScoreOutputs:
    """The score and rejected files of one run, appended chunk by chunk in input order.

    Both appear atomically when the block ends cleanly; the score file only if a row was
    scored. A failure inside the block leaves neither (no partial file).

    Parameters
    ----------
    out, rejected_path
        The two files (CSV or Parquet by extension).
    summary
        Counts the chunks given to :meth:`count`.
    schema, plain
        As :class:`crsrisk.io.TableWriter` takes them, for the score file.
    """

    def __init__(self, out: Path, rejected_path: Path, summary: ScoreSummary, *,
                 schema: pa.Schema | None = None, plain: Sequence[str] = ()) -> None:
        self.summary = summary
        self._scores = TableWriter(out, schema=schema, plain=plain)
        self._rejected = TableWriter(rejected_path)

    def __enter__(self) -> ScoreOutputs:
        self._scores.__enter__()
        try:
            self._rejected.__enter__()
            self._rejected.write(empty_rejected())
        except BaseException as exc:
            self._scores.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def count(self, class_tiers: pd.Series, rejected: pd.DataFrame, warnings: Iterable[str],
              n_read: int = 0) -> None:
        """Add one chunk to the summary (call in input order); ``class_tiers`` as
        :func:`class_tier_counts` gives it."""
        self.summary.add(class_tiers, rejected, warnings, n_read=n_read)

    def write(self, scores: pd.DataFrame, rejected: pd.DataFrame) -> None:
        """Append one chunk's scores and rejected rows (call in input order)."""
        if len(scores):
            self._scores.write(scores)
        if len(rejected):
            self._rejected.write(rejected)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._rejected.__exit__(exc_type, exc, tb)
        except BaseException as error:
            self._scores.__exit__(type(error), error, error.__traceback__)
            raise
        if exc_type is None and self.summary.n_scored == 0:
            nothing = _NothingScored()
            self._scores.__exit__(_NothingScored, nothing, None)
        else:
            self._scores.__exit__(exc_type, exc, tb)
