"""Commands for training and the registry: train, promote, models."""

from __future__ import annotations

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
    training_progress,
    user_errors,
)

__all__ = ["train", "promote", "models", "say_sample_size", "say_split", "say_bootstrap",
           "say_internal_external", "say_tiers"]


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Labelled baseline table: CSV, Excel or Parquet.")],
    events: Annotated[Path | None, typer.Option(help="Raw CRS event table.")] = None,
    mapping: MappingOption = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
    config: ConfigOption = None,
) -> None:
    """Train, evaluate, log to MLflow and register; prints the model URI and version.

    The tracking store is checked (a probe write) before the data are read.
    """
    import time

    from mlflow.exceptions import MlflowException

    from crsrisk.config import load_train_config
    from crsrisk.mlops.registry import StoreFault, check_store, connect
    from crsrisk.mlops.tracking import log_and_register
    from crsrisk.modeling.train import train_models

    start = time.perf_counter()
    cfg = load_train_config(config)
    check_store(cfg.tracking)  # an unusable store fails now, not after minutes of training
    loaded, labels = labelled_cohort(data, events, mapping, sheet=sheet, strict=strict)
    valid = loaded.result.valid
    loaded_at = time.perf_counter()
    from crsrisk.modeling.candidates import check_candidates
    from crsrisk.modeling.train import check_training_table

    severe = labels.severe.astype(int)
    check_training_table(valid, severe, cfg)  # refuse unusable tables before anything else
    say_sample_size(check_candidates(valid, severe.to_numpy(), cfg),
                    cfg.sample_size.anticipated_auroc)
    with training_progress() as progress:
        result = train_models(valid, labels.severe, cfg, progress=progress)
    for note in result.warnings:
        say(f"warning: {note}")
    trained_at = time.perf_counter()
    if result.design == "split":
        say_split(result)
    else:
        say_bootstrap(result)
    say_internal_external(result, cfg.privacy.min_cell)
    say_tiers(result, valid)
    store = connect(cfg.tracking)
    try:
        registered = log_and_register(store, result, cfg, valid, labels.severe,
                                      loaded.provenance)
    except MlflowException as exc:  # e.g. the store's disk filled up during logging
        reason = (str(exc.message).strip().splitlines() or ["no reason given"])[0].rstrip(".")
        raise StoreFault(f"The tracking store {store.uri} refused the run ({reason}): check its "
                         "free space and permissions, then train again.") from exc
    done = time.perf_counter()
    say(registered.decision)
    say(f"time: load+validate {loaded_at - start:.1f} s, train {trained_at - loaded_at:.1f} s, "
        f"log+register {done - trained_at:.1f} s, total {done - start:.1f} s")
    typer.echo(f"{registered.model_uri} version {registered.version}")


def say_sample_size(sizes, auroc: float) -> None:
    """Riley et al. minimum sample size per candidate, and the decision."""
    if not sizes:
        return
    first = sizes[0].size
    say(f"sample size (Riley et al.; anticipated AUROC {auroc}, prevalence "
        f"{first.prevalence:.3f}, {first.available_n:,} patients; criterion 3, the overall "
        f"risk within +-0.05, needs {first.n_risk:,} whatever the model):")
    say(f"  {'candidate':<17}{'parameters':>11}{'min n':>8}{'min events':>11}  decision")
    for c in sizes:
        say(f"  {c.name:<17}{c.size.parameters:>11}{c.size.parameter_n:>8,}"
            f"{round(c.size.parameter_n * c.size.prevalence):>11,}  {c.reason}")
    from crsrisk.modeling.candidates import PARAMETERS_COUNTED
    from crsrisk.modeling.train import COMPARATORS

    kinds = {"published score" if c.name in COMPARATORS else c.name.removesuffix("_monotone")
             for c in sizes}
    say("  parameters counted:")
    for kind, counted in PARAMETERS_COUNTED.items():
        if kind in kinds:
            say(f"    {kind}: {counted}")


def say_split(result) -> None:
    say(f"{'candidate':<17}{'cv log loss':>12}{'cv AUROC':>10}{'test log loss':>15}"
        f"{'test AUROC':>12}{'calibration':>13}")
    for c in result.candidates:
        mark = " <- selected" if c is result.selected else ""
        say(f"{c.name:<17}{c.cv_metrics['cv_log_loss']:>12.4f}{c.cv_metrics['cv_auroc']:>10.3f}"
            f"{c.test_metrics['log_loss']:>15.4f}{c.test_metrics['auroc']:>12.3f}"
            f"{c.calibration:>13}{mark}")
    selected = result.selected
    auroc = selected.test_intervals.set_index("metric").loc["auroc"]
    gap = selected.cv_metrics["cv_auroc"] - selected.test_metrics["auroc"]
    say(f"selected {selected.name}: test AUROC {auroc['estimate']:.3f} (95% CI "
        f"{auroc['lower']:.3f}-{auroc['upper']:.3f}, {selected.test_metrics['events']} events in "
        f"{len(result.test_index):,} test rows); CV-to-test AUROC gap {gap:+.3f}")


