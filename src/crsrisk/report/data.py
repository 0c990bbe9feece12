"""The report's tables: cohort characteristics, missingness, performance, comparisons, subgroups.

Each function returns a `pandas.DataFrame` of display text, ready for the template. Labels and
units of contract columns come from the contract (`crsrisk.contract.spec`) through
`column_label`; every count of patients goes through `crsrisk.evaluation.privacy`, so small cells
are withheld and sites coded before anything is shown.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crsrisk.contract.spec import BASELINE_COLUMNS, BASELINE_SPECS, ColumnSpec
from crsrisk.evaluation.privacy import (
    MIN_CELL,
    check_min_cell,
    private_groups,
    site_codes,
    small,
    suppress_small_counts,
    withheld,
)
from crsrisk.evaluation.validation import Evaluation
from crsrisk.features.builder import BURDEN_MARKER_OF
from crsrisk.mlops.evaluation_runs import ModelRef

__all__ = [
    "SCORE_NAMES",
    "CATEGORICAL_ROWS",
    "NOT_IN_TABLE_ONE",
    "NOT_PREDICTORS",
    "METRIC_NAMES",
    "COLUMN_SPECS",
    "TrainingRecord",
    "training_record",
    "column_label",
    "predictors_table",
    "table_one",
    "missingness_table",
    "performance_table",
    "comparison_table",
    "training_candidates_table",
    "TRAINING_DOCUMENTS",
    "sample_size_table",
    "optimism_table",
    "internal_external_tables",
    "recalibration_table",
    "subgroups_display",
    "ci_text",
]

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SCORE_NAMES = {"m_easix": "m-EASIX", "easix": "EASIX", "car_hematotox": "CAR-HEMATOTOX"}
CATEGORICAL_ROWS = ("site", "sex", "ecog", "diagnosis", "therapy_class", "product",
                    "costim_domain", "lymphodepletion")
NOT_IN_TABLE_ONE = ("patient_id", "infusion_date")
# Contract columns the model does not use (site and sex only for subgroups).
NOT_PREDICTORS = ("patient_id", "site", "infusion_date", "sex", "weight_kg")
METRIC_NAMES = {
    "auroc": "AUROC (discrimination)",
    "auprc": "AUPRC (average precision)",
    "brier": "Brier score",
    "log_loss": "Log loss",
    "calibration_slope": "Calibration slope (1 = ideal)",
    "calibration_intercept": "Calibration-in-the-large (0 = ideal)",
    "ece": "Expected calibration error (10 quantile bins)",
    "prevalence": "Observed severe CRS rate",
}
COLUMN_SPECS: dict[str, ColumnSpec] = BASELINE_SPECS
# Aggregate JSON records of a training run (crsrisk.mlops.tracking): no patient rows in them.
TRAINING_DOCUMENTS = ("sample_size.json", "optimism.json", "internal_external.json")
INSTABILITY_PLOT = "plots/instability.png"


# ------------------------------------------------------------------------------------------
# What the registry knows
# ------------------------------------------------------------------------------------------


@dataclass
class TrainingRecord:
    """The training run of a registered version, read back from MLflow (no rows in it)."""

    ref: ModelRef
    run_id: str | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    candidates: pd.DataFrame
    plots: dict[str, bytes]
    version_tags: dict[str, str]
    recalibration: dict[str, dict] | None = None
    evaluations: list[tuple[str, str]] = field(default_factory=list)
    # The small-data records of the run (`TRAINING_DOCUMENTS`), where training logged them.
    documents: dict[str, dict] = field(default_factory=dict)
    instability: bytes | None = None  # the instability plot of the bootstrap models


def training_record(client: MlflowClient, ref: ModelRef) -> TrainingRecord:
    """Tags, parameters, candidate metrics and plots of the run that built ``ref``.

    A recalibrated version points at its recalibration run; the candidates then come from the
    training run of the version it was recalibrated from.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    version_tags = dict(client.get_model_version(ref.name, ref.version).tags)
    evaluations = sorted(
        ((k[len("evaluation."):], v) for k, v in version_tags.items()
         if k.startswith("evaluation.")), key=lambda kv: kv[1])
    empty = TrainingRecord(ref, None, {}, {}, {}, pd.DataFrame(), {}, version_tags,
                           evaluations=evaluations)
    if not ref.run_id:
        return empty
    try:
        run = client.get_run(ref.run_id)
        recalibration = None
        if run.data.tags.get("run_type") == "recalibration":
            recalibration = {"tags": dict(run.data.tags), "metrics": dict(run.data.metrics),
                             "params": dict(run.data.params)}
            source = run.data.tags.get("source_run_id")
            if not source:
                empty.recalibration = recalibration
                return empty
            run = client.get_run(source)
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    except MlflowException:
        return empty
    selected = run.data.tags.get("selected_candidate", "")
    rows = []
    for child in children:
        name = child.data.tags.get("mlflow.runName", child.info.run_name)
        metrics = dict(child.data.metrics)
        if name == selected:  # intervals, where training logged them, are on the parent run
            metrics.update({k: v for k, v in run.data.metrics.items()
                            if k.endswith(("_lower", "_upper"))})
        rows.append({"candidate": name, "selected": name == selected,
                     "calibration": child.data.params.get("calibration", ""), **metrics})
    candidates = pd.DataFrame(rows)
    if not candidates.empty:
        order = list(dict.fromkeys(run.data.params.get("candidates", "").strip("[]")
                                   .replace('"', "").replace(" ", "").split(",")))
        rank = {name: i for i, name in enumerate(order)}
        candidates = candidates.sort_values("candidate", key=lambda s: s.map(rank).fillna(99),
                                            kind="stable").reset_index(drop=True)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("plots/roc_test.png", "plots/calibration_test.png", INSTABILITY_PLOT,
                     *TRAINING_DOCUMENTS):
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path=path, dst_path=tmp)
                files[path] = Path(local).read_bytes()
            except (MlflowException, OSError):
                continue
    documents = {}
    for path in TRAINING_DOCUMENTS:
        try:
            documents[path] = json.loads(files.pop(path))
        except (KeyError, ValueError):
            continue  # not logged (an older run) or unreadable: the report says it is absent
    instability = files.pop(INSTABILITY_PLOT, None)
    return TrainingRecord(ref, run.info.run_id, dict(run.data.tags), dict(run.data.params),
                          dict(run.data.metrics), candidates, files, version_tags,
                          recalibration, evaluations, documents, instability)


