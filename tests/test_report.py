"""The HTML model report: tables, self-containment, embedded images, a headless-browser check."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crsrisk.config import TrackingConfig
from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.evaluation.validation import data_description
from crsrisk.mlops.registry import connect
from crsrisk.report.build import SECTIONS, build_report, write_report
from crsrisk.report.data import missingness_table, table_one
from crsrisk.simulate.cohort import simulate_cohort

CHROMIUM = "/usr/bin/chromium"
IMG_SRC = re.compile(r'<img src="([^"]*)"')


@pytest.fixture(scope="module")
def cohort():
    valid = validate(simulate_cohort(1500, seed=2).baseline).valid
    severe = resolve_labels(valid).severe
    return valid, severe, data_description(valid, severe, {"input_file": "second.csv",
                                                            "mapping_fingerprint": "none"})


@pytest.fixture(scope="module")
def registry(trained):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        from crsrisk.mlops.loading import load_model

        yield load_model(trained.model_uri), TrackingConfig()


@pytest.fixture(scope="module")
def report_html(registry, cohort, trained):
    model, tracking = registry
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        return build_report(model, trained.model_uri, cohort, n_boot=100, shap_rows=1000,
                            tracking=tracking)


@pytest.fixture(scope="module")
def report_file(report_html, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(report_html, path)
    return path


def decoded_images(document: str) -> list[Image.Image]:
    images = []
    for src in IMG_SRC.findall(document):
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        png.verify()  # raises on a truncated or corrupt PNG
        images.append(png)
    return images


# -- tables -----------------------------------------------------------------------------------


def test_table_one_by_outcome(cohort):
    valid, severe, _ = cohort
    table = table_one(valid, severe)
    headers = list(table.columns)
    assert headers[0:2] == ["Variable", "Level"] and headers[-1] == "Missing"
    assert headers[2] == f"Overall (n={len(valid):,})"
    assert headers[4] == f"Severe CRS (n={int(severe.sum()):,})"
    age = table[table["Variable"] == "Age (years)"].iloc[0]
    assert age["Level"] == "median [IQR]" and re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]",
                                                           age[headers[2]])
    start = table.index[table["Variable"] == "Therapy"][0]
    levels = table.loc[start + 1:start + 2]
    assert list(levels["Level"]) == ["CAR-T", "bispecific"]
    counts = levels[headers[2]].str.extract(r"^([\d,]+)")[0].str.replace(",", "").astype(int)
    assert counts.sum() == len(valid)
    hlh = table[table["Variable"] == "HLH history"].iloc[0]
    assert hlh["Level"] == "yes" and hlh["Missing"].endswith("%")


def test_missingness_counts_only_where_a_column_applies(cohort):
    valid, severe, _ = cohort
    table = missingness_table(valid, severe).set_index("Variable")
    dose = table.loc["Cell dose (x10^6/kg)"]
    car_t = valid["therapy_class"].eq("CAR-T")
    missing = int(valid.loc[car_t, "cell_dose_1e6_per_kg"].isna().sum())
    assert dose["Applies to"] == "CAR-T"
    assert dose["Missing where applicable"].startswith(f"{missing:,} of {int(car_t.sum()):,}")
    assert table.loc["Marrow blasts (%)", "Applies to"] == "B-ALL"


# -- the document -------------------------------------------------------------------------------


def test_report_has_every_section_and_a_tripod_table(report_html):
    for key, _title in SECTIONS:
        assert f'<section id="{key}">' in report_html, key
    assert "TRIPOD+AI" in report_html and "not covered" in report_html
    assert "log-odds of the model before calibration" in report_html
    assert "simulated" in report_html  # the cohort and the training data are simulated
    assert "Candidates of the training run" in report_html
    assert "m-EASIX" in report_html and "treating all" in report_html


def test_report_is_self_contained_without_patient_ids(report_html):
    assert not re.search(r'(src|href)="(https?:)?//', report_html)
    assert "<link" not in report_html and "@import" not in report_html
    assert "url(" not in report_html
    assert "SIM-0" not in report_html
    images = decoded_images(report_html)
    assert len(images) >= 7  # ROC, calibration, decision, importance, beeswarm, 3 dependence
    assert all(min(image.size) > 100 for image in images)


def test_report_from_the_registry_alone(registry, trained):
    model, tracking = registry
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        document = build_report(model, trained.model_uri, None, tracking=tracking)
    assert "No cohort given" in document
    # The training run's ROC and calibration plots, and the instability plot of its bootstrap
    # refits (per-patient intervals).
    assert len(decoded_images(document)) == 3


def test_report_of_a_model_unknown_to_the_store(registry, tmp_path):
    model, _ = registry
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'empty.db'}",
                              artifact_root=str(tmp_path / "artifacts"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        document = build_report(model, "models/exported-elsewhere", None, tracking=tracking)
        assert "There is no tracking store" in document  # a report creates no store
        assert not (tmp_path / "empty.db").exists()
        connect(tracking)  # the store exists, without this model
        document = build_report(model, "models/exported-elsewhere", None, tracking=tracking)
    assert "not linked" in document and "no candidate comparison" in document


def test_write_report_is_atomic(report_file):
    assert report_file.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in report_file.parent.iterdir()] == ["report.html"]


# -- the browser -------------------------------------------------------------------------------


def chromium_command(user_data: Path, *args: str) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={user_data}", *args]


def test_report_renders_in_headless_chromium(report_file, report_html, tmp_path):
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (as root) to "
                    "install Debian's chromium for this test")
    screenshot = tmp_path / "report.png"
    url = report_file.resolve().as_uri()
    shot = subprocess.run(
        chromium_command(tmp_path / "profile", f"--screenshot={screenshot}",
                         "--window-size=1280,4000", url),
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.returncode == 0, shot.stderr[-2000:]
    image = Image.open(screenshot)
    assert image.size == (1280, 4000)
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"
    dom = subprocess.run(
        chromium_command(tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000", url),
        capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    expected = len(IMG_SRC.findall(report_html))
    assert f'data-images="{expected}"' in body.group(0), body.group(0)
    assert 'data-broken-images="0"' in body.group(0), body.group(0)


def test_a_broken_image_is_detected(tmp_path):
    """The in-page check is not vacuous: a corrupt image is counted as broken."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh")
    from crsrisk.report.build import SELF_CHECK

    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                    f"<script>{SELF_CHECK}</script></body></html>")
    dom = subprocess.run(
        chromium_command(tmp_path / "profile", "--dump-dom", "--virtual-time-budget=3000",
                         page.resolve().as_uri()),
        capture_output=True, text=True, timeout=120, check=False)
    assert 'data-broken-images="1"' in dom.stdout


