"""Commands for scoring: score, export, serve, stratify (registered on crsrisk.cli.app)."""

from __future__ import annotations

import contextlib
import enum
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli.common import (
    EXIT_REJECTED,
    MappingOption,
    SheetOption,
    StrictOption,
    app,
    blanking_policy,
    say,
    user_errors,
)
from crsrisk.config import DEFAULT_MODEL_URI
from crsrisk.errors import CrsriskError

__all__ = ["ModelOption", "score", "export", "serve", "stratify"]

ModelOption = Annotated[
    str,
    typer.Option("--model", help="Registered model URI or exported model directory."),
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Engine(enum.StrEnum):
    pandas = "pandas"
    spark = "spark"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that temporary files are removed."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM unwinds like Ctrl-C (outputs stay atomic, no temp files)."""

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _notes_said() -> Iterator[None]:
    """Say the notes of a failure (e.g. an earlier output removed) before its error line."""
    try:
        yield
    except (CrsriskError, KeyboardInterrupt) as exc:
        for note in getattr(exc, "__notes__", ()):
            say(f"note: {note}")
        raise


@app.command()
@user_errors
def score(
    input: Annotated[Path, typer.Argument(help="Baseline table: CSV, Excel or Parquet.")],
    out: Annotated[Path, typer.Option(help="Where to write the score table.")],
    model: ModelOption = DEFAULT_MODEL_URI,
    mapping: MappingOption = None,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows [default: <out>.rejected.csv beside it]."),
    ] = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
    drivers: Annotated[bool, typer.Option(help="Add SHAP drivers in words.")] = True,
    # scoring.DEFAULT_CHUNK_SIZE, written out so that --help does not import the scoring stack.
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 100_000,
    engine: Annotated[
        Engine, typer.Option(help="pandas (this machine) or spark (pip install crsrisk[spark]).")
    ] = Engine.pandas,
    master: Annotated[
        str, typer.Option(help="Spark master URL for --engine spark.")
    ] = "local[2]",
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress",
                     help="Progress bar on stderr [default: when stderr is a terminal]."),
    ] = None,
) -> None:
    """Per-patient risk, tier, drivers, planning; prints the tier counts per therapy class.

    Exit 0 all scored, 1 rows rejected or values blanked, 2 unusable.
    """
    with _sigterm_as_interrupt(), _notes_said():
        if engine is Engine.spark:
            summary = _score_on_spark(input, out, model=model, rejected=rejected,
                                      drivers=drivers, master=master, mapping=mapping,
                                      chunk_size=chunk_size, strict=strict, sheet=sheet)
        else:
            from crsrisk.scoring.batch import score_file

            summary = score_file(input, out, model=model, rejected_path=rejected,
                                 drivers=drivers, chunk_size=chunk_size, mapping=mapping,
                                 progress=progress, strict=strict, sheet=sheet)
    for warning in summary.warnings:
        say(f"warning: {warning}")
    say(summary.line())
    say("tier counts per therapy class (scored patients):")
    table = summary.tier_table()
    say(f"  {'therapy_class':<15}" + "".join(f"{tier:>14}" for tier in table.columns))
    for therapy, counts in table.iterrows():
        say(f"  {therapy:<15}" + "".join(f"{n:>14,}" for n in counts))
    say(blanking_policy(strict))
    if summary.n_rejected or summary.n_blanked:
        from crsrisk.scoring.outputs import sibling_path

        rejected_path = rejected or sibling_path(out, "rejected")
        say(f"{summary.n_rejected:,} rows rejected, {summary.n_blanked:,} "
            f"implausible values blanked: see {rejected_path}")
        raise typer.Exit(EXIT_REJECTED)


def _score_on_spark(input: Path, out: Path, *, model: str, rejected: Path | None,
                    drivers: bool, master: str, mapping: Path | None, chunk_size: int,
                    strict: bool, sheet: str | None):
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise CrsriskError(
            "--engine spark needs pyspark, which is not installed: pip install 'crsrisk[spark]'."
        )
    from crsrisk.scoring.spark import score_file_spark

    return score_file_spark(input, out, model=model, rejected_path=rejected, drivers=drivers,
                            master=master, mapping=mapping, chunk_size=chunk_size,
                            strict=strict, sheet=sheet)


