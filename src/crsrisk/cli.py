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
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # mlflow warns that a PythonModel object is cloudpickled; ours is a small class from this
    # installed package, and the artefacts it loads are checksummed on export.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


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
    gap = result.selected.cv_metrics["cv_auroc"] - result.selected.test_metrics["auroc"]
    say(f"CV-to-test AUROC gap of the selected model: {gap:+.3f} "
        f"({len(result.train_index):,} training rows, {len(result.test_index):,} test rows)")
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
    typer.echo("\nalias changes:")
    typer.echo(trail.drop(columns=["metrics"]).to_string(index=False))


ModelOption = Annotated[
    str,
    typer.Option("--model", help="Registered model URI or exported model directory."),
]
DEFAULT_MODEL_URI = "models:/crs-severe@champion"


@app.command()
@user_errors
def score(
    input: Annotated[Path, typer.Argument(help="Baseline table, CSV or Parquet.")],
    out: Annotated[Path, typer.Option(help="Where to write the score table.")],
    model: ModelOption = DEFAULT_MODEL_URI,
    mapping: MappingOption = None,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows [default: beside --out]."),
    ] = None,
    drivers: Annotated[bool, typer.Option(help="Add SHAP drivers in words.")] = True,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 50_000,
) -> None:
    """Per-patient risk, tier, drivers, planning. Exit 0 all scored, 1 rejected, 2 unusable."""
    from crsrisk.scoring import score_file

    summary = score_file(input, out, model=model, rejected_path=rejected, drivers=drivers,
                         chunk_size=chunk_size, mapping=mapping)
    for warning in summary.warnings:
        say(f"warning: {warning}")
    say(summary.line())
    if summary.n_rejected:
        raise typer.Exit(EXIT_REJECTED)


@app.command()
@user_errors
def export(
    model: ModelOption = DEFAULT_MODEL_URI,
    out: Annotated[Path, typer.Option(help="New folder, e.g. models/crs-severe-v3.")] = ...,
) -> None:
    """Copy a registered model into a self-contained folder with a checksum manifest."""
    from crsrisk.export import export_model

    manifest = export_model(model, out)
    say(f"exported {manifest['model_name']} version {manifest['model_version']} to {out} "
        f"({len(manifest['files'])} files, contract v{manifest['contract_version']})")


@app.command()
@user_errors
def serve(
    model: ModelOption = DEFAULT_MODEL_URI,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless told.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5001,
) -> None:
    """REST scoring with mlflow's scoring server (POST /invocations)."""
    import os
    import subprocess
    import sys

    from crsrisk.export import looks_exported, verify
    from crsrisk.registry import resolve_tracking_uri

    if looks_exported(model):
        verify(model)
    env = {**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri()}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model),
               "--host", host, "--port", str(port), "--env-manager", "local", "--no-conda"]
    say(f"serving {model} on http://{host}:{port}/invocations (Ctrl-C stops)")
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
@user_errors
def stratify(
    input: Annotated[Path, typer.Argument(help="Baseline table of candidates.")],
    out: Annotated[Path, typer.Option(help="Per-patient strata (CSV or Parquet).")],
    model: ModelOption = DEFAULT_MODEL_URI,
    mapping: MappingOption = None,
    strata: Annotated[int | None, typer.Option(help="K quantile strata.")] = None,
    thresholds: Annotated[
        str | None, typer.Option(help="Risk cut points, e.g. 0.03,0.12.")
    ] = None,
    randomize: Annotated[
        str | None, typer.Option(help="Arms for stratified block randomisation, e.g. A,B.")
    ] = None,
    block_size: Annotated[int | None, typer.Option(help="Block size (multiple of arms).")] = None,
    seed: Annotated[int, typer.Option(help="Randomisation seed.")] = 0,
    summary: Annotated[
        Path | None, typer.Option(help="Where to write the per-stratum summary.")
    ] = None,
    rejected: Annotated[Path | None, typer.Option(help="Where to write rejected rows.")] = None,
) -> None:
    """Enrolment strata by predicted risk, expected events per stratum, optional randomisation."""
    from crsrisk.errors import CrsriskError
    from crsrisk.scoring import load_model
    from crsrisk.scoring import score as score_table
    from crsrisk.stratify import stratify as make_strata
    from crsrisk.tableio import read_table, table_format, write_table

    table_format(out)
    if strata is None and thresholds is None:
        strata = 3
    cuts = None
    if thresholds is not None:
        try:
            cuts = [float(t) for t in thresholds.split(",")]
        except ValueError:
            raise CrsriskError(
                f"--thresholds {thresholds!r} must be numbers separated by commas, "
                "e.g. 0.03,0.12."
            ) from None
    arms = [a.strip() for a in randomize.split(",")] if randomize else None
    risk_model = load_model(model)
    scores, rejected_rows = score_table(read_table(input), risk_model, drivers=False,
                                        mapping=mapping)
    if scores.empty:
        raise CrsriskError(f"Every row of {input} was rejected: nothing to stratify.")
    patients, table = make_strata(
        scores[["patient_id", "risk", "risk_tier"]], n_strata=strata, thresholds=cuts,
        arms=arms, block_size=block_size, seed=seed,
    )
    write_table(patients, out)
    summary_path = summary or out.with_name(f"{out.name.split('.')[0]}.summary.csv")
    write_table(table, summary_path)
    rejected_path = rejected or out.with_name(f"{out.name.split('.')[0]}.rejected.csv")
    write_table(rejected_rows, rejected_path)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    say(f"model {risk_model.name} v{risk_model.version}; strata written to {out}, summary to "
        f"{summary_path}")
    if len(rejected_rows):
        say(f"{rejected_rows['row_number'].nunique():,} rows rejected: see {rejected_path}")
        raise typer.Exit(EXIT_REJECTED)
