"""Commands for tables: simulate, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli.common import EXIT_REJECTED, MappingOption, app, file_stem, say, user_errors

__all__ = ["simulate", "validate"]


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
    from crsrisk.io import table_format, write_table
    from crsrisk.simulate.cohort import load_simulation_config, simulate_cohort

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
    from crsrisk.contract.grading import LabelError, resolve_labels
    from crsrisk.contract.load import load_baseline, load_events
    from crsrisk.contract.validate import ContractRejection
    from crsrisk.io import check_distinct_paths, table_format, write_table

    rejected = rejected or Path(f"{file_stem(input)}.rejected.csv")
    table_format(rejected)
    check_distinct_paths({"input": input, "--events": events, "--mapping": mapping},
                         {"--rejected": rejected})
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