def test_table_one_handles_an_all_missing_column():
    valid = validate(simulate_cohort(200, seed=9).baseline).valid.assign(
        il6_pg_ml=np.nan)
    severe = pd.Series(np.r_[np.ones(20), np.zeros(180)].astype(int), index=valid.index)
    table = table_one(valid, severe)
    row = table[table["Variable"] == "IL-6 (pg/mL)"].iloc[0]
    assert row["Missing"] == "100.0%" and row.iloc[2] == "–"


def test_cohort_text_is_escaped_by_the_template(registry, cohort, trained):
    """A file name or site holding markup reaches the page as text, never as a tag."""
    model, tracking = registry
    valid, severe, _ = cohort
    hostile = valid.assign(site=valid["site"].astype(object))
    hostile.loc[hostile.index[:40], "site"] = "<script>alert('site')</script>"
    description = data_description(hostile, severe, {
        "input_file": "<script>alert('file')</script>.csv", "mapping_fingerprint": "<b>x</b>"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        document = build_report(model, trained.model_uri, (hostile, severe, description),
                                n_boot=10, shap_rows=200, tracking=tracking)
    assert "<script>alert" not in document and "<b>x</b>" not in document
    assert "&lt;script&gt;alert(&#39;file&#39;)&lt;/script&gt;.csv" in document
    assert "&lt;b&gt;x&lt;/b&gt;" in document
    assert "alert(&#39;site&#39;)" not in document  # sites are coded, not shown at all
    assert document.count("<script>") == 1  # the self-check alone


def test_small_data_tables_show_what_training_logged_and_withhold_nothing_more():
    from crsrisk.mlops.evaluation_runs import ModelRef
    from crsrisk.report.data import (
        TrainingRecord,
        internal_external_tables,
        optimism_table,
        sample_size_table,
    )

    size = {"candidate": "xgboost", "parameters": 75, "parameter_n": 11291, "prevalence": 0.055,
            "n_shrinkage": 11291, "n_optimism": 9000, "reason": "skipped: ...; force it"}
    optimism = [{"candidate": c, "metric": m, "apparent": 0.8, "optimism": 0.05,
                 "corrected": 0.75, "repeats": 200}
                for c in ("parsimonious", "selected")
                for m in ("auroc", "calibration_slope", "calibration_intercept", "brier")]
    years = [{"year": "2018", "rows": 47, "events": "< 10", "selected": "parsimonious",
              "auroc": None, "calibration_slope": None, "calibration_intercept": None,
              "brier": None},
             {"year": "2019", "rows": 52, "events": 12, "selected": "m_easix", "auroc": 0.71,
              "calibration_slope": 0.83, "calibration_intercept": -0.18, "brier": 0.1585}]
    record = TrainingRecord(
        ModelRef("m", "1", None, None, "test"), "run", {}, {}, {}, pd.DataFrame(), {}, {},
        documents={"sample_size.json": {"sample_size": [size]},
                   "optimism.json": {"optimism": optimism},
                   "internal_external.json": {"tables": {"year": years}}})
    sizes = sample_size_table(record).iloc[0]
    assert (sizes["Minimum patients"], sizes["Minimum events"]) == ("11,291", "621")
    rows = optimism_table(record).set_index("Candidate")
    assert rows.loc["whole procedure (selection included)", "Corrected AUROC"] == "0.750"
    table = internal_external_tables(record)["year"]
    assert list(table["Events"]) == ["< 10", "12"]
    assert list(table["AUROC"]) == ["–", "0.710"]
    assert table["Held out"].iloc[0] == "infusion year 2018"
    empty = TrainingRecord(ModelRef("m", "1", None, None, "test"), "run", {}, {}, {},
                           pd.DataFrame(), {}, {})
    assert sample_size_table(empty) is None and optimism_table(empty) is None
    assert internal_external_tables(empty) == {}
