"""The HTML model report: one self-contained file, images embedded, reporting after TRIPOD+AI.

`build_report` gathers what is known about a model (its registry record and training run, and,
when a labelled cohort is given, its performance, explanations and subgroups on that cohort)
into one HTML page: plain HTML and CSS, every figure a base64 PNG, nothing fetched from
elsewhere. A tiny inline script only counts images that failed to render (for the browser test);
the page reads the same without it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
import io
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from crsrisk.contract.spec import BASELINE_COLUMNS, CONTRACT_VERSION  # noqa: E402
from crsrisk.evaluation.metrics import TREAT_ALL, TREAT_NONE  # noqa: E402
from crsrisk.evaluation.validation import (  # noqa: E402
    COMPARATOR_METHOD,
    Evaluation,
    evaluate_model,
)
from crsrisk.explain.drivers import (  # noqa: E402
    DISPLAY,
    GlobalExplanation,
    beeswarm_figure,
    dependence_figure,
    driver_label,
    explain_global,
    importance_figure,
)
from crsrisk.features.builder import BURDEN_MARKER_OF  # noqa: E402
from crsrisk.io import atomic_path  # noqa: E402
from crsrisk.mlops.evaluation_runs import ModelRef, find_version  # noqa: E402
from crsrisk.modeling.riskmodel import RiskModel  # noqa: E402

__all__ = [
    "SCORE_NAMES",
    "CATEGORICAL_ROWS",
    "NOT_IN_TABLE_ONE",
    "SHAP_ROWS",
    "DEPENDENCE_PLOTS",
    "METRIC_NAMES",
    "Progress",
    "TrainingRecord",
    "training_record",
    "table_one",
    "missingness_table",
    "performance_table",
    "comparison_table",
    "training_candidates_table",
    "subgroups_display",
    "roc_figure",
    "calibration_figure",
    "decision_figure",
    "CSS",
    "SELF_CHECK",
    "SECTIONS",
    "SECTION_NUMBER",
    "build_report",
    "write_report",
]

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient

    from crsrisk.config import TrackingConfig

SCORE_NAMES = {"m_easix": "m-EASIX", "easix": "EASIX", "car_hematotox": "CAR-HEMATOTOX"}
CATEGORICAL_ROWS = ("site", "sex", "ecog", "diagnosis", "therapy_class", "product",
                    "costim_domain", "lymphodepletion")
NOT_IN_TABLE_ONE = ("patient_id", "infusion_date")
SHAP_ROWS = 5000
DEPENDENCE_PLOTS = 3
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
Progress = Callable[[str], None]


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
    plots = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("plots/roc_test.png", "plots/calibration_test.png"):
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path=path, dst_path=tmp)
                plots[path] = Path(local).read_bytes()
            except (MlflowException, OSError):
                continue
    return TrainingRecord(ref, run.info.run_id, dict(run.data.tags), dict(run.data.params),
                          dict(run.data.metrics), candidates, plots, version_tags,
                          recalibration, evaluations)


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


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


def _column_label(name: str) -> str:
    if name in DISPLAY:
        return driver_label(name)
    return {"site": "Site", "infusion_date": "Infusion date"}.get(name, name)


def _levels(column: pd.Series) -> list:
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        seen = set(present.unique())
        return [c for c in column.cat.categories if c in seen]
    return sorted(present.unique(), key=str)


def table_one(valid: pd.DataFrame, severe: pd.Series) -> pd.DataFrame:
    """Cohort characteristics by outcome (Table 1).

    Parameters
    ----------
    valid
        Validated contract rows.
    severe
        ASTCT grade >= 3 (0/1), aligned with ``valid``.

    Returns
    -------
    pandas.DataFrame
        ``Variable``, ``Level``, then one column per group (overall, no severe CRS, severe CRS;
        the group size in the header) and ``Missing`` (% of all rows). Continuous variables are
        median [IQR], categorical and yes/no variables n (% of rows where recorded).
    """
    y = severe.astype(int).to_numpy()
    groups = {
        f"Overall (n={len(y):,})": np.ones(len(y), dtype=bool),
        f"No severe CRS (n={int((y == 0).sum()):,})": y == 0,
        f"Severe CRS (n={int(y.sum()):,})": y == 1,
    }
    rows = []
    for spec in BASELINE_COLUMNS:
        name = spec.name
        if name in NOT_IN_TABLE_ONE or name not in valid.columns:
            continue
        column = valid[name]
        missing = _pct(int(column.isna().sum()), len(column))
        label = _column_label(name)
        if spec.kind in ("float", "int") and name not in CATEGORICAL_ROWS:
            values = column.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
            cells = {}
            for header, mask in groups.items():
                v = values[mask & np.isfinite(values)]
                cells[header] = (f"{_num(np.median(v))} [{_num(np.quantile(v, 0.25))}, "
                                 f"{_num(np.quantile(v, 0.75))}]" if v.size else "–")
            rows.append({"Variable": label, "Level": "median [IQR]", **cells, "Missing": missing})
        elif spec.kind == "bool":
            cells = {}
            for header, mask in groups.items():
                part = column[mask]
                recorded = int(part.notna().sum())
                yes = int(part.eq(True).sum())
                cells[header] = f"{yes:,} ({_pct(yes, recorded)})"
            rows.append({"Variable": label, "Level": "yes", **cells, "Missing": missing})
        else:
            rows.append({"Variable": label, "Level": "", **dict.fromkeys(groups, ""),
                         "Missing": missing})
            text = column.astype("Float64").map(lambda v: f"{v:.0f}", na_action="ignore") \
                if spec.kind == "int" else column
            for level in _levels(text):
                cells = {}
                for header, mask in groups.items():
                    part = text[mask]
                    count = int(part.eq(level).sum())
                    cells[header] = f"{count:,} ({_pct(count, int(part.notna().sum()))})"
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


def missingness_table(valid: pd.DataFrame, severe: pd.Series) -> pd.DataFrame:
    """Missing values per contract column, overall, where the column applies, and by outcome.

    Returns
    -------
    pandas.DataFrame
        ``Variable``, ``Applies to``, ``Missing (all rows)``, ``Missing where applicable``,
        ``in severe CRS``, ``in no severe CRS`` (the last two where applicable), most missing
        first.
    """
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
        rows.append({
            "Variable": _column_label(name),
            "Applies to": who,
            "Missing (all rows)": _pct(int(missing.sum()), len(missing)),
            "Missing where applicable": f"{miss_app:,} of {n_app:,} ({_pct(miss_app, n_app)})",
            "in severe CRS": _pct(int((missing & mask & (y == 1)).sum()),
                                  int((mask & (y == 1)).sum())),
            "in no severe CRS": _pct(int((missing & mask & (y == 0)).sum()),
                                     int((mask & (y == 0)).sum())),
            "_order": miss_app / n_app if n_app else 0.0,
        })
    frame = pd.DataFrame(rows).sort_values("_order", ascending=False, kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def _ci(estimate: float, lower: float | None = None, upper: float | None = None,
        digits: int = 3) -> str:
    if estimate is None or not math.isfinite(estimate):
        return "–"
    text = f"{estimate:.{digits}f}"
    if lower is not None and upper is not None and math.isfinite(lower) and math.isfinite(upper):
        text += f" [{lower:.{digits}f}, {upper:.{digits}f}]"
    return text


def _metric_cells(table: pd.DataFrame) -> dict[str, str]:
    return {r.metric: _ci(r.estimate, r.lower, r.upper) for r in table.itertuples()}


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
            "CV log loss": _ci(get("cv_log_loss"), digits=4),
            "CV AUROC": _ci(get("cv_auroc")),
            "Test AUROC": _ci(get("test_auroc"), get("test_auroc_lower"),
                              get("test_auroc_upper")),
            "Test log loss": _ci(get("test_log_loss"), get("test_log_loss_lower"),
                                 get("test_log_loss_upper"), digits=4),
            "Test Brier": _ci(get("test_brier"), get("test_brier_lower"),
                              get("test_brier_upper"), digits=4),
            "Test calibration slope": _ci(get("test_calibration_slope"),
                                          get("test_calibration_slope_lower"),
                                          get("test_calibration_slope_upper")),
        })
    return pd.DataFrame(rows)


def subgroups_display(subgroups: pd.DataFrame) -> pd.DataFrame:
    """The subgroup table of `evaluate.subgroup_table`, formatted for reading."""
    rows = []
    for r in subgroups.to_dict("records"):
        rows.append({
            "Variable": _column_label(r["variable"]) if r["variable"] != "age_band"
            else "Age band",
            "Level": r["level"], "n": f"{r['n']:,}", "Events": f"{r['events']:,}",
            "Observed": f"{100 * r['observed']:.1f}%",
            "Mean predicted": f"{100 * r['mean_predicted']:.1f}%",
            "AUROC [95% CI]": ("too few events" if r["too_few_events"]
                               else _ci(r["auroc"], r["auroc_lower"], r["auroc_upper"])),
            "Calibration-in-the-large": _ci(r["calibration_intercept"], digits=2),
            "Sensitivity, high tier": _ci(r.get("sensitivity_high", math.nan), digits=2),
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def roc_figure(evaluation: Evaluation, model_label: str) -> Figure:
    """ROC curves of the model and the cross-fitted published scores."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, p in (("model", evaluation.risk), *evaluation.comparator_risk.items()):
        fpr, tpr, _ = roc_curve(evaluation.y, p)
        table = evaluation.metrics if name == "model" else evaluation.comparators[name]
        auroc = table.set_index("metric").loc["auroc"]
        label = model_label if name == "model" else SCORE_NAMES.get(name, name)
        ax.plot(fpr, tpr, lw=2 if name == "model" else 1.2,
                label=f"{label}: {auroc['estimate']:.3f} [{auroc['lower']:.3f}, "
                      f"{auroc['upper']:.3f}]")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (AUROC, 95% CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _wilson(events: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    p = events / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def calibration_figure(evaluation: Evaluation) -> Figure:
    """Observed against predicted risk in 10 quantile bins (95% Wilson intervals), histogram."""
    table = evaluation.calibration
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [4, 1]})
    lower, upper = _wilson(table["events"].to_numpy(float), table["n"].to_numpy(float))
    observed = table["observed"].to_numpy(float)
    ax.errorbar(table["mean_predicted"], observed, yerr=[observed - lower, upper - observed],
                fmt="o-", capsize=3, label="model (10 quantile bins)")
    top = float(max(np.max(upper), table["mean_predicted"].max())) * 1.05
    ax.plot([0, top], [0, top], ls=":", color="grey", label="ideal")
    slope = evaluation.metric("calibration_slope")
    intercept = evaluation.metric("calibration_intercept")
    ax.set(ylabel="observed severe CRS rate",
           title=f"Calibration: slope {slope['estimate']:.2f}, "
                 f"intercept {intercept['estimate']:+.2f}")
    ax.legend(fontsize=8)
    hist.hist(evaluation.risk, bins=50, range=(0, top), color="grey")
    hist.set(xlabel="predicted risk", ylabel="patients")
    fig.tight_layout()
    return fig


