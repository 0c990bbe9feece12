"""What every command shares: the Typer app, its options, messages and exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from crsrisk.errors import CrsriskError

__all__ = [
    "app",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNUSABLE",
    "MappingOption",
    "say",
    "user_errors",
    "ConfigOption",
    "labelled_cohort",
    "file_stem",
]

app = typer.Typer(
    help="Predict severe (ASTCT grade >= 3) cytokine release syndrome before CAR-T or "
    "bispecific therapy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_REJECTED, EXIT_UNUSABLE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., object])

MappingOption = Annotated[
    Path | None,
    typer.Option("--mapping", help="YAML site mapping: renames, recodes, unit conversions."),
]


@app.callback()
def _quiet_libraries() -> None:
    """Keep the output to crsrisk's own lines: mlflow's info logs and progress bars add noise."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # mlflow's own INFO/WARNING lines (database set-up, "a PythonModel object is cloudpickled":
    # ours is a small class of this installed package, its artefacts checksummed on export) would
    # drown crsrisk's output; set MLFLOW_LOGGING_LEVEL yourself to see them.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")


def say(message: str) -> None:
    typer.echo(message, err=True)


def user_errors(command: F) -> F:
    """Turn foreseeable problems into one sentence on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except CrsriskError as exc:
            say(f"error: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from None
        except KeyboardInterrupt:
            say("interrupted: no output was written.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Training YAML [default: configs/train.yaml].")
]


def labelled_cohort(data: Path, events: Path | None, mapping: Path | None):
    """Validated rows and their severe-CRS labels, for training and evaluation."""
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.load import load_baseline, load_events

    loaded = load_baseline(data, mapping=mapping, with_outcome=True)
    result = loaded.result
    say(f"read {result.n_read:,} rows: {len(result.valid):,} valid, "
        f"{result.n_rejected_rows:,} rejected (see crsrisk validate for each row)")
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
