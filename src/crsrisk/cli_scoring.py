"""Commands for scoring: score, export, serve, stratify (registered on crsrisk.cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli import EXIT_REJECTED, MappingOption, app, say, user_errors

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