def decision_figure(evaluation: Evaluation, model_label: str) -> Figure:
    """Net benefit of the model, the published scores, treat all and treat none."""
    curve = evaluation.decision
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for strategy, part in curve.groupby("strategy", sort=False):
        if strategy == TREAT_NONE:
            style = {"color": "black", "lw": 1}
        elif strategy == TREAT_ALL:
            style = {"color": "grey", "lw": 1, "ls": "--"}
        elif strategy == "model":
            style = {"lw": 2.2}
        else:
            style = {"lw": 1.2}
        label = model_label if strategy == "model" else SCORE_NAMES.get(strategy, strategy)
        ax.plot(part["threshold"], part["net_benefit"], label=label, **style)
    prevalence = float(evaluation.y.mean())
    ax.set_ylim(-0.2 * prevalence, prevalence * 1.1)
    ax.set(xlabel="threshold probability (risk at which one would act)",
           ylabel="net benefit", title="Decision curve")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd;
     padding-bottom: 0.2em; margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.86em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f4f7; } tr:nth-child(even) td { background: #fafbfc; }
figure { display: inline-block; margin: 0.6em 1em 0.6em 0; vertical-align: top; }
figcaption { font-size: 0.82em; color: #555; max-width: 560px; }
img { max-width: 100%; } .note { background: #fff8e1; border-left: 4px solid #f0b400;
      padding: 0.5em 1em; } .muted { color: #666; font-size: 0.9em; }
nav ol { columns: 2; font-size: 0.92em; } code { background: #f4f4f4; padding: 0 0.2em; }
"""
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


def _e(text: object) -> str:
    return html.escape(str(text))


def _ref(key: str) -> str:
    title = dict(SECTIONS)[key]
    return f'<a href="#{key}">section {SECTION_NUMBER[key]} ({_e(title)})</a>'


def _html_table(frame: pd.DataFrame) -> str:
    if frame is None or frame.empty:
        return '<p class="muted">(nothing to show)</p>'
    return frame.to_html(index=False, escape=True, border=0, na_rep="–")


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _listed(value: str) -> str:
    """A list parameter as MLflow stores it (JSON text), as plain words."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return " or ".join(map(str, parsed)) if isinstance(parsed, list) else str(parsed)


def _dl(items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


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


def _section_use(c: _Context) -> str:
    simulated_data = bool(c.data and c.data.get("simulated"))
    warnings = []
    if simulated_data:
        warnings.append("The cohort in this report is <b>simulated</b> (crsrisk simulate): every "
                        "figure below describes the simulator, not patients.")
    if c.training_simulated == "yes":
        warnings.append("The model was <b>trained on simulated data</b>: it is for software "
                        "testing and demonstration only, never for clinical use.")
    elif c.training_simulated == "unknown":
        source = c.record.tags.get("input_file", "unknown") if c.record else "unknown"
        warnings.append("Whether the training data were real cannot be read from the registry "
                        f"(training input file: {_e(source)}). A model trained on crsrisk "
                        "simulate output (patient ids SIM-...) is for software testing only.")
    if c.same_as_training:
        warnings.append("The report's cohort is the <b>training data</b> (same fingerprint): its "
                        "performance figures are optimistic; use a new cohort to validate.")
    notes = "".join(f'<p class="note">{w}</p>' for w in warnings)
    return f"""{notes}
<p><b>Intended use.</b> Before lymphodepletion or the first step-up dose, {_e(c.model.name)}
estimates the probability that a patient about to receive CAR T-cell therapy or a bispecific
T-cell engager develops <b>severe cytokine release syndrome (ASTCT grade &ge; 3)</b>, from baseline
data only. Intended users are treating teams planning monitoring (inpatient stay, tocilizumab on
site, prophylaxis) and trial teams stratifying enrolment. It is <b>decision support, not a
prescription</b>: the treating team decides, following the product label and local protocol.</p>
<p><b>Limitations.</b></p>
<ul>
<li>Not validated prospectively. External evaluations recorded so far are listed in
{_ref("updating")}; performance at a new site is unknown until evaluated there
(<code>crsrisk evaluate</code>), and calibration may need updating
(<code>crsrisk recalibrate</code>).</li>
<li>Drivers and SHAP values explain the model, not the disease: they are on the <b>log-odds scale
of the model before calibration</b> and are associations, not causes.</li>
<li>The outcome is ASTCT grade &ge; 3. Labels on other scales are regraded from the raw event
table or refused; sites grading differently in practice will see the model miscalibrated.</li>
<li>Products, diagnoses and subgroups with few events have wide or no intervals
({_ref("subgroups")}); the model should not be trusted where a subgroup was not seen.</li>
<li>Missing baseline values are handled by the model ({_ref("missing")}) but a patient with
most values missing gets a risk close to the average of patients like them.</li>
<li>Tier thresholds were chosen on the training data's out-of-fold risks; their sensitivity and NPV
at another site are shown in {_ref("performance")} only for the cohort of this report.</li>
</ul>"""


def _section_model(c: _Context) -> str:
    m = c.model
    info = m.info
    items = [
        ("Name and version", f"{m.name} version {m.version}"),
        ("Loaded from", c.uri),
        ("Registry", c.link_note),
        ("Model type", {"xgboost": "gradient-boosted trees (XGBoost)",
                        "logistic": "penalised logistic regression"}.get(m.kind, m.kind)),
        ("Calibration", m.calibrator.method),
        ("Risk tiers", f"low < {m.tiers.low:.4f} <= intermediate < {m.tiers.high:.4f} <= high"),
        ("Output", "calibrated probability of ASTCT grade >= 3 CRS, a tier with planning "
                   f"actions, and the top {m.top_k} drivers in words"),
        ("Data contract version", m.contract_version),
        ("Training data fingerprint (sha256)", info.get("data_sha256", "unknown")),
    ]
    if c.record and c.record.tags:
        t = c.record.tags
        items += [("Training input file", t.get("input_file", "unknown")),
                  ("Training rows / events", f"{t.get('data_rows', '?')} / "
                                             f"{t.get('data_events', '?')}"),
                  ("Training run", c.record.run_id)]
    predictors = ", ".join(driver_label(s.name) for s in BASELINE_COLUMNS
                           if s.name not in ("patient_id", "site", "infusion_date", "sex",
                                             "weight_kg"))
    return (_dl(items) + f"<p><b>Predictors</b> (baseline, before treatment): {_e(predictors)}; "
            "derived: log-transformed labs, m-EASIX and EASIX, a disease-specific tumour-burden "
            "score, fludarabine/cyclophosphamide, costimulation (CD28, 4-1BB, none). Site, sex "
            "and weight are not predictors; site and sex are used for subgroups only.</p>")


def _section_data(c: _Context) -> str:
    if c.valid is None:
        return ('<p class="muted">No cohort given: run <code>crsrisk report --data '
                "LABELLED_TABLE</code> for Table 1, performance, explanations and subgroups.</p>")
    d = c.data
    dates = c.valid["infusion_date"]
    items = [
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
    return (_dl(items)
            + "<p>Rows breaking the data contract are rejected before anything else (see "
              "<code>crsrisk validate</code>); the outcome is the worst CRS grade of the episode "
              "on the ASTCT scale, severe when &ge; 3.</p>"
            + "<h3>Table 1: characteristics by outcome</h3>"
            + '<p class="muted">Continuous: median [IQR]; categorical and yes/no: n (% of rows '
              "where recorded). Missing: % of all rows.</p>"
            + _html_table(table_one(c.valid, c.severe)))


def _section_missing(c: _Context) -> str:
    handling = ("XGBoost routes missing values natively (a learned default branch per split)"
                if c.model.kind == "xgboost" else
                "the logistic model imputes the training median and adds a missing-indicator")
    text = (f"<p>Missing values are kept as missing, never dropped: {handling}. Columns that do "
            "not apply to a patient (cell dose and costimulation for bispecifics, SPD outside "
            "lymphoma and CLL, marrow blasts outside B-ALL, plasma cells outside myeloma) are "
            "missing by design; the table shows missingness where the column applies.</p>")
    if c.valid is None:
        return text + '<p class="muted">No cohort given: no missingness table.</p>'
    return text + _html_table(missingness_table(c.valid, c.severe))


def _section_development(c: _Context) -> str:
    parts = []
    r = c.record
    if r and r.params:
        p = r.params
        split = ("latest infusion dates" if p.get("split.temporal") == "True"
                 else "stratified random")
        parts.append(
            "<p>Candidates were fitted on the training rows only: published scores (each a "
            "logistic regression on the score), penalised logistic regression and XGBoost. "
            f"{_e(p.get('cv.folds', '?'))}-fold cross-validation "
            f"({'grouped by site' if p.get('cv.group_by_site') == 'True' else 'stratified'}) "
            f"chose hyperparameters ({_e(p.get('search.xgboost_trials', '?'))} XGBoost "
            f"configurations) and the calibration ({_e(_listed(p.get('calibration', '?')))}) by "
            "cross-validated log loss; the candidate with the lowest CV log loss was selected, "
            "refitted and tested once on held-out rows "
            f"({_e(p.get('split.test_fraction', '?'))} of the data, {split}). Tiers: high at "
            "the risk keeping sensitivity &ge; "
            f"{_e(p.get('tiers.high_sensitivity', '?'))}, low below the risk keeping NPV &ge; "
            f"{_e(p.get('tiers.low_npv', '?'))}, on out-of-fold risks. No resampling for class "
            "imbalance: probabilities are calibrated instead.</p>")
    if r is not None and not r.candidates.empty:
        parts.append("<h3>Candidates of the training run (held-out test rows)</h3>"
                     '<p class="muted">As logged by the training run. Intervals (95% percentile '
                     "bootstrap) where training logged them; the run stores no patient rows, "
                     "so the others cannot be recomputed here.</p>"
                     + _html_table(training_candidates_table(r)))
    elif r is not None and r.recalibration:
        parts.append('<p class="muted">This version was recalibrated from a version whose '
                     "training run is not in this store: no candidate comparison.</p>")
    else:
        parts.append('<p class="muted">The training run of this model is not in this tracking '
                     "store: no candidate comparison from training.</p>")
    if c.evaluation is not None:
        parts.append("<h3>The model against the published scores on this report's cohort</h3>"
                     f'<p class="muted">95% percentile-bootstrap intervals ({c.n_boot} '
                     f"resamples). Published scores: {_e(COMPARATOR_METHOD)}.</p>"
                     + _html_table(comparison_table(c.evaluation, c.label)))
    return "".join(parts)


def _section_performance(c: _Context) -> str:
    if c.evaluation is None:
        parts = ['<p class="muted">No cohort given: the figures below are those of the training '
                 "run on its held-out test rows (no intervals).</p>"]
        if c.record:
            for path, png in c.record.plots.items():
                parts.append(_figure(png, path, f"Training run: {_e(path)}"))
        return "".join(parts)
    ev = c.evaluation
    return (f'<p class="muted">On the report\'s cohort ({len(ev.y):,} rows, {int(ev.y.sum()):,} '
            f"events); 95% percentile-bootstrap intervals ({ev.n_boot} resamples over "
            "patients).</p>"
            + _html_table(performance_table(ev))
            + _figure(_png(roc_figure(ev, c.label)), "ROC curves",
                      "ROC curves of the model and the published scores (cross-fitted on this "
                      "cohort); AUROC with 95% CI in the legend.")
            + _figure(_png(calibration_figure(ev)), "Calibration plot",
                      "Observed severe CRS rate against mean predicted risk in 10 quantile bins "
                      "(95% Wilson intervals); below, the distribution of predicted risk.")
            + _figure(_png(decision_figure(ev, c.label)), "Decision curve",
                      "Net benefit across threshold probabilities: the model, each published "
                      "score, treating all and treating none (Vickers and Elkin 2006)."))


def _section_explanations(c: _Context) -> str:
    if c.explanation is None:
        return '<p class="muted">No cohort given: no SHAP summary.</p>'
    ex = c.explanation
    sample = (f"a random {len(ex.values):,} of the {ex.n_cohort:,} rows"
              if len(ex.values) < ex.n_cohort else f"all {ex.n_cohort:,} rows")
    parts = [f"<p>Method: {_e(ex.method)}, on {sample}. Values are on the <b>{_e(ex.scale)}</b>: "
             f"a patient's values plus the base value ({ex.base:+.3f}) sum to the model's "
             "margin, which the calibrator then turns into the risk. Contributions of features "
             "born of one input (a lab and its log, its missing flag, its spline terms) are "
             "summed into one driver. The per-patient drivers of the score table are the same "
             "values, in words (e.g. <i>CRP 85 mg/L raises risk (+0.41 log-odds)</i>).</p>"]
    importance = ex.importance().head(15)
    shown = importance.assign(
        mean_abs_shap=importance["mean_abs_shap"].map(lambda v: f"{v:.3f}"),
        share=importance["share"].map(lambda v: f"{100 * v:.1f}%"),
    ).rename(columns={"driver": "Driver", "label": "Label", "mean_abs_shap": "Mean |SHAP|",
                      "share": "Share"})
    parts.append("<h3>Global importance</h3>" + _html_table(shown))
    parts.append(_figure(_png(importance_figure(ex)), "SHAP global importance",
                         "Mean |SHAP| per driver (log-odds before calibration)."))
    if ex.values.shape[1] > 1:
        parts.append(_figure(_png(beeswarm_figure(ex)), "SHAP beeswarm",
                             "Each dot is a patient: SHAP value (x) coloured by the driver's "
                             "value (blue low, red high; categorical drivers grey)."))
        parts.append("<h3>Dependence on the top drivers</h3>")
        for group in importance["driver"].head(DEPENDENCE_PLOTS):
            parts.append(_figure(_png(dependence_figure(ex, group)),
                                 f"SHAP dependence: {driver_label(group)}",
                                 f"SHAP value against {_e(driver_label(group))}."))
    return "".join(parts)


def _section_subgroups(c: _Context) -> str:
    if c.evaluation is None or c.evaluation.subgroups is None:
        return '<p class="muted">No cohort given: no subgroup table.</p>'
    return ("<p>Performance within each level of therapy class, product, diagnosis, site, sex "
            "and age band: observed against mean predicted risk (calibration-in-the-large, 0 "
            "ideal, &gt; 0 when risk is underestimated), AUROC with a 95% bootstrap interval "
            "when the level has at least 10 events and 10 non-events, and the sensitivity of the "
            "high tier. Look for levels where the model under- or over-predicts: that is where "
            "it serves patients less well.</p>"
            + _html_table(subgroups_display(c.evaluation.subgroups)))


def _section_updating(c: _Context) -> str:
    parts = []
    info = c.model.info
    if "recalibrated_from" in info:
        parts.append(
            f"<p>This version was <b>recalibrated</b> from {_e(info['recalibrated_from'])} on "
            f"{_e(info.get('recalibration_cohort', '?'))}: logit(new risk) = "
            f"{info.get('recalibration_intercept', math.nan):+.3f} + "
            f"{info.get('recalibration_slope', math.nan):.3f} x logit(previous risk).</p>")
        if c.record and c.record.recalibration:
            m = c.record.recalibration["metrics"]
            rows = [{"": name, "before": _ci(m.get(f"before_{name}", math.nan)),
                     "after (cross-validated)": _ci(m.get(f"after_cv_{name}", math.nan))}
                    for name in ("calibration_intercept", "calibration_slope", "log_loss",
                                 "brier", "auroc")]
            parts.append(_html_table(pd.DataFrame(rows)))
    else:
        parts.append("<p>This version has not been recalibrated. <code>crsrisk recalibrate "
                     "--data SITE_TABLE</code> refits the calibration intercept and slope for a "
                     "new site and registers the result as a new challenger version.</p>")
    if c.record and c.record.evaluations:
        rows = [{"Evaluation run": run_id, "Summary": summary}
                for run_id, summary in c.record.evaluations]
        parts.append("<h3>External evaluations of this version</h3>"
                     + _html_table(pd.DataFrame(rows)))
    else:
        parts.append('<p class="muted">No external evaluation of this version is recorded '
                     "(<code>crsrisk evaluate --data NEW_COHORT</code> records one).</p>")
    return "".join(parts)


def _tripod_rows(c: _Context) -> list[tuple[str, str]]:
    data = c.valid is not None
    need = "not covered: give --data for this item"
    return [
        ("Title and abstract", "not applicable: this is a model report, not a manuscript"),
        ("Background, objectives, intended use and users", f"covered in {_ref('use')}"),
        ("Source of data, dates", (f"covered in {_ref('data')} (report cohort) and "
                                   f"{_ref('model')} (training data)") if data
         else f"partly covered in {_ref('model')} (training data); {need}"),
        ("Participants: setting, eligibility, treatments",
         f"covered in {_ref('data')} (Table 1)" if data else need),
        ("Data preparation and quality checks", f"covered in {_ref('data')} (data contract, "
                                                 "rejected rows)" if data else need),
        ("Outcome: definition, grading, timing", f"covered in {_ref('data')} and {_ref('use')}; "
                                                   "blinding of outcome assessment: not covered, "
                                                   "not recorded in the data"),
        ("Predictors: definition, timing", f"covered in {_ref('model')}"),
        ("Sample size", (f"partly covered in {_ref('data')} (rows and events) and by interval "
                         "widths; no formal sample-size calculation was made") if data
         else "not covered: no formal sample-size calculation; give --data for counts"),
        ("Missing data", f"covered in {_ref('missing')}"),
        ("Analytical methods: model type, tuning, internal validation, calibration",
         f"covered in {_ref('development')}"),
        ("Class imbalance", f"covered in {_ref('development')} (none applied; calibrated)"),
        ("Fairness: subgroups", f"covered in {_ref('subgroups')}" if data else need),
        ("Model output and how to use it", f"covered in {_ref('model')}"),
        ("Differences between development and evaluation data",
         f"covered in {_ref('data')} and {_ref('use')}" if data else need),
        ("Performance measures with uncertainty",
         f"covered in {_ref('performance')} (95% bootstrap intervals)" if data
         else f"partly covered in {_ref('development')} (training test rows); {need}"),
        ("Clinical utility", f"covered in {_ref('performance')} (decision curve)" if data
         else need),
        ("Model updating", f"covered in {_ref('updating')}"),
        ("Explainability", f"covered in {_ref('explanations')}" if data else need),
        ("Interpretation and limitations", f"covered in {_ref('use')}"),
        ("Code and software availability", f"covered in {_ref('reproducibility')}"),
        ("Data availability", "not covered: no patient rows leave the site; the data are "
                              "identified by fingerprint only"),
        ("Ethics approval, funding, conflicts of interest, protocol and registration",
         "not covered: outside what the software knows; the deploying team reports them"),
        ("Patient and public involvement", "not covered: outside what the software knows"),
    ]


def _section_tripod(c: _Context) -> str:
    rows = "".join(f"<tr><td>{_e(item)}</td><td>{where}</td></tr>"
                   for item, where in _tripod_rows(c))
    return ("<p>Items of the TRIPOD+AI statement (Collins et al., BMJ 2024; paraphrased, "
            "grouped) and where this report covers each, or why it does not.</p>"
            f"<table><tr><th>Item</th><th>Where</th></tr>{rows}</table>")


def _section_reproducibility(c: _Context) -> str:
    items = [("crsrisk", importlib.metadata.version("crsrisk")),
             ("Report created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))]
    if c.record and c.record.tags:
        t = c.record.tags
        items.append(("Training git commit", t.get("git_commit", "unknown")))
        items += [(k[len("lib."):], v) for k, v in sorted(t.items()) if k.startswith("lib.")]
    else:
        items += [(name, importlib.metadata.version(name))
                  for name in ("xgboost", "scikit-learn", "shap", "mlflow", "pandas")]
    return (_dl(items) + "<p>The source code is the crsrisk package at that commit; the model "
            "is reproducible from the training run's parameters and data fingerprint.</p>")


def _document(c: _Context, sections: dict[str, str]) -> str:
    toc = "".join(f'<li><a href="#{key}">{_e(title)}</a></li>' for key, title in SECTIONS)
    body = "".join(
        f'<section id="{key}"><h2>{SECTION_NUMBER[key]}. {_e(title)}</h2>{sections[key]}'
        "</section>" for key, title in SECTIONS)
    subtitle = (f"on {_e(c.data.get('input_file'))}" if c.data else "registry record only")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Model report: {_e(c.label)}</title>
<style>{CSS}</style></head>
<body>
<h1>Severe CRS risk model: {_e(c.label)}</h1>
<p class="muted">Prediction of ASTCT grade &ge; 3 cytokine release syndrome before CAR-T or
bispecific therapy; report {subtitle}; data contract v{_e(CONTRACT_VERSION)}.</p>
<nav><ol>{toc}</ol></nav>
{body}
<script>{SELF_CHECK}</script>
</body></html>
"""


def build_report(
    model: RiskModel,
    uri: str,
    cohort: tuple[pd.DataFrame, pd.Series, dict] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    shap_rows: int = SHAP_ROWS,
    tracking: TrackingConfig | None = None,
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
    progress
        Called with one line per slow step.

    Returns
    -------
    str
        The HTML.
    """
    say = progress or (lambda _message: None)
    record, link_note = _registry(model, uri, tracking)
    valid = severe = data = evaluation = explanation = None
    if cohort is not None:
        valid, severe, data = cohort
        say(f"evaluating on {len(valid):,} rows ({n_boot} bootstrap resamples)")
        evaluation = evaluate_model(model, valid, severe, n_boot=n_boot, seed=seed)
        say(f"SHAP values on {min(len(valid), shap_rows):,} rows")
        explanation = explain_global(model, valid, max_rows=shap_rows, seed=seed)
    c = _Context(model, str(uri), record, link_note, valid, severe, data, evaluation,
                 explanation, n_boot)
    sections = {
        "use": _section_use(c),
        "model": _section_model(c),
        "data": _section_data(c),
        "missing": _section_missing(c),
        "development": _section_development(c),
        "performance": _section_performance(c),
        "explanations": _section_explanations(c),
        "subgroups": _section_subgroups(c),
        "updating": _section_updating(c),
        "tripod": _section_tripod(c),
        "reproducibility": _section_reproducibility(c),
    }
    return _document(c, sections)


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
