"""The HTML model report: one self-contained file, images embedded, reporting after TRIPOD+AI.

`build_report` gathers what is known about a model (its registry record and training run, and,
when a labelled cohort is given, its performance, explanations and subgroups on that cohort) and
renders it with the packaged Jinja2 template ``templates/report.html.j2`` (autoescaped): plain
HTML and CSS, every figure a base64 PNG, nothing fetched from elsewhere. A tiny inline script
only counts images that failed to render (for the browser test); the page reads the same
without it. Every table follows `crsrisk.evaluation.privacy`: small cells withheld, sites coded.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import pandas as pd
from markupsafe import Markup

from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.evaluation.privacy import MIN_CELL, check_min_cell, withheld
from crsrisk.evaluation.validation import COMPARATOR_METHOD, Evaluation, evaluate_model
from crsrisk.explain.drivers import (
    GlobalExplanation,
    beeswarm_figure,
    dependence_figure,
    driver_label,
    explain_global,
    importance_figure,
)
from crsrisk.io import atomic_path
from crsrisk.mlops.evaluation_runs import find_version
from crsrisk.modeling.riskmodel import RiskModel
from crsrisk.report.data import (
    TrainingRecord,
    comparison_table,
    internal_external_tables,
    missingness_table,
    optimism_table,
    performance_table,
    predictors_table,
    recalibration_table,
    sample_size_table,
    subgroups_display,
    table_one,
    training_candidates_table,
    training_record,
)
from crsrisk.report.figures import calibration_figure, decision_figure, png, roc_figure

__all__ = [
    "SHAP_ROWS",
    "DEPENDENCE_PLOTS",
    "MODEL_TYPES",
    "Progress",
    "SELF_CHECK",
    "SECTIONS",
    "SECTION_NUMBER",
    "TEMPLATE",
    "render",
    "build_report",
    "write_report",
]

if TYPE_CHECKING:
    from crsrisk.config import TrackingConfig

SHAP_ROWS = 5000
DEPENDENCE_PLOTS = 3
# Per model kind: how the report names it, and how it handles a missing value.
MODEL_TYPES: dict[str, tuple[str, str]] = {
    "xgboost": ("gradient-boosted trees (XGBoost)",
                "XGBoost routes missing values natively (a learned default branch per split)"),
    "logistic": ("penalised logistic regression",
                 "the logistic model imputes the training median and adds a missing-indicator"),
}
Progress = Callable[[str], None]
TEMPLATE = "report.html.j2"

# Counts images the browser could not render; the browser test reads the result from the DOM.
SELF_CHECK = """
window.addEventListener("load", function () {
  var broken = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!img.complete || img.naturalWidth === 0) { broken += 1; }
  }
  document.body.setAttribute("data-images", String(document.images.length));
  document.body.setAttribute("data-broken-images", String(broken));
});
"""
SECTIONS = (
    ("use", "Intended use and limitations"),
    ("model", "The model"),
    ("data", "Data and participants"),
    ("missing", "Missing data"),
    ("development", "Development and candidate comparison"),
    ("performance", "Performance"),
    ("explanations", "Explanations (SHAP)"),
    ("subgroups", "Subgroups and fairness"),
    ("updating", "Model updating and external evaluations"),
    ("tripod", "TRIPOD+AI checklist"),
    ("reproducibility", "Software and reproducibility"),
)
SECTION_NUMBER = {key: i + 1 for i, (key, _) in enumerate(SECTIONS)}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("crsrisk.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a name missing from the context fails, never blank
    keep_trailing_newline=True,
)


def render(context: dict[str, object]) -> str:
    """The report template rendered with ``context`` (autoescaped).

    Parameters
    ----------
    context
        Every name the template reads (see `build_report`); a missing one raises
        `jinja2.UndefinedError`.

    Returns
    -------
    str
        The HTML document.
    """
    return _ENVIRONMENT.get_template(TEMPLATE).render(
        sections=SECTIONS, number=SECTION_NUMBER, titles=dict(SECTIONS),
        self_check=Markup(SELF_CHECK), **context)


# ------------------------------------------------------------------------------------------
# What the template reads
# ------------------------------------------------------------------------------------------


def _table(frame: pd.DataFrame | None) -> dict[str, list] | None:
    """A frame as header and rows of text for the template's ``table`` macro."""
    if frame is None:
        return None
    rows = [["–" if not isinstance(value, str) and pd.isna(value) else value for value in row]
            for row in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _figure(image: bytes, alt: str, caption: str) -> dict[str, str]:
    return {"data": base64.b64encode(image).decode("ascii"), "alt": alt, "caption": caption}


def _listed(value: str) -> str:
    """A list parameter as MLflow stores it (JSON text), as plain words."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return " or ".join(map(str, parsed)) if isinstance(parsed, list) else str(parsed)


@dataclass
class _Context:
    model: RiskModel
    uri: str
    record: TrainingRecord | None
    link_note: str
    valid: pd.DataFrame | None
    severe: pd.Series | None
    data: dict | None
    evaluation: Evaluation | None
    explanation: GlobalExplanation | None
    n_boot: int
    min_cell: int

    @property
    def label(self) -> str:
        return f"{self.model.name} v{self.model.version} ({self.model.kind})"

    @property
    def training_simulated(self) -> str:
        tags = self.record.tags if self.record else {}
        flag = tags.get("data_simulated")
        if flag is not None:
            return "yes" if flag.lower() == "true" else "no"
        return "unknown"

    @property
    def same_as_training(self) -> bool:
        if not (self.record and self.data):
            return False
        return self.record.tags.get("data_sha256") == self.data.get("data_sha256")


def _model_items(c: _Context) -> list[tuple[str, object]]:
    m = c.model
    items: list[tuple[str, object]] = [
        ("Name and version", f"{m.name} version {m.version}"),
        ("Loaded from", c.uri),
        ("Registry", c.link_note),
        ("Model type", MODEL_TYPES.get(m.kind, (m.kind, ""))[0]),
        ("Calibration", m.calibrator.method),
        ("Risk tiers", f"low < {m.tiers.low:.4f} <= intermediate < {m.tiers.high:.4f} <= high"),
        ("Output", "calibrated probability of ASTCT grade >= 3 CRS, a tier with planning "
                   f"actions, and the top {m.top_k} drivers in words"),
        ("Data contract version", m.contract_version),
        ("Training data fingerprint (sha256)", m.info.get("data_sha256", "unknown")),
    ]
    if c.record and c.record.tags:
        t = c.record.tags
        items += [("Training input file", t.get("input_file", "unknown")),
                  ("Training rows / events", f"{t.get('data_rows', '?')} / "
                                             f"{t.get('data_events', '?')}"),
                  ("Training run", c.record.run_id)]
    return items


def _data_items(c: _Context) -> list[tuple[str, object]] | None:
    if c.valid is None or c.data is None:
        return None
    d = c.data
    dates = c.valid["infusion_date"]
    items: list[tuple[str, object]] = [
        ("Input file", d.get("input_file")),
        ("Site mapping fingerprint", d.get("mapping_fingerprint")),
        ("Rows read / valid / rejected", f"{d['rows_read']:,} / {d['rows_valid']:,} / "
                                          f"{d['rows_rejected']:,}"),
        ("Severe CRS (ASTCT >= 3)", f"{d['events']:,} ({100 * d['prevalence']:.1f}%)"),
        ("Labels regraded from events", f"{d['labels_regraded_from_events']:,}"),
        ("Infusion dates", f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"),
        ("Sites", f"{c.valid['site'].nunique():,}"),
        ("Data fingerprint (sha256)", d.get("data_sha256")),
        ("Simulated", "yes" if d.get("simulated") else "no"),
    ]
    if c.record and c.record.tags.get("data_rows"):
        t = c.record.tags
        rows, events = int(t["data_rows"]), int(t.get("data_events", 0))
        items.append(("Training data, for comparison",
                      f"{t.get('input_file', '?')}: {rows:,} rows, {events:,} severe "
                      f"({100 * events / rows:.1f}%)" if rows else "unknown"))
    return items


def _development(c: _Context) -> dict[str, object] | None:
    if not (c.record and c.record.params):
        return None
    p = c.record.params
    return {
        "folds": p.get("cv.folds", "?"),
        "cv": "grouped by site" if p.get("cv.group_by_site") == "True" else "stratified",
        "trials": p.get("search.xgboost_trials", "?"),
        "calibration": _listed(p.get("calibration", "?")),
        "test_fraction": p.get("split.test_fraction", "?"),
        "split": ("latest infusion dates" if p.get("split.temporal") == "True"
                  else "stratified random"),
        "high_sensitivity": p.get("tiers.high_sensitivity", "?"),
        "low_npv": p.get("tiers.low_npv", "?"),
        "design": p.get("validation_design", "split"),
        "repeats": p.get("validation.bootstrap_repeats", "?"),
    }


def _small_data(c: _Context) -> dict[str, object] | None:
    """Sample size, bootstrap optimism, internal-external validation and instability, as the
    training run logged them; None when it logged none of them."""
    record = c.record
    if record is None:
        return None
    sizes = record.documents.get("sample_size.json", {}).get("sample_size") or [{}]
    first = sizes[0]
    optimism = record.documents.get("optimism.json") or {}
    ie = record.documents.get("internal_external.json") or {}
    mape = record.metrics.get("instability_mape")
    instability = None
    if record.instability is not None:
        instability = _figure(
            record.instability, "Prediction instability",
            "Each dot: one development patient's risk from one bootstrap model (the whole "
            "model refitted on a bootstrap resample) against the model's risk for that patient "
            "(Riley and Collins 2023). Dashed: the 5th and 95th centiles of the bootstrap risks; "
            "grey: identity. The wider the vertical spread, the less stable the patient's risk."
            + (f" Mean absolute prediction error (MAPE) {mape:.4f}." if mape is not None else ""))
    out = {
        "sample_size": _table(sample_size_table(record)),
        "anticipated_auroc": first.get("c_statistic", "?"),
        "prevalence": (f"{first['prevalence']:.3f}" if "prevalence" in first else "?"),
        "patients": (f"{first['available_n']:,}" if first.get("available_n") else "?"),
        "n_risk": (f"{first['n_risk']:,}" if "n_risk" in first else "?"),
        "optimism": _table(optimism_table(record)),
        "selections": ", ".join(f"{k} {v}" for k, v in sorted(
            (optimism.get("selections") or {}).items())),
        "internal_external": [(by, _table(t)) for by, t in
                              internal_external_tables(record).items()],
        "ie_notes": [f"by {by}: {note}" for by, note in (ie.get("notes") or {}).items()],
        "ie_seconds": f"{ie['seconds']:.0f}" if "seconds" in ie else None,
        "ie_min_rows": ie.get("min_rows"),
        "instability": instability,
        "mape": f"{mape:.4f}" if mape is not None else None,
    }
    if not (out["sample_size"] or out["optimism"] or out["internal_external"] or instability
            or out["ie_notes"]):
        return None
    return out


def _performance_figures(c: _Context) -> list[dict[str, str]]:
    ev = c.evaluation
    if ev is None:
        plots = c.record.plots.items() if c.record else ()
        return [_figure(image, path, f"Training run: {path}") for path, image in plots]
    return [
        _figure(png(roc_figure(ev, c.label)), "ROC curves",
                "ROC curves of the model and the published scores (cross-fitted on this "
                "cohort); AUROC with 95% CI in the legend."),
        _figure(png(calibration_figure(ev, c.min_cell)), "Calibration plot",
                "Observed severe CRS rate against mean predicted risk in 10 quantile bins "
                "(95% Wilson intervals); below, the distribution of predicted risk. "
                f"Neighbouring bins are pooled until each holds {c.min_cell} events and "
                f"{c.min_cell} non-events; histogram bars of fewer than {c.min_cell} patients "
                "are not drawn."),
        _figure(png(decision_figure(ev, c.label)), "Decision curve",
                "Net benefit across threshold probabilities: the model, each published "
                "score, treating all and treating none (Vickers and Elkin 2006)."),
    ]


def _explanation(c: _Context) -> dict[str, object] | None:
    ex = c.explanation
    if ex is None:
        return None
    importance = ex.importance().head(15)
    shown = importance.assign(
        mean_abs_shap=importance["mean_abs_shap"].map(lambda v: f"{v:.3f}"),
        share=importance["share"].map(lambda v: f"{100 * v:.1f}%"),
    ).rename(columns={"driver": "Driver", "label": "Label", "mean_abs_shap": "Mean |SHAP|",
                      "share": "Share"})
    figures = [_figure(png(importance_figure(ex)), "SHAP global importance",
                       "Mean |SHAP| per driver (log-odds before calibration).")]
    if ex.values.shape[1] > 1:
        figures.append(_figure(png(beeswarm_figure(ex)), "SHAP beeswarm",
                               "Each dot is a patient: SHAP value (x) coloured by the driver's "
                               "value (blue low, red high; categorical drivers grey)."))
        figures += [_figure(png(dependence_figure(ex, group)),
                            f"SHAP dependence: {driver_label(group)}",
                            f"SHAP value against {driver_label(group)}.")
                    for group in importance["driver"].head(DEPENDENCE_PLOTS)]
    sample = (f"a random {len(ex.values):,} of the {ex.n_cohort:,} rows"
              if len(ex.values) < ex.n_cohort else f"all {ex.n_cohort:,} rows")
    return {"method": ex.method, "sample": sample, "scale": ex.scale, "base": f"{ex.base:+.3f}",
            "importance": _table(shown), "figures": figures}


def _recalibration(c: _Context) -> dict[str, object] | None:
    info = c.model.info
    if "recalibrated_from" not in info:
        return None
    table = None
    if c.record and c.record.recalibration:
        table = _table(recalibration_table(c.record.recalibration["metrics"]))
    return {"source": info["recalibrated_from"],
            "cohort": info.get("recalibration_cohort", "?"),
            "intercept": f"{info.get('recalibration_intercept', math.nan):+.3f}",
            "slope": f"{info.get('recalibration_slope', math.nan):.3f}",
            "table": table}


def _software(c: _Context) -> list[tuple[str, str]]:
    items = [("crsrisk", importlib.metadata.version("crsrisk")),
             ("Report created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))]
    if c.record and c.record.tags:
        t = c.record.tags
        items.append(("Training git commit", t.get("git_commit", "unknown")))
        items += [(k[len("lib."):], v) for k, v in sorted(t.items()) if k.startswith("lib.")]
    else:
        items += [(name, importlib.metadata.version(name))
                  for name in ("xgboost", "scikit-learn", "shap", "mlflow", "pandas")]
    return items


def _template_context(c: _Context) -> dict[str, object]:
    ev, record = c.evaluation, c.record
    has_data = c.valid is not None and c.severe is not None
    return {
        "label": c.label,
        "model_name": c.model.name,
        "input_file": c.data.get("input_file") if c.data else None,
        "contract_version": CONTRACT_VERSION,
        "min_cell": c.min_cell,
        "withheld": withheld(c.min_cell),
        "has_data": has_data,
        "cohort_simulated": bool(c.data and c.data.get("simulated")),
        "training_simulated": c.training_simulated,
        "training_input": (record.tags.get("input_file", "unknown") if record else "unknown"),
        "same_as_training": c.same_as_training,
        "model_items": _model_items(c),
        "predictors": _table(predictors_table()),
        "data_items": _data_items(c),
        "table_one": _table(table_one(c.valid, c.severe, c.min_cell)) if has_data else None,
        "missing_handling": MODEL_TYPES.get(
            c.model.kind, ("", f"the {c.model.kind} model handles them as it was fitted to"))[1],
        "missingness": (_table(missingness_table(c.valid, c.severe, c.min_cell))
                        if has_data else None),
        "development": _development(c),
        "small_data": _small_data(c),
        "candidates": (_table(training_candidates_table(record))
                       if record is not None and not record.candidates.empty else None),
        "recalibrated_elsewhere": bool(record is not None and record.recalibration),
        "comparison": _table(comparison_table(ev, c.label)) if ev is not None else None,
        "comparator_method": COMPARATOR_METHOD,
        "n_boot": c.n_boot,
        "performance": (None if ev is None else
                        {"rows": f"{len(ev.y):,}", "events": f"{int(ev.y.sum()):,}",
                         "table": _table(performance_table(ev))}),
        "performance_figures": _performance_figures(c),
        "explanation": _explanation(c),
        "subgroups": (_table(subgroups_display(ev.subgroups, c.min_cell))
                      if ev is not None and ev.subgroups is not None else None),
        "recalibration": _recalibration(c),
        "evaluations": (_table(pd.DataFrame(record.evaluations,
                                            columns=["Evaluation run", "Summary"]))
                        if record and record.evaluations else None),
        "software": _software(c),
    }


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


def build_report(
    model: RiskModel,
    uri: str,
    cohort: tuple[pd.DataFrame, pd.Series, dict] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    shap_rows: int = SHAP_ROWS,
    tracking: TrackingConfig | None = None,
    min_cell: int = MIN_CELL,
    progress: Progress | None = None,
) -> str:
    """The model report as one self-contained HTML document.

    Parameters
    ----------
    model, uri
        The model and how it was named (registered URI or exported directory).
    cohort
        ``(valid, severe, description)`` of a labelled cohort (see
        `crsrisk.evaluation.validation.data_description`), or None for a report from the
        registry only.
    n_boot, seed
        Bootstrap resamples for the intervals, and the seed of resampling, cross-fitting and
        the SHAP sample.
    shap_rows
        SHAP values are computed on a random sample of at most this many rows.
    tracking
        A `TrackingConfig` naming the tracking store (default: built-in or
        ``MLFLOW_TRACKING_URI``); an unreachable store only removes the registry sections.
    min_cell
        Counts of fewer patients are withheld from every table (`crsrisk.evaluation.privacy`;
        at least 5).
    progress
        Called with one line per slow step.

    Returns
    -------
    str
        The HTML.
    """
    check_min_cell(min_cell)
    say = progress or (lambda _message: None)
    record, link_note = _registry(model, uri, tracking)
    valid = severe = data = evaluation = explanation = None
    if cohort is not None:
        valid, severe, data = cohort
        say(f"evaluating on {len(valid):,} rows ({n_boot} bootstrap resamples)")
        evaluation = evaluate_model(model, valid, severe, n_boot=n_boot, seed=seed,
                                    allow_training_rows=True)  # the report says so itself
        say(f"SHAP values on {min(len(valid), shap_rows):,} rows")
        explanation = explain_global(model, valid, max_rows=shap_rows, seed=seed)
    c = _Context(model, str(uri), record, link_note, valid, severe, data, evaluation,
                 explanation, n_boot, min_cell)
    return render(_template_context(c))


def _registry(
    model: RiskModel, uri: str, tracking: TrackingConfig | None
) -> tuple[TrainingRecord | None, str]:
    from mlflow.exceptions import MlflowException

    from crsrisk.mlops.registry import RegistryError, connect

    try:
        store = connect(tracking, create=False)  # a report never creates a store
        ref, how = find_version(store.client, uri, model)
        if ref is None:
            return None, f"not linked: {how}"
        return training_record(store.client, ref), how
    except RegistryError as exc:
        return None, f"not read: {exc}"
    except MlflowException as exc:
        return None, f"not read: the tracking store failed ({exc.message})"


def write_report(document: str, out: str | Path) -> None:
    """Write the report atomically."""
    with atomic_path(out) as tmp:
        tmp.write_text(document, encoding="utf-8")