# ------------------------------------------------------------------------------------------
# Labels and numbers
# ------------------------------------------------------------------------------------------


def column_label(name: str) -> str:
    """How the report names contract column ``name``: its label and unit, e.g. ``"CRP (mg/L)"``.

    Columns without a clinical label (``site``, ``infusion_date``) read as their contract name
    in words (``"Site"``, ``"Infusion date"``).
    """
    spec = COLUMN_SPECS.get(name)
    if spec is not None and spec.label:
        return spec.heading
    return name.replace("_", " ").capitalize()


def _num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def ci_text(estimate: float | None, lower: float | None = None, upper: float | None = None,
            digits: int = 3) -> str:
    """``estimate [lower, upper]`` to ``digits`` decimals; ``–`` for a missing estimate."""
    if estimate is None or not math.isfinite(estimate):
        return "–"
    text = f"{estimate:.{digits}f}"
    if lower is not None and upper is not None and math.isfinite(lower) and math.isfinite(upper):
        text += f" [{lower:.{digits}f}, {upper:.{digits}f}]"
    return text


def _count_cell(count: object, whole: int) -> str:
    """``n (%)``, or the withheld text as it came from `suppress_small_counts`."""
    if isinstance(count, str):
        return count
    return f"{int(count):,} ({_pct(int(count), whole)})"


def _levels(column: pd.Series) -> list:
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        seen = set(present.unique())
        return [c for c in column.cat.categories if c in seen]
    return sorted(present.unique(), key=str)


