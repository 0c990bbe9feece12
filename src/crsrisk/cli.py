"""The `crsrisk` command line: it only wires the pipeline's stages together."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from crsrisk.errors import CrsriskError

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


@app.command()
@user_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Where to write the cohort (CSV or Parquet).")],
    n: Annotated[int, typer.Option(min=1, help="Number of treatment episodes.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same cohort.")] = 0,
    config: Annotated[Path | None, typer.Option(help="Simulation YAML.")] = None,
    events: Annotated[
        Path | None, typer.Option(help="Also write the raw CRS event table here.")
    ] = None,
) -> None:
    """Write a simulated cohort (baseline + outcome columns), grounded in the literature."""
    from crsrisk.simulate import load_simulation_config, simulate_cohort
    from crsrisk.tableio import table_format, write_table

    table_format(out)
    cohort = simulate_cohort(n, seed, config=load_simulation_config(config))
    write_table(cohort.baseline, out)
    if events is not None:
        table_format(events)
        write_table(cohort.events, events)
    severe = (cohort.baseline["crs_max_grade"] >= 3).mean()
    say(f"wrote {len(cohort.baseline):,} episodes to {out} (grade >= 3 CRS: {severe:.1%})")


@app.command()
@user_errors
def validate(
    input: Annotated[Path, typer.Argument(help="Baseline table, CSV or Parquet.")],
    events: Annotated[
        Path | None, typer.Option(help="Raw CRS event table, for regrading other scales.")
    ] = None,
    mapping: MappingOption = None,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows [default: <input>.rejected.csv here]."),
    ] = None,
) -> None:
    """Check a table against the data contract. Exit 0 all valid, 1 rows rejected, 2 unusable."""
    from crsrisk.contract import ContractRejection
    from crsrisk.grading import LabelError, resolve_labels
    from crsrisk.inputs import load_baseline, load_events
    from crsrisk.tableio import write_table

    rejected = rejected or Path(f"{_stem(input)}.rejected.csv")
    try:
        loaded = load_baseline(input, mapping=mapping)
    except ContractRejection as exc:
        write_table(exc.rejected, rejected)
        say(f"rejected rows written to {rejected}")
        raise
    result = loaded.result
    say(f"read {result.n_read:,} rows: {len(result.valid):,} valid, "
        f"{result.n_rejected_rows:,} rejected")
    for (column, check), count in result.rejected_by_rule().items():
        say(f"  {count:>8,}  {column}: {check}")
    for warning in result.warnings:
        say(f"warning: {warning}")
    if loaded.mapping is not None:
        say(f"mapping {mapping} (fingerprint {loaded.mapping.fingerprint()[:12]})")
    event_rows_rejected = 0
    if events is not None:
        event_result = load_events(events)
        event_rows_rejected = event_result.n_rejected_rows
        say(f"event table: {event_result.n_read:,} rows, {event_rows_rejected:,} rejected")
    if "crs_max_grade" in result.valid.columns:
        try:
            labels = resolve_labels(result.valid, event_result.valid if events else None)
        except LabelError as exc:
            say(f"labels: not usable for training: {exc}")
        else:
            say(f"labels: {int(labels.severe.sum()):,} severe (ASTCT >= 3) of "
                f"{len(labels.severe):,}; {labels.n_regraded:,} regraded from events")
            if labels.n_disagreeing:
                say(f"warning: {labels.n_disagreeing:,} ASTCT labels disagree with their events "
                    "(labels kept as given)")
    write_table(result.rejected, rejected)
    say(f"rejected rows written to {rejected}")
    if result.n_rejected_rows or event_rows_rejected:
        raise typer.Exit(EXIT_REJECTED)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem




ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Training YAML [default: configs/train.yaml].")
]


def _labelled(data: Path, events: Path | None, mapping: Path | None):
    """Validated rows and their severe-CRS labels, for training and evaluation."""
    from crsrisk.grading import resolve_labels
    from crsrisk.inputs import load_baseline, load_events

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


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Labelled baseline table, CSV or Parquet.")],
    events: Annotated[Path | None, typer.Option(help="Raw CRS event table.")] = None,
    mapping: MappingOption = None,
    config: ConfigOption = None,
) -> None:
    """Train, evaluate, log to MLflow and register; prints the model URI and version."""
    import time

    from crsrisk.config import load_train_config
    from crsrisk.registry import connect
    from crsrisk.tracking import log_and_register
    from crsrisk.train import train_models

    start = time.perf_counter()
    cfg = load_train_config(config)
    loaded, labels = _labelled(data, events, mapping)
    valid = loaded.result.valid
    loaded_at = time.perf_counter()
    result = train_models(valid, labels.severe, cfg)
    for note in result.warnings:
        say(f"warning: {note}")
    trained_at = time.perf_counter()
    say(f"{'candidate':<14}{'cv log loss':>12}{'cv AUROC':>10}{'test log loss':>15}"
        f"{'test AUROC':>12}{'calibration':>13}")
    for c in result.candidates:
        mark = " <- selected" if c is result.selected else ""
        say(f"{c.name:<14}{c.cv_metrics['cv_log_loss']:>12.4f}{c.cv_metrics['cv_auroc']:>10.3f}"
            f"{c.test_metrics['log_loss']:>15.4f}{c.test_metrics['auroc']:>12.3f}"
            f"{c.calibration:>13}{mark}")
    selected = result.selected
    auroc = selected.test_intervals.set_index("metric").loc["auroc"]
    gap = selected.cv_metrics["cv_auroc"] - selected.test_metrics["auroc"]
    say(f"selected {selected.name}: test AUROC {auroc['estimate']:.3f} (95% CI "
        f"{auroc['lower']:.3f}-{auroc['upper']:.3f}, {selected.test_metrics['events']} events in "
        f"{len(result.test_index):,} test rows); CV-to-test AUROC gap {gap:+.3f}")
    store = connect(cfg.tracking)
    registered = log_and_register(store, result, cfg, valid, labels.severe,
                                  loaded.provenance)
    done = time.perf_counter()
    say(registered.decision)
    say(f"time: load+validate {loaded_at - start:.1f} s, train {trained_at - loaded_at:.1f} s, "
        f"log+register {done - trained_at:.1f} s, total {done - start:.1f} s")
    typer.echo(f"{registered.model_uri} version {registered.version}")


@app.command()
@user_errors
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    config: ConfigOption = None,
) -> None:
    """Make a registered version the champion by hand (recorded in the audit trail)."""
    from crsrisk.config import load_train_config
    from crsrisk.registry import connect
    from crsrisk.registry import promote as promote_version

    store = connect(load_train_config(config).tracking)
    promote_version(store, version, reason)
    say(f"version {version} of {store.model_name} is now champion")


@app.command()
@user_errors
def models(config: ConfigOption = None) -> None:
    """Registered versions, their aliases and key metrics, and the alias audit trail."""
    from crsrisk.config import load_train_config
    from crsrisk.registry import audit_trail, connect, list_versions

    store = connect(load_train_config(config).tracking)
    versions = list_versions(store)
    if versions.empty:
        typer.echo(f"no versions of {store.model_name} yet: run crsrisk train")
        return
    typer.echo(f"{store.model_name} at {store.uri}")
    typer.echo(versions.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    trail = audit_trail(store)
    shown = trail.drop(columns=["metrics"])
    for key in ("test_auroc", "test_log_loss"):  # the figures the version had when it moved
        shown[key] = [m.get(key) if isinstance(m, dict) else None for m in trail["metrics"]]
    typer.echo("\nalias changes:")
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))



# Commands of the later stages live in their own modules and register themselves on `app`.
from crsrisk import cli_evaluation, cli_scoring  # noqa: E402,F401
