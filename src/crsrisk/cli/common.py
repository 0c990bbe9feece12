"""What every command shares: the Typer app, its options, messages and exit codes."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from crsrisk.errors import CrsriskError, EnvironmentFault

__all__ = [
    "app",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNUSABLE",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "MappingOption",
    "SheetOption",
    "StrictOption",
    "blanking_policy",
    "say",
    "user_errors",
    "ConfigOption",
    "labelled_cohort",
    "file_stem",
    "stderr_is_terminal",
    "training_progress",
]

EXIT_OK, EXIT_REJECTED, EXIT_UNUSABLE, EXIT_FAULT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {
    EXIT_OK: "all done",
    EXIT_REJECTED: "some rows rejected (they are in the rejected table)",
    EXIT_UNUSABLE: "unusable input, configuration or model",
    EXIT_FAULT: "environment fault: an output or the tracking store cannot be written or "
                "reached (folder missing or unwritable, disk full), or a model file is corrupted",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM); no partial output is left",
}

app = typer.Typer(
    help="Predict severe (ASTCT grade >= 3) cytokine release syndrome before CAR-T or "
    "bispecific therapy.",
    epilog="Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())
    + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., object])

MappingOption = Annotated[
    Path | None,
    typer.Option("--mapping", help="YAML site mapping: renames, recodes, unit conversions."),
]
SheetOption = Annotated[
    str | None,
    typer.Option("--sheet", help="Excel sheet to read, by name (or 0-based position) "
                 "[default: the mapping's file.sheet, else the first]."),
]
StrictOption = Annotated[
    bool,
    typer.Option("--strict", help="Reject a row with an implausible laboratory value instead "
                 "of blanking the value [default: blank it, keep the row, report it]."),
]


@app.callback()
def _quiet_libraries() -> None:
    """Keep the output to crsrisk's own lines: other libraries' logs, bars and warnings add noise.

    Runs before every command, so before any command imports pandera or mlflow.
    """
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # mlflow's own INFO/WARNING lines (database set-up, "a PythonModel object is cloudpickled":
    # ours is a small class of this installed package, its artefacts checksummed on export) would
    # drown crsrisk's output; set MLFLOW_LOGGING_LEVEL yourself to see them.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    # mlflow retries an unanswered tracking server 7 times with doubling waits (about 4 minutes)
    # and waits 120 s per request; a command should give up within a minute. Set them to wait
    # longer for a slow server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    _print_stores()



def say(message: str) -> None:
    typer.echo(message, err=True)


class _StoreLines(logging.Handler):
    """Prints each tracking store a command uses (crsrisk.mlops.registry announces them), once."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        # Once per store, by its URI: mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, so a
        # later look-up of the same store would otherwise be announced again, "from" that.
        line = record.getMessage()
        store = getattr(record, "store_uri", line)
        if store not in self.seen:
            self.seen.add(store)
            say(line)


def _print_stores() -> None:
    logger = logging.getLogger("crsrisk.store")  # crsrisk.mlops.registry.STORE_LOGGER
    for handler in [h for h in logger.handlers if isinstance(h, _StoreLines)]:
        logger.removeHandler(handler)  # a fresh one per command run
    logger.addHandler(_StoreLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _os_fault(exc: OSError) -> EnvironmentFault | None:
    """The one sentence for an operating-system error while writing, or None if not one."""
    from crsrisk.io import WRITE_FAULTS, write_fault

    if exc.errno not in WRITE_FAULTS:
        return None
    if exc.filename:
        return write_fault(exc.filename, exc)
    return EnvironmentFault(f"A file could not be written ({exc.strerror or exc}): check free "
                            "disk space and the output folder's permissions.")


def user_errors(command: F) -> F:
    """Turn foreseeable problems into one sentence on stderr and their exit code.

    `EnvironmentFault` (and an operating-system error while writing: permission, disk full,
    read-only, not a folder) exits 3, any other `CrsriskError` 2, an interrupt 130.
    """

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except EnvironmentFault as exc:
            say(f"error: {exc}")
            raise typer.Exit(EXIT_FAULT) from None
        except CrsriskError as exc:
            say(f"error: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from None
        except OSError as exc:
            fault = _os_fault(exc)
            if fault is None:
                raise
            say(f"error: {fault}")
            raise typer.Exit(EXIT_FAULT) from None
        except KeyboardInterrupt:
            say("interrupted: no output was written.")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def training_progress() -> Iterator[Callable[[object], None]]:
    """A progress callback for `crsrisk.modeling.train.train_models`.

    On a terminal: a tqdm bar per candidate (search step and fold). Otherwise (a pipe, a log):
    one line per candidate as it starts.
    """
    bar = None
    current: tuple[str, int] | None = None
    terminal = stderr_is_terminal()

    def report(step) -> None:  # a crsrisk.modeling.train.TrainingStep
        nonlocal bar, current
        if current != (step.candidate, step.candidate_number):
            current = (step.candidate, step.candidate_number)
            if bar is not None:
                bar.close()
            label = f"candidate {step.candidate_number}/{step.candidates} {step.candidate}"
            if terminal:
                from tqdm import tqdm

                bar = tqdm(total=step.steps * step.folds, desc=label, leave=False,
                           file=sys.stderr, unit="fit")
            else:
                say(f"{label}: {step.steps} search step{'s' if step.steps != 1 else ''} x "
                    f"{step.folds} folds")
        if bar is not None:
            bar.set_postfix_str(f"step {step.step}/{step.steps}, fold {step.fold}/{step.folds}",
                                refresh=False)
            bar.update(1)

    try:
        yield report
    finally:
        if bar is not None:
            bar.close()


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Training YAML (copy configs/train.yaml) [default: the "
                 "packaged defaults]."),
]


def blanking_policy(strict: bool) -> str:
    """The line saying what this run does with an implausible laboratory value."""
    if strict:
        return "implausible laboratory values reject their row (--strict)"
    return ("implausible laboratory values are blanked and their row used (--strict rejects the "
            "row instead)")


def labelled_cohort(data: Path, events: Path | None, mapping: Path | None, *,
                    sheet: str | None = None, strict: bool = False):
    """Validated rows and their severe-CRS labels, for training and evaluation.

    ``sheet``: the Excel sheet; ``strict``: reject a row with an implausible laboratory value
    instead of blanking it (as ``crsrisk validate`` and ``crsrisk score`` take them).
    """
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.load import load_baseline, load_events

    loaded = load_baseline(data, mapping=mapping, with_outcome=True, sheet=sheet, strict=strict)
    result = loaded.result
    blanked = f", {result.n_blanked:,} implausible value(s) blanked" if result.n_blanked else ""
    say(f"read {result.n_read:,} rows: {len(result.valid):,} valid, "
        f"{result.n_rejected_rows:,} rejected{blanked} (see crsrisk validate for each row)")
    say(blanking_policy(strict))
    for warning in result.warnings:
        say(f"warning: {warning}")
    event_table = None
    if events is not None:
        event_result = load_events(events)
        if event_result.n_rejected_rows:
            say(f"warning: {event_result.n_rejected_rows:,} event rows break the contract and "
                "are not used for regrading")
        event_table = event_result.valid
    labels = resolve_labels(result.valid, event_table)
    if labels.n_regraded:
        say(f"{labels.n_regraded:,} labels regraded to ASTCT from the event table")
    if labels.n_disagreeing:
        say(f"warning: {labels.n_disagreeing:,} ASTCT labels disagree with their events "
            "(kept as given)")
    return loaded, labels


def file_stem(path: Path) -> str:
    name = path.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