# ------------------------------------------------------------------------------------------
# Tables of the cohort
# ------------------------------------------------------------------------------------------


def predictors_table() -> pd.DataFrame:
    """The contract columns the model uses, each with its label and the contract's meaning."""
    return pd.DataFrame([
        {"Predictor": column_label(spec.name), "Contract column": spec.name,
         "Meaning": spec.meaning}
        for spec in BASELINE_COLUMNS if spec.name not in NOT_PREDICTORS])


def table_one(valid: pd.DataFrame, severe: pd.Series, min_cell: int = MIN_CELL) -> pd.DataFrame:
    """Cohort characteristics by outcome (Table 1), small cells withheld.

    Parameters
    ----------
    valid
        Validated contract rows.
    severe
        ASTCT grade >= 3 (0/1), aligned with ``valid``.
    min_cell
        Counts of fewer patients read ``"< min_cell"`` (`crsrisk.evaluation.privacy`); so do
        the median and IQR of fewer recorded values. Sites read ``site_1`` .. ``site_k``.

    Returns
    -------
    pandas.DataFrame
        ``Variable``, ``Level``, then one column per group (overall, no severe CRS, severe CRS;
        the group size in the header) and ``Missing`` (% of all rows). Continuous variables are
        median [IQR], categorical and yes/no variables n (% of rows where recorded).
    """
    check_min_cell(min_cell)
    y = severe.astype(int).to_numpy()
    groups = {
        f"Overall (n={len(y):,})": np.ones(len(y), dtype=bool),
        f"No severe CRS (n={int((y == 0).sum()):,})": y == 0,
        f"Severe CRS (n={int(y.sum()):,})": y == 1,
    }
    hidden = withheld(min_cell)
    rows = []
    for spec in BASELINE_COLUMNS:
        name = spec.name
        if name in NOT_IN_TABLE_ONE or name not in valid.columns:
            continue
        column = site_codes(valid[name]) if name == "site" else valid[name]
        n_missing = int(column.isna().sum())
        missing = hidden if small(n_missing, min_cell) else _pct(n_missing, len(column))
        label = column_label(name)
        if spec.kind in ("float", "int") and name not in CATEGORICAL_ROWS:
            values = column.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
            cells = {}
            for header, mask in groups.items():
                v = values[mask & np.isfinite(values)]
                if small(v.size, min_cell):
                    cells[header] = f"{hidden} recorded"
                elif v.size:
                    cells[header] = (f"{_num(np.median(v))} [{_num(np.quantile(v, 0.25))}, "
                                     f"{_num(np.quantile(v, 0.75))}]")
                else:
                    cells[header] = "–"
            rows.append({"Variable": label, "Level": "median [IQR]", **cells, "Missing": missing})
        elif spec.kind == "bool":
            cells = {}
            for header, mask in groups.items():
                part = column[mask]
                yes = int(part.eq(True).sum())
                cells[header] = (hidden if small(yes, min_cell)
                                 else _count_cell(yes, int(part.notna().sum())))
            rows.append({"Variable": label, "Level": "yes", **cells, "Missing": missing})
        else:
            rows.append({"Variable": label, "Level": "", **dict.fromkeys(groups, ""),
                         "Missing": missing})
            text = column.astype("Float64").map(lambda v: f"{v:.0f}", na_action="ignore") \
                if spec.kind == "int" else column
            levels = _levels(text)
            counts = pd.DataFrame({header: [int(text[mask].eq(level).sum()) for level in levels]
                                   for header, mask in groups.items()})
            shown = suppress_small_counts(counts, list(groups), min_cell, complementary=True)
            recorded = {header: int(text[mask].notna().sum()) for header, mask in groups.items()}
            for i, level in enumerate(levels):
                cells = {header: _count_cell(shown.at[i, header], recorded[header])
                         for header in groups}
                rows.append({"Variable": "", "Level": str(level), **cells, "Missing": ""})
    return pd.DataFrame(rows)


