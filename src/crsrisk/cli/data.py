"""Commands for tables: simulate, validate, contract, suggest-mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crsrisk.cli.common import (
    EXIT_REJECTED,
    MappingOption,
    SheetOption,
    StrictOption,
    app,
    file_stem,
    say,
    user_errors,
)
from crsrisk.errors import CrsriskError

__all__ = ["simulate", "validate", "contract", "suggest_mapping"]


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
    input: Annotated[Path, typer.Argument(help="Baseline table: CSV, Excel or Parquet.")],
    events: Annotated[
        Path | None, typer.Option(help="Raw CRS event table, for regrading other scales.")
    ] = None,
    mapping: MappingOption = None,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows [default: <input>.rejected.csv here]."),
    ] = None,
    sheet: SheetOption = None,
    strict: StrictOption = False,
) -> None:
    """Check a table against the data contract. Exit 0 all valid, 1 rows rejected or values
    blanked, 2 unusable."""
    from crsrisk.contract.grading import LabelError, resolve_labels
    from crsrisk.contract.load import load_baseline, load_events
    from crsrisk.contract.validate import ContractRejection
    from crsrisk.io import check_distinct_paths, table_format, write_table

    rejected = rejected or Path(f"{file_stem(input)}.rejected.csv")
    table_format(rejected)
    check_distinct_paths({"input": input, "--events": events, "--mapping": mapping},
                         {"--rejected": rejected})
    try:
        loaded = load_baseline(input, mapping=mapping, sheet=sheet, strict=strict)
    except ContractRejection as exc:
        write_table(exc.rejected, rejected)
        say(f"rejected rows written to {rejected}")
        raise
    result = loaded.result
    blanked = f", {result.n_blanked:,} implausible value(s) blanked" if result.n_blanked else ""
    say(f"read {result.n_read:,} rows: {len(result.valid):,} valid, "
        f"{result.n_rejected_rows:,} rejected{blanked}")
    for (column, check, action), count in result.rejected_by_rule().items():
        say(f"  {count:>8,}  {column}: {check}" + (" (blanked)" if action == "blanked" else ""))
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
    if result.n_rejected_rows or result.n_blanked or event_rows_rejected:
        raise typer.Exit(EXIT_REJECTED)


@app.command()
@user_errors
def contract(
    format: Annotated[
        str,
        typer.Option("--format", help="markdown, csv-template, xlsx-template or json-schema."),
    ] = "markdown",
    out: Annotated[
        Path | None, typer.Option(help="Write here instead of printing [xlsx-template: needed].")
    ] = None,
) -> None:
    """Print the data contract: every column with type, unit, allowed values, required, meaning."""
    from crsrisk.contract import render
    from crsrisk.io import atomic_path

    if format not in render.FORMATS:
        raise CrsriskError(f"unknown --format {format!r}: use one of {', '.join(render.FORMATS)}.")
    if format == "xlsx-template":
        if out is None:
            raise CrsriskError("--format xlsx-template needs --out FILE.xlsx.")
        with atomic_path(out) as tmp:
            render.write_xlsx_template(tmp)
        say(f"wrote the contract's Excel template to {out}")
        return
    text = {"markdown": render.markdown, "csv-template": render.csv_template,
            "json-schema": render.json_schema}[format]()
    if out is None:
        typer.echo(text, nl=False)
        return
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    say(f"wrote the contract ({format}) to {out}")


@app.command("suggest-mapping")
@user_errors
def suggest_mapping(
    input: Annotated[Path, typer.Argument(help="The site's own table: CSV, Excel or Parquet.")],
    out: Annotated[Path, typer.Option(help="Where to write the draft mapping (YAML).")],
    sheet: SheetOption = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Draft a site mapping to review. Exit 0 every column found, 1 some optional ones not,
    2 a required one not (named, with the closest candidates)."""
    from crsrisk.contract.suggest import suggest_mapping as suggest
    from crsrisk.io import atomic_path

    if out.exists() and not force:
        raise CrsriskError(f"{out} exists: give another --out, or --force to overwrite it.")
    suggestion = suggest(input, sheet=sheet)
    with atomic_path(out) as tmp:
        tmp.write_text(suggestion.to_yaml(input.name), encoding="utf-8")
    for source, (target, confidence, why) in suggestion.rename.items():
        say(f"  {source!r} -> {target} ({confidence}: {why})")
    for column, (unit, confidence, why) in suggestion.units.items():
        say(f"  {column} in {unit} ({confidence}: {why})")
    for column, (fmt, confidence, why) in suggestion.dates.items():
        say(f"  {column} dates as {fmt} ({confidence}: {why})")
    for column, (value, confidence, why) in suggestion.constants.items():
        say(f"  {column} = {value} for every row ({confidence}: {why})")
    say(f"wrote the draft mapping to {out}: review it, then crsrisk validate {input} "
        f"--mapping {out}")
    if suggestion.missing_optional:
        say(f"optional columns not found (left missing): "
            f"{', '.join(suggestion.missing_optional)}")
    for column, close in suggestion.missing_required.items():
        say(f"error: required column {column} not found (closest: "
            f"{', '.join(map(repr, close)) or 'none'}): rename one in {out}")
    if suggestion.exit_code:
        raise typer.Exit(suggestion.exit_code)