def say_bootstrap(result) -> None:
    """Apparent and optimism-corrected figures of every candidate and of the procedure."""
    opt = result.optimism
    say(f"validation: developed on all {len(result.train_index):,} rows; optimism from "
        f"{opt.repeats} bootstrap repeats of the whole procedure (search, calibration, "
        f"selection) in {opt.seconds:.0f} s ({opt.seconds / max(opt.repeats, 1):.1f} s a repeat)")
    say(f"{'candidate':<17}{'cv AUROC':>9}{'apparent':>9}{'corrected':>10}{'slope':>7}"
        f"{'intercept':>10}{'Brier':>7}")
    table = opt.table.set_index(["candidate", "metric"])
    for name in [c.name for c in result.candidates] + ["selected"]:
        cv = next((f"{c.cv_metrics['cv_auroc']:>9.3f}" for c in result.candidates
                   if c.name == name), f"{'':>9}")
        mark = f" <- {result.selected.name}" if name == "selected" else ""
        say(f"{name:<17}{cv}{table.loc[(name, 'auroc'), 'apparent']:>9.3f}"
            f"{table.loc[(name, 'auroc'), 'corrected']:>10.3f}"
            f"{table.loc[(name, 'calibration_slope'), 'corrected']:>7.2f}"
            f"{table.loc[(name, 'calibration_intercept'), 'corrected']:>+10.2f}"
            f"{table.loc[(name, 'brier'), 'corrected']:>7.3f}{mark}")
    picks = ", ".join(f"{k} {v}" for k, v in sorted(opt.selections.items()))
    say(f"the procedure selected, across repeats: {picks}; the 'selected' row is its honest "
        "figure, selection included")


def say_internal_external(result, min_cell: int) -> None:
    """Internal-external cross-validation: one line per site or infusion year held out."""
    from crsrisk.evaluation.privacy import private_internal_external

    ie = result.internal_external
    if ie is None:
        return
    say(f"internal-external cross-validation ({ie.seconds:.0f} s; each held-out group: the whole "
        "procedure developed on the other groups, tested on it; counts under "
        f"{min_cell} withheld, and the figures of a group with fewer than {min_cell} events or "
        "non-events):")
    for by in ("site", "year"):
        if by in ie.tables:
            table = private_internal_external(ie.tables[by], by, min_cell)
            say(f"  {'held out':<14}{'rows':>7}{'events':>8}  {'selected':<15}{'AUROC':>7}"
                f"{'slope':>7}{'intercept':>10}{'Brier':>7}")
            for r in table.to_dict("records"):
                say(f"  {by} {r[by]!s:<{13 - len(by)}}{r['rows']!s:>7}{r['events']!s:>8}  "
                    f"{r['selected'] or '':<15}{_fmt(r['auroc'], '.3f'):>7}"
                    f"{_fmt(r['calibration_slope'], '.2f'):>7}"
                    f"{_fmt(r['calibration_intercept'], '+.2f'):>10}{_fmt(r['brier'], '.3f'):>7}")
        if by in ie.notes:
            say(f"  by {by}: {ie.notes[by]}")


def _fmt(value, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def say_tiers(result, valid) -> None:
    """Action thresholds with the sensitivity and NPV they reach, and tier counts per class."""
    from crsrisk.modeling.tiers import tier_counts

    say("tiers (risk thresholds of the planning actions; sensitivity and NPV on out-of-fold "
        "risks, reported, not used to place them):")
    for r in result.thresholds.itertuples():
        sens = "n/a" if r.sensitivity != r.sensitivity else f"{r.sensitivity:.2f}"
        npv = "n/a" if r.npv != r.npv else f"{r.npv:.3f}"
        note = f" ({r.note})" if r.note else ""
        say(f"  {r.therapy_class:<11}{r.tier:<13} risk >= {r.risk_at_least:<6} sensitivity "
            f"{sens}, NPV {npv}, {r.at_or_above}/{r.rows} at or above{note}")
    train = valid.loc[result.train_index]
    counts = tier_counts(result.selected.model.score(train, drivers=False), train)
    say("tier counts on the development rows:")
    for line in counts.to_string().splitlines():
        say(f"  {line}")
    ensemble = result.selected.model.uncertainty
    if ensemble is not None:
        say(f"per-patient {ensemble.level:.0%} intervals from {ensemble.members} bootstrap "
            f"refits ({ensemble.method}); mean absolute prediction error {ensemble.mape:.4f}")


@app.command()
@user_errors
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    config: ConfigOption = None,
) -> None:
    """Make a registered version the champion by hand (recorded in the audit trail)."""
    from crsrisk.config import load_train_config
    from crsrisk.mlops.registry import connect
    from crsrisk.mlops.registry import promote as promote_version

    tracking = load_train_config(config).tracking
    store = connect(tracking, create=False)
    promote_version(store, version, reason)
    say(f"version {version} of {store.model_name} is now champion")


@app.command()
@user_errors
def models(config: ConfigOption = None) -> None:
    """Registered versions, their aliases and key metrics, and the alias audit trail."""
    from crsrisk.config import load_train_config
    from crsrisk.mlops.registry import audit_trail, connect, list_versions

    tracking = load_train_config(config).tracking
    store = connect(tracking, create=False)  # looking creates nothing
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