def _applicability(valid: pd.DataFrame) -> dict[str, tuple[str, np.ndarray]]:
    """Columns that only apply to some patients: who they apply to, and the mask."""
    car_t = valid["therapy_class"].eq("CAR-T").to_numpy(dtype=bool, na_value=False)
    out = {"cell_dose_1e6_per_kg": ("CAR-T", car_t), "costim_domain": ("CAR-T", car_t)}
    for marker in ("spd_cm2", "marrow_blasts_pct", "marrow_plasma_cells_pct"):
        diagnoses = [d for d, m in BURDEN_MARKER_OF.items() if m == marker]
        mask = valid["diagnosis"].isin(diagnoses).to_numpy(dtype=bool, na_value=False)
        out[marker] = (", ".join(diagnoses), mask)
    return out


def _share(part: int, whole: int, min_cell: int) -> str:
    """``part`` of ``whole`` as a percentage, withheld when either is a small cell."""
    if small(part, min_cell) or small(whole, min_cell):
        return withheld(min_cell)
    return _pct(part, whole)


def missingness_table(valid: pd.DataFrame, severe: pd.Series,
                      min_cell: int = MIN_CELL) -> pd.DataFrame:
    """Missing values per contract column, overall, where the column applies, and by outcome.

    Parameters
    ----------
    valid, severe
        As for `table_one`.
    min_cell
        Counts of fewer patients, and percentages of them, read ``"< min_cell"``.

    Returns
    -------
    pandas.DataFrame
        ``Variable``, ``Applies to``, ``Missing (all rows)``, ``Missing where applicable``,
        ``in severe CRS``, ``in no severe CRS`` (the last two where applicable), most missing
        first.
    """
    check_min_cell(min_cell)
    hidden = withheld(min_cell)
    y = severe.astype(int).to_numpy()
    applies = _applicability(valid)
    rows = []
    for spec in BASELINE_COLUMNS:
        name = spec.name
        if name not in valid.columns or name == "patient_id":
            continue
        missing = valid[name].isna().to_numpy()
        who, mask = applies.get(name, ("all", np.ones(len(valid), dtype=bool)))
        n_app = int(mask.sum())
        miss_app = int((missing & mask).sum())
        if small(n_app, min_cell):
            where = hidden
        elif small(miss_app, min_cell):
            where = f"{hidden} of {n_app:,}"
        else:
            where = f"{miss_app:,} of {n_app:,} ({_pct(miss_app, n_app)})"
        rows.append({
            "Variable": column_label(name),
            "Applies to": who,
            "Missing (all rows)": _share(int(missing.sum()), len(missing), min_cell),
            "Missing where applicable": where,
            "in severe CRS": _share(int((missing & mask & (y == 1)).sum()),
                                    int((mask & (y == 1)).sum()), min_cell),
            "in no severe CRS": _share(int((missing & mask & (y == 0)).sum()),
                                       int((mask & (y == 0)).sum()), min_cell),
            "_order": miss_app / n_app if n_app else 0.0,
        })
    frame = pd.DataFrame(rows).sort_values("_order", ascending=False, kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Tables of performance
# ------------------------------------------------------------------------------------------


def _metric_cells(table: pd.DataFrame) -> dict[str, str]:
    return {r.metric: ci_text(r.estimate, r.lower, r.upper) for r in table.itertuples()}


def performance_table(evaluation: Evaluation) -> pd.DataFrame:
    """The model's metrics with 95% intervals, in words."""
    cells = _metric_cells(evaluation.metrics)
    rows = [{"Metric": label, "Estimate [95% CI]": cells.get(key, "–")}
            for key, label in METRIC_NAMES.items()]
    low, high = evaluation.thresholds["low"], evaluation.thresholds["high"]
    for key, label in (("sensitivity_high", f"Sensitivity of the high tier (risk >= {high:.3f})"),
                       ("specificity_high", f"Specificity of the high tier (risk >= {high:.3f})"),
                       ("ppv_high", f"PPV of the high tier (risk >= {high:.3f})"),
                       ("npv_low", f"NPV of the low tier (risk < {low:.3f})"),
                       ("sensitivity_low", f"Sensitivity of 'not low' (risk >= {low:.3f})")):
        rows.append({"Metric": label, "Estimate [95% CI]": cells.get(key, "–")})
    return pd.DataFrame(rows)


def comparison_table(evaluation: Evaluation, model_label: str) -> pd.DataFrame:
    """The model against the published scores on the report's cohort, with 95% intervals."""
    rows = []
    for name, table in (("model", evaluation.metrics), *evaluation.comparators.items()):
        cells = _metric_cells(table)
        rows.append({
            "Strategy": model_label if name == "model" else SCORE_NAMES.get(name, name),
            "AUROC": cells.get("auroc", "–"), "AUPRC": cells.get("auprc", "–"),
            "Brier": cells.get("brier", "–"), "Log loss": cells.get("log_loss", "–"),
        })
    return pd.DataFrame(rows)


def training_candidates_table(record: TrainingRecord) -> pd.DataFrame:
    """Candidates of the training run: cross-validated and held-out test metrics."""
    rows = []
    for r in record.candidates.to_dict("records"):
        def get(key: str, r: dict = r) -> float | None:
            value = r.get(key)
            return None if value is None or pd.isna(value) else float(value)

        rows.append({
            "Candidate": r["candidate"] + (" (selected)" if r.get("selected") else ""),
            "Calibration": r.get("calibration", ""),
            "CV log loss": ci_text(get("cv_log_loss"), digits=4),
            "CV AUROC": ci_text(get("cv_auroc")),
            "Test AUROC": ci_text(get("test_auroc"), get("test_auroc_lower"),
                                  get("test_auroc_upper")),
            "Test log loss": ci_text(get("test_log_loss"), get("test_log_loss_lower"),
                                     get("test_log_loss_upper"), digits=4),
            "Test Brier": ci_text(get("test_brier"), get("test_brier_lower"),
                                  get("test_brier_upper"), digits=4),
            "Test calibration slope": ci_text(get("test_calibration_slope"),
                                              get("test_calibration_slope_lower"),
                                              get("test_calibration_slope_upper")),
        })
    return pd.DataFrame(rows)


def _float(value: object) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)  # type: ignore[arg-type]
    return value if math.isfinite(value) else None


