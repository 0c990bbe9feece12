"""Privacy of aggregates: small cells withheld and sites coded in the report and the JSON."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crsrisk.config import ConfigError, load_train_config
from crsrisk.evaluation.metrics import calibration_table, subgroup_table
from crsrisk.evaluation.privacy import (
    MIN_CELL,
    check_min_cell,
    pooled_bins,
    private_groups,
    site_code_map,
    site_codes,
    suppress_small_counts,
)
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import private_store, use_store
from tests.conftest import run_cli as run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the documented examples
FREE_TEXT_SITE = "Smith, John (ward 4)"
ELEVEN_SITE = "Ward eleven"


# -- the rules --------------------------------------------------------------------------------


def test_the_default_threshold_is_ten_and_below_five_is_refused():
    assert MIN_CELL == 10 == load_train_config().privacy.min_cell
    assert check_min_cell(5) == 5
    for bad in (4, 0, -3):
        with pytest.raises(ConfigError, match="at least 5"):
            check_min_cell(bad)


def test_a_config_asking_for_min_cell_4_is_refused(tmp_path):
    text = (CONFIG_DIR / "train.yaml").read_text().replace("min_cell: 10", "min_cell: 4")
    (tmp_path / "train.yaml").write_text(text)
    shutil.copy(CONFIG_DIR / "score.yaml", tmp_path / "score.yaml")
    with pytest.raises(ConfigError, match=r"privacy\.min_cell.*greater than or equal to 5"):
        load_train_config(tmp_path / "train.yaml")


def test_sites_are_coded_in_sorted_order_of_their_names():
    series = pd.Series(["b ward", FREE_TEXT_SITE, None, "b ward", "a ward"], dtype="str")
    coded = site_codes(series)
    assert coded.tolist()[:2] == ["site_2", "site_3"] and pd.isna(coded.iloc[2])
    assert coded.iloc[4] == "site_1"
    assert site_code_map(series) == site_code_map(series.iloc[::-1])  # order of rows is moot


def test_small_counts_are_withheld_and_their_complement_too():
    counts = pd.DataFrame({"all": [500, 3, 120, 0], "severe": [40, 12, 20, 0]})
    shown = suppress_small_counts(counts, ["all", "severe"], 10, complementary=True)
    # 3 is withheld, and so is the next smallest (120), else 623 - 500 - 120 gives it back.
    assert shown["all"].tolist() == [500, "< 10", "withheld", 0]
    assert shown["severe"].tolist() == [40, 12, 20, 0]
    assert suppress_small_counts(counts, ["all"], 12)["all"].tolist() == [500, "< 12", 120, 0]


def test_site_rows_follow_code_order_not_the_order_of_names():
    rng = np.random.default_rng(1)
    site = np.repeat(np.array(["alpha", "Beta"], dtype=object), 300)
    y = (rng.random(600) < 0.3).astype(int)
    frame = pd.DataFrame({"site": pd.array(site, dtype="str")})
    raw = subgroup_table(frame, y, np.full(600, 0.3), ["site"], n_boot=10)
    assert raw["level"].tolist() == ["Beta", "alpha"]  # as the metrics sort them
    table = private_groups(raw, 10)
    assert table["level"].tolist() == ["site_1", "site_2"]
    assert table["n"].tolist() == [300, 300]
    assert table["events"].tolist() == [int(y[:300].sum()), int(y[300:].sum())]  # alpha, Beta


def test_calibration_bins_are_pooled_until_none_is_small():
    rng = np.random.default_rng(2)
    p = np.sort(rng.uniform(0.01, 0.2, 1000))
    y = (rng.random(1000) < p).astype(int)
    table = calibration_table(y, p)
    assert (table["events"] < 10).any()  # the test needs small bins to pool
    pooled = pooled_bins(table, 10)
    assert (pooled["events"] >= 10).all() and (pooled["n"] - pooled["events"] >= 10).all()
    assert pooled["n"].sum() == 1000 and pooled["events"].sum() == y.sum()
    assert pooled["bin"].iloc[-1].endswith("-10") or pooled["bin"].iloc[-1] == "10"
    assert np.allclose(pooled["observed"], pooled["events"] / pooled["n"])
    assert pooled_bins(table[table["events"] >= 10], 10)["bin"].tolist() == [
        str(b) for b in table.loc[table["events"] >= 10, "bin"]]


def small_subgroups() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 600
    site = np.where(np.arange(n) < 300, "A", "B").astype(object)
    site[0] = FREE_TEXT_SITE  # one patient
    site[1:12] = ELEVEN_SITE  # eleven patients
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, n), 0.01, 0.99)
    frame = pd.DataFrame({"site": pd.array(site, dtype="str")})
    return subgroup_table(frame, y, p, ["site"], thresholds={"high": 0.35}, n_boot=20)


def test_a_subgroup_of_one_shows_no_outcome_and_sites_are_coded():
    table = private_groups(small_subgroups(), 10)
    assert FREE_TEXT_SITE not in table["level"].tolist()
    assert table["level"].tolist() == ["site_1", "site_2", "site_3", "site_4"]
    one = table[table["level"] == "site_3"].iloc[0]  # sorted: A, B, Smith..., Ward eleven
    assert one["n"] == "< 10" and one["withheld"] == "n"
    assert all(one[c] is None for c in ("events", "observed", "prevalence", "mean_predicted",
                                        "calibration_intercept", "auroc", "sensitivity_high"))
    eleven = table[table["level"] == "site_4"].iloc[0]
    assert eleven["n"] == 11 and eleven["events"] == "< 10" and eleven["observed"] is None
    assert eleven["mean_predicted"] is not None  # not computed from the outcome
    big = table[table["level"] == "site_1"].iloc[0]
    assert big["withheld"] == "" and isinstance(big["events"], int | np.integer)


def test_min_cell_12_withholds_a_group_of_eleven():
    table = private_groups(small_subgroups(), 12).set_index("level")
    assert table.loc["site_4", "n"] == "< 12" and table.loc["site_4", "withheld"] == "n"
    with pytest.raises(ConfigError):
        private_groups(small_subgroups(), 4)


# -- what leaves the machine: metrics.json, the MLflow artefact, the report ---------------------


@pytest.fixture(scope="module")
def site_store(trained, tmp_path_factory):
    """A copy of the shared registry and a cohort with a free-text site of one patient."""
    folder = tmp_path_factory.mktemp("privacy")
    uri = private_store(trained, folder)
    cohort = simulate_cohort(800, seed=5).baseline
    cohort["site"] = cohort["site"].astype(object)
    cohort.loc[0, "site"] = FREE_TEXT_SITE
    cohort.loc[1:11, "site"] = ELEVEN_SITE
    cohort.to_csv(folder / "cohort.csv", index=False)
    for min_cell in (10, 12):
        text = (CONFIG_DIR / "train.yaml").read_text().replace(
            "min_cell: 10", f"min_cell: {min_cell}")
        (folder / f"train_{min_cell}.yaml").write_text(text)
    (folder / "train_4.yaml").write_text(
        (CONFIG_DIR / "train.yaml").read_text().replace("min_cell: 10", "min_cell: 4"))
    shutil.copy(CONFIG_DIR / "score.yaml", folder / "score.yaml")
    return folder, uri


@pytest.fixture
def site_env(site_store, monkeypatch):
    folder, uri = site_store
    return folder, use_store(folder, uri, monkeypatch)



def site_rows(payload: dict) -> dict[str, dict]:
    """The site rows of the JSON's subgroup table, by level, as written (None stays None)."""
    return {row["level"]: row for row in payload["subgroups"] if row["variable"] == "site"}


