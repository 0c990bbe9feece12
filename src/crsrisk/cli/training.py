"""Commands for training and the registry: train, promote, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli.common import (
    ConfigOption,
    MappingOption,
    app,
    labelled_cohort,
    say,
    training_progress,
    user_errors,
)

__all__ = ["train", "promote", "models"]


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Labelled baseline table, CSV or Parquet.")],
    events: Annotated[Path | None, typer.Option(help="Raw CRS event table.")] = None,
    mapping: MappingOption = None,
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
    loaded, labels = labelled_cohort(data, events, mapping)
    valid = loaded.result.valid
    loaded_at = time.perf_counter()
    with training_progress() as progress:
        result = train_models(valid, labels.severe, cfg, progress=progress)
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