def sample_size_table(record: TrainingRecord) -> pd.DataFrame | None:
    """Riley et al.'s minimum sample size per candidate and training's decision, or None when
    the run logged none."""
    document = record.documents.get("sample_size.json")
    if not document or not document.get("sample_size"):
        return None
    return pd.DataFrame([{
        "Candidate": c["candidate"],
        "Parameters": f"{c['parameters']:,}",
        "Minimum patients": f"{c['parameter_n']:,}",
        "Minimum events": f"{round(c['parameter_n'] * c['prevalence']):,}",
        "Shrinkage >= 0.9 needs": f"{c['n_shrinkage']:,}",
        "R2 optimism <= 0.05 needs": f"{c['n_optimism']:,}",
        "Decision": c["reason"],
    } for c in document["sample_size"]])


def optimism_table(record: TrainingRecord) -> pd.DataFrame | None:
    """Apparent and bootstrap optimism-corrected figures per candidate and for the whole
    procedure (row "selected"), or None when training used a held-out test set."""
    document = record.documents.get("optimism.json")
    if not document or not document.get("optimism"):
        return None
    frame = pd.DataFrame(document["optimism"])
    rows = []
    for candidate, part in frame.groupby("candidate", sort=False):
        by = part.set_index("metric")
        rows.append({
            "Candidate": ("whole procedure (selection included)" if candidate == "selected"
                          else candidate),
            "Apparent AUROC": ci_text(_float(by.loc["auroc", "apparent"])),
            "Corrected AUROC": ci_text(_float(by.loc["auroc", "corrected"])),
            "Corrected calibration slope": ci_text(
                _float(by.loc["calibration_slope", "corrected"]), digits=2),
            "Corrected intercept": ci_text(
                _float(by.loc["calibration_intercept", "corrected"]), digits=2),
            "Corrected Brier": ci_text(_float(by.loc["brier", "corrected"]), digits=4),
            "Repeats": f"{int(by.loc['auroc', 'repeats']):,}",
        })
    return pd.DataFrame(rows)