@app.command()
@user_errors
def export(
    model: ModelOption = DEFAULT_MODEL_URI,
    out: Annotated[Path, typer.Option(help="New folder, e.g. models/crs-severe-v3.")] = ...,
) -> None:
    """Copy a registered model into a self-contained folder with a checksum manifest."""
    from crsrisk.io import check_distinct_paths
    from crsrisk.mlops.export import export_model

    check_distinct_paths({"--model": model if Path(model).exists() else None}, {"--out": out})
    manifest = export_model(model, out)
    say(f"exported {manifest['model_name']} version {manifest['model_version']} to {out} "
        f"({len(manifest['files'])} files, contract v{manifest['contract_version']}); it "
        "scores with --model " + str(out) + " and no tracking store")


@app.command()
@user_errors
def serve(
    model: ModelOption = DEFAULT_MODEL_URI,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless told.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5001,
) -> None:
    """REST scoring on MLflow's protocol (POST /invocations, GET /ping, /health, /version).

    Send the baseline table as JSON ({"dataframe_split": {...}}, "dataframe_records", "inputs"
    or "instances"; "params": {"drivers": false} skips the drivers) or CSV. Each row is answered
    in order, with status "scored" or "rejected" (problems: column, rule, value); only a request
    that is not a usable table gets HTTP 400, with a message that repeats no row.
    """
    import logging

    import mlflow
    import uvicorn

    from crsrisk.mlops.export import looks_exported
    from crsrisk.mlops.loading import load_model
    from crsrisk.mlops.serving import create_app

    risk_model = load_model(model)  # checks the model (and an export's manifest) in one sentence
    uri = str(Path(model).resolve()) if looks_exported(model) else model
    app_ = create_app(mlflow.pyfunc.load_model(uri), risk_model.name, str(risk_model.version))
    if host not in LOOPBACK:
        say(f"warning: serving on {host} without authentication: anyone who reaches this port "
            "can send patient data; keep it behind an authenticating proxy.")
    say(f"serving {risk_model.name} v{risk_model.version} ({model}) on "
        f"http://{host}:{port}/invocations (Ctrl-C stops)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # No access log: request lines are not needed and each one costs time on every request.
    uvicorn.run(app_, host=host, port=port, access_log=False, log_level="warning")


@app.command()
@user_errors
def stratify(
    input: Annotated[Path, typer.Argument(help="Baseline table of candidates.")],
    out: Annotated[Path, typer.Option(help="Per-patient strata (CSV or Parquet).")],
    model: ModelOption = DEFAULT_MODEL_URI,
    mapping: MappingOption = None,
    strata: Annotated[int | None, typer.Option(help="K quantile strata [default: 3].")] = None,
    thresholds: Annotated[
        str | None, typer.Option(help="Risk cut points, e.g. 0.03,0.12.")
    ] = None,
    randomize: Annotated[
        str | None, typer.Option(help="Arms for stratified block randomisation, e.g. A,B.")
    ] = None,
    block_size: Annotated[int | None, typer.Option(help="Block size (multiple of arms).")] = None,
    seed: Annotated[int, typer.Option(help="Randomisation seed.")] = 0,
    summary: Annotated[
        Path | None,
        typer.Option(help="Where to write the per-stratum summary [default: <out>.summary.csv]."),
    ] = None,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows [default: <out>.rejected.csv]."),
    ] = None,
) -> None:
    """Enrolment strata by predicted risk, expected events per stratum, optional randomisation.

    Exit 0 all stratified, 1 some rows rejected, 2 unusable input or model.
    """
    from crsrisk.scoring.strata import parse_thresholds, stratify_file

    with _notes_said():
        run = stratify_file(
            input, out, model=model, mapping=mapping, n_strata=strata,
            thresholds=parse_thresholds(thresholds),
            arms=[a.strip() for a in randomize.split(",")] if randomize else None,
            block_size=block_size, seed=seed, summary_path=summary, rejected_path=rejected,
        )
    typer.echo(run.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    say(f"model {run.model}; {len(run.patients):,} patients in {len(run.summary)} strata "
        f"written to {out}, summary to {run.summary_path}")
    if run.n_rejected:
        say(f"{run.n_rejected:,} rows rejected: see {run.rejected_path}")
        raise typer.Exit(EXIT_REJECTED)