def test_evaluate_json_and_mlflow_artefact_withhold_small_cells_and_code_sites(site_env, tmp_path):
    folder, client = site_env
    result = run("evaluate", "--data", "cohort.csv", "--out", "metrics.json", "--n-boot", "10",
                 "--config", "train_10.yaml")
    assert result.exit_code in (0, 1), result.output
    text = (folder / "metrics.json").read_text()
    assert FREE_TEXT_SITE not in text and "Smith" not in text and ELEVEN_SITE not in text
    payload = json.loads(text)
    assert payload["privacy"]["min_cell"] == 10
    sites = site_rows(payload)
    assert all(re.fullmatch(r"site_\d+|missing", level) for level in sites)
    codes = site_code_map(pd.read_csv(folder / "cohort.csv")["site"])
    one = sites[codes[FREE_TEXT_SITE]]
    assert one["n"] == "< 10"
    assert all(one[c] is None for c in ("events", "observed", "prevalence", "auroc",
                                        "calibration_intercept", "mean_predicted"))
    assert sites[codes[ELEVEN_SITE]]["n"] == 11
    bins = payload["calibration_table"]
    assert sum(row["n"] for row in bins) == payload["data"]["rows_valid"]
    assert all(row["events"] >= 10 and row["n"] - row["events"] >= 10 for row in bins)
    artefact = Path(client.download_artifacts(payload["tracking"]["run_id"], "evaluation.json",
                                              str(tmp_path)))
    logged = artefact.read_text()
    assert FREE_TEXT_SITE not in logged and "Smith" not in logged
    assert site_rows(json.loads(logged))[codes[FREE_TEXT_SITE]]["n"] == "< 10"