def internal_external_tables(record: TrainingRecord) -> dict[str, pd.DataFrame]:
    """Per grouping (``"site"``, ``"year"``), the internal-external table as training logged it
    (already private: sites coded, small counts withheld)."""
    document = record.documents.get("internal_external.json") or {}
    out = {}
    for by, rows in (document.get("tables") or {}).items():
        out[by] = pd.DataFrame([{
            "Held out": f"{'site' if by == 'site' else 'infusion year'} {r[by]}",
            "Rows": r["rows"] if isinstance(r["rows"], str) else f"{int(r['rows']):,}",
            "Events": ("–" if r["events"] is None else r["events"]
                       if isinstance(r["events"], str) else f"{int(r['events']):,}"),
            "Selected candidate": r.get("selected") or "–",
            "AUROC": ci_text(_float(r.get("auroc"))),
            "Calibration slope": ci_text(_float(r.get("calibration_slope")), digits=2),
            "Intercept": ci_text(_float(r.get("calibration_intercept")), digits=2),
            "Brier": ci_text(_float(r.get("brier")), digits=4),
        } for r in rows])
    return out


def recalibration_table(metrics: dict[str, float]) -> pd.DataFrame:
    """Before and after (cross-validated) metrics of a recalibration run."""
    return pd.DataFrame([
        {"": name, "before": ci_text(metrics.get(f"before_{name}", math.nan)),
         "after (cross-validated)": ci_text(metrics.get(f"after_cv_{name}", math.nan))}
        for name in ("calibration_intercept", "calibration_slope", "log_loss", "brier",
                     "auroc")])


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return math.nan if value is None or pd.isna(value) else float(value)


def subgroups_display(subgroups: pd.DataFrame, min_cell: int = MIN_CELL) -> pd.DataFrame:
    """The subgroup table of `crsrisk.evaluation.metrics.subgroup_table`, fit to read and share.

    Sites are coded and small cells withheld (`crsrisk.evaluation.privacy.private_groups`): a
    level of fewer than ``min_cell`` patients shows no outcome and no metric, one with fewer
    than ``min_cell`` events or non-events no events and nothing computed from the outcome.
    """
    rows = []
    for r in private_groups(subgroups, min_cell).to_dict("records"):
        hidden = r["withheld"]
        if hidden == "n":
            auroc = "–"
        elif hidden == "outcome":
            auroc = "withheld"
        elif r["too_few_events"]:
            auroc = "too few events"
        else:
            auroc = ci_text(_value(r, "auroc"), _value(r, "auroc_lower"), _value(r, "auroc_upper"))
        events, n = r["events"], r["n"]
        observed, predicted = _value(r, "observed"), _value(r, "mean_predicted")
        rows.append({
            "Variable": column_label(r["variable"]) if r["variable"] != "age_band"
            else "Age band",
            "Level": r["level"],
            "n": n if isinstance(n, str) else f"{int(n):,}",
            "Events": ("–" if events is None else events if isinstance(events, str)
                       else f"{int(events):,}"),
            "Observed": f"{100 * observed:.1f}%" if math.isfinite(observed) else "–",
            "Mean predicted": f"{100 * predicted:.1f}%" if math.isfinite(predicted) else "–",
            "AUROC [95% CI]": auroc,
            "Calibration-in-the-large": ci_text(_value(r, "calibration_intercept"), digits=2),
            "Sensitivity, high tier": ci_text(_value(r, "sensitivity_high"), digits=2),
        })
    return pd.DataFrame(rows)
