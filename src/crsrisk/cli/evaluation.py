"""Commands for evaluation and reporting: evaluate, recalibrate, report (on crsrisk.cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli.common import (
    ConfigOption,
    MappingOption,
    SheetOption,
    StrictOption,
    app,
    labelled_cohort,
    say,
    user_errors,
)
from crsrisk.config import DEFAULT_MODEL_URI

__all__ = [
    "ModelOption",
    "DataOption",
    "EventsOption",
    "BootOption",
    "SeedOption",
    "evaluate",
    "recalibrate",
    "report",
]

ModelOption = Annotated[
    str, typer.Option("--model", help="Registered model URI or exported model directory.")
]
DataOption = Annotated[
    Path, typer.Option(help="Labelled baseline table: CSV, Excel or Parquet.")
]
EventsOption = Annotated[
    Path | None, typer.Option(help="Raw CRS event table, for regrading other scales.")
]
BootOption = Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the intervals.")]
SeedOption = Annotated[int, typer.Option(help="Seed of the bootstrap and cross-fitting.")]


def _cohort(data: Path, events: Path | None, mapping: Path | None, sheet: str | None,
            strict: bool):
    """Validated rows, labels and their description (counts and fingerprints only)."""
    from crsrisk.evaluation.validation import data_description

    loaded, labels = labelled_cohort(data, events, mapping, sheet=sheet, strict=strict)
    result = loaded.result
    description = data_description(
        result.valid, labels.severe, loaded.provenance, rows_read=result.n_read,
        rows_rejected=result.n_rejected_rows, regraded=labels.n_regraded,
    )
    return result.valid, labels.severe, description


def _tracking(config: Path | None):
    return _settings(config).tracking


def _settings(config: Path | None):
    from crsrisk.config import load_train_config

    return load_train_config(config)


def _interval(m: dict | None, why: dict[str, str] | None = None, name: str = "") -> str:
    """``estimate [lower, upper]``, or n/a with the reason (``why``: metric -> reason)."""
    why = why or {}
    if not m or m.get("estimate") is None:
        return f"n/a ({why.get(name, 'not computed')})"
    if m.get("lower") is None or m.get("upper") is None:
        return (f"{m['estimate']:.3f} (no interval: "
                f"{why.get(f'{name} interval', 'not computed')})")
    return f"{m['estimate']:.3f} [{m['lower']:.3f}, {m['upper']:.3f}]"


@app.command()
@user_errors
def evaluate(
    data: DataOption,
    model: ModelOption = DEFAULT_MODEL_URI,
    events: EventsOption = None,
    mapping: MappingOption = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the metrics JSON (default: print it).")
    ] = None,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    log: Annotated[
        bool, typer.Option(help="Record an MLflow evaluation run linked to the model version.")
    ] = True,
    config: ConfigOption = None,
    allow_training_rows: Annotated[
        bool, typer.Option("--allow-training-rows",
                           help="Evaluate even when most rows were seen in training; every "
                                "output then says it is apparent (in-sample) performance.")
    ] = False,
) -> None:
    """External validation: metrics with 95% intervals on a new labelled cohort, logged."""
    import time

    from crsrisk.evaluation.validation import (
        APPARENT,
        evaluate_model,
        evaluation_payload,
        write_json,
    )
    from crsrisk.mlops.evaluation_runs import log_evaluation
    from crsrisk.mlops.loading import load_model

    if out is not None and out.suffix.lower() != ".json":
        raise _error(f"--out {out} must end in .json.")
    _check_distinct(data, events, mapping, config, model, out)
    settings = _settings(config)
    risk_model = load_model(model)
    valid, severe, description = _cohort(data, events, mapping, sheet, strict)
    start = time.perf_counter()
    say(f"evaluating on {len(valid):,} rows: {n_boot} bootstrap resamples for the model and "
        "each published score, then subgroups")
    evaluation = evaluate_model(risk_model, valid, severe, n_boot=n_boot, seed=seed,
                                allow_training_rows=allow_training_rows)
    say(f"evaluated in {time.perf_counter() - start:.1f} s")
    description.update(validation=evaluation.validation,
                       rows_seen_in_training=evaluation.rows_seen_in_training)
    payload = evaluation_payload(evaluation, risk_model, model, description,
                                 min_cell=settings.privacy.min_cell)
    for note in evaluation.notes:
        say(f"note: {note}")
    metrics = payload["metrics"]
    if evaluation.validation == APPARENT:
        say(f"warning: {APPARENT}: the model was trained on these rows, so every figure below "
            "is optimistic")
    say(f"{risk_model.name} v{risk_model.version} ({risk_model.kind}) on {data.name}, "
        f"{evaluation.validation}: {description['rows_valid']:,} rows, "
        f"{description['events']:,} severe "
        f"({description['prevalence']:.1%}); 95% bootstrap intervals, {n_boot} resamples")
    for name in ("auroc", "auprc", "brier", "log_loss", "calibration_slope",
                 "calibration_intercept", "ece", "sensitivity_high", "npv_low"):
        say(f"  {name:<22}{_interval(metrics.get(name), evaluation.undefined, name)}")
    for score, table in payload["comparators"].items():
        if isinstance(table, dict):
            say(f"  {score + ' AUROC':<22}{_interval(table.get('auroc'))} (cross-fitted here)")
    if log:
        logged = log_evaluation(payload, risk_model, model, settings.tracking)
        payload["tracking"] = {"run_id": logged.run_id, "message": logged.message,
                               "linked_version": (f"{logged.linked.name}/{logged.linked.version}"
                                                  if logged.linked else None)}
        say(logged.message)
    if out is None:
        typer.echo(json.dumps(payload, indent=2, allow_nan=False))
    else:
        write_json(payload, out)
        say(f"metrics written to {out}")


@app.command()
@user_errors
def recalibrate(
    data: DataOption,
    model: ModelOption = DEFAULT_MODEL_URI,
    events: EventsOption = None,
    mapping: MappingOption = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
    site: Annotated[
        str | None, typer.Option(help="Name of the site, for the record (default: the file name).")
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="Folds of the cross-validated 'after'.")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation folds.")] = 0,
    config: ConfigOption = None,
) -> None:
    """Refit calibration intercept and slope for a new site; register it as challenger."""
    from crsrisk.evaluation.recalibration import recalibrate as fit_recalibration
    from crsrisk.mlops.evaluation_runs import register_recalibrated
    from crsrisk.mlops.loading import load_model
    from crsrisk.mlops.registry import check_store

    tracking = _tracking(config)
    check_store(tracking)  # the recalibrated model is registered there: fail now, not then
    source = load_model(model)
    valid, severe, description = _cohort(data, events, mapping, sheet, strict)
    cohort = site or data.name
    result = fit_recalibration(source, valid, severe, cohort=cohort, folds=folds, seed=seed)
    say(f"recalibration on {cohort}: logit(new risk) = {result.intercept:+.3f} + "
        f"{result.slope:.3f} x logit(current risk)")
    say(f"{'':<24}{'before':>10}{f'after ({folds}-fold CV)':>22}")
    for name in ("calibration_intercept", "calibration_slope", "log_loss", "brier", "ece",
                 "auroc"):
        say(f"  {name:<22}{result.before[name]:>10.3f}{result.after_cv[name]:>22.3f}")
    say("(after, refitted on every row and measured on them, is intercept 0 and slope 1 by "
        "construction; the cross-validated column is the honest estimate)")
    registered = register_recalibrated(result, model, source, description, tracking)
    say(f"registered version {registered.version} as challenger (recalibrated from "
        f"{registered.source}); make it champion with crsrisk promote {registered.version} "
        "--reason TEXT")
    typer.echo(f"{registered.model_uri} version {registered.version}")


@app.command()
@user_errors
def report(
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")],
    model: ModelOption = DEFAULT_MODEL_URI,
    data: Annotated[
        Path | None,
        typer.Option(help="Labelled cohort for Table 1, performance, SHAP and subgroups."),
    ] = None,
    events: EventsOption = None,
    mapping: MappingOption = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    config: ConfigOption = None,
) -> None:
    """One self-contained HTML model report (TRIPOD+AI), images embedded."""
    import time

    from crsrisk.mlops.loading import load_model
    from crsrisk.report.build import build_report, write_report

    if out.suffix.lower() not in (".html", ".htm"):
        raise _error(f"--out {out} must end in .html.")
    if data is None and (sheet is not None or strict):
        raise _error("--sheet and --strict say how to read --data: give --data too.")
    _check_distinct(data, events, mapping, config, model, out)
    start = time.perf_counter()
    settings = _settings(config)
    risk_model = load_model(model)
    cohort = _cohort(data, events, mapping, sheet, strict) if data is not None else None
    html = build_report(risk_model, model, cohort, n_boot=n_boot, seed=seed,
                        tracking=settings.tracking, min_cell=settings.privacy.min_cell,
                        progress=say)
    write_report(html, out)
    say(f"report written to {out} ({len(html) / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s)")


def _check_distinct(data: Path | None, events: Path | None, mapping: Path | None,
                    config: Path | None, model: str, out: Path | None) -> None:
    from crsrisk.io import check_distinct_paths

    check_distinct_paths({"--data": data, "--events": events, "--mapping": mapping,
                          "--config": config, "--model": model if Path(model).exists() else None},
                         {"--out": out})


def _error(message: str) -> Exception:
    from crsrisk.errors import CrsriskError

    return CrsriskError(message)