def test_evaluate_honours_min_cell_12(site_env):
    folder, _ = site_env
    result = run("evaluate", "--data", "cohort.csv", "--out", "metrics12.json", "--n-boot", "10",
                 "--no-log", "--config", "train_12.yaml")
    assert result.exit_code in (0, 1), result.output
    payload = json.loads((folder / "metrics12.json").read_text())
    codes = site_code_map(pd.read_csv(folder / "cohort.csv")["site"])
    assert payload["privacy"]["min_cell"] == 12
    eleven = site_rows(payload)[codes[ELEVEN_SITE]]
    assert eleven["n"] == "< 12" and eleven["events"] is None


def test_evaluate_refuses_min_cell_4_before_any_work(site_env):
    folder, _ = site_env
    result = run("evaluate", "--data", "cohort.csv", "--out", "metrics4.json", "--no-log",
                 "--config", "train_4.yaml")
    assert result.exit_code == 2, result.output
    assert "privacy.min_cell" in result.output and "error:" in result.output
    assert not (folder / "metrics4.json").exists()


def test_report_withholds_the_subgroup_of_one_and_never_shows_the_site_name(site_env):
    folder, _ = site_env
    result = run("report", "--data", "cohort.csv", "--out", "report.html", "--n-boot", "10",
                 "--config", "train_10.yaml")
    assert result.exit_code == 0, result.output
    document = (folder / "report.html").read_text()
    assert FREE_TEXT_SITE not in document and "Smith" not in document
    assert ELEVEN_SITE not in document
    codes = site_code_map(pd.read_csv(folder / "cohort.csv")["site"])
    section = document[document.index('<section id="subgroups">'):]
    section = section[:section.index("</section>")]
    row = re.search(rf"<tr><td>Site</td><td>{codes[FREE_TEXT_SITE]}</td>(.*?)</tr>", section)
    assert row is not None, section[:2000]
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[0] == "&lt; 10" and set(cells[1:]) == {"–"}, cells  # n, then nothing
    eleven = re.search(rf"<tr><td>Site</td><td>{codes[ELEVEN_SITE]}</td>(.*?)</tr>", section)
    assert eleven is not None
    n, events, observed = re.findall(r"<td>(.*?)</td>", eleven.group(1))[:3]
    assert (n, events, observed) == ("11", "&lt; 10", "–")
    # Table 1 lists the site of one patient coded, its count withheld.
    table_one = document[document.index("Table 1"):document.index('<section id="missing">')]
    assert re.search(rf"<td>{codes[FREE_TEXT_SITE]}</td><td>&lt; 10</td>", table_one)


def test_tier_thresholds_logged_to_mlflow_withhold_small_counts_and_figures():
    """tiers.json (training's sensitivity and NPV per threshold) leaves the site with MLflow:
    small counts withheld, no sensitivity or NPV from a class with few events."""
    from crsrisk.evaluation.privacy import private_thresholds

    table = pd.DataFrame({
        "therapy_class": ["CAR-T", "CAR-T", "bispecific", "bispecific"],
        "tier": ["intermediate", "high"] * 2,
        "risk_at_least": [0.1, 0.25, 0.03, 0.08],
        "rows": [400, 400, 60, 60], "events": [40, 40, 4, 4],
        "at_or_above": [120, 7, 30, 12],
        "sensitivity": [0.8, 0.4, 0.75, 0.5], "npv": [0.97, 0.93, 0.99, 0.98], "note": "",
    })
    out = private_thresholds(table, min_cell=10)
    assert out["at_or_above"].tolist() == [120, "< 10", 30, 12]
    assert out["events"].tolist() == [40, 40, "< 10", "< 10"]
    assert out["sensitivity"].tolist()[:2] == [0.8, 0.4]
    assert out["sensitivity"].tolist()[2:] == [None, None]
    assert out["npv"].tolist()[2:] == [None, None]
    assert out["note"].str.contains("fewer than 10 events").tolist() == [False, False, True, True]
    assert table["events"].tolist() == [40, 40, 4, 4]  # the caller's table is untouched
