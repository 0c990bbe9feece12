"""Config files: packaged defaults, paths relative to the file, the project's crsrisk.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crsrisk.config import (
    DEFAULTS,
    ConfigError,
    find_project_file,
    load_project_tracking,
    load_train_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["train.yaml", "score.yaml"])
def test_the_examples_in_configs_are_the_packaged_defaults(name):
    assert (ROOT / "configs" / name).read_text() == (DEFAULTS / name).read_text()


def test_defaults_come_from_the_package_not_the_repository():
    packaged = Path(str(DEFAULTS))
    assert packaged.parent == ROOT / "src" / "crsrisk"  # shipped as package data
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"defaults/*.yaml"' in pyproject
    config = load_train_config()
    assert config.score is not None and set(config.score.therapy_classes) == {"CAR-T",
                                                                              "bispecific"}
    assert config.tracking.uri is None  # the store rule decides (crsrisk.mlops.registry)


def test_train_yaml_copied_alone_elsewhere_still_loads(tmp_path, monkeypatch):
    shutil.copy(ROOT / "configs" / "train.yaml", tmp_path / "train.yaml")
    monkeypatch.chdir(ROOT)  # the working directory is not where the file is
    config = load_train_config(tmp_path / "train.yaml")
    assert config.model_dump() == load_train_config().model_dump()  # all but where it came from
    assert config.tracking.origin == str(tmp_path / "train.yaml")


def test_references_resolve_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    score = (ROOT / "configs" / "score.yaml").read_text().replace(
        "Standard CRS monitoring", "Site-specific monitoring")
    (folder / "actions.yaml").write_text(score)
    (folder / "train.yaml").write_text(
        "score_config: actions.yaml\n"
        "tracking:\n  uri: sqlite:///store/mlflow.db\n  artifact_root: store/artefacts\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_train_config(Path("..") / "study" / "train.yaml")
    low = config.score.therapy_classes["CAR-T"].low
    assert low.actions[0].text.startswith("Site-specific monitoring")
    assert config.tracking.uri == f"sqlite:///{folder / 'store' / 'mlflow.db'}"
    assert config.tracking.artifact_root == str(folder / "store" / "artefacts")
    assert config.tracking.origin == str(Path("..") / "study" / "train.yaml")


def test_a_missing_referenced_file_names_both_files(tmp_path):
    (tmp_path / "train.yaml").write_text("score_config: plans.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_train_config(tmp_path / "train.yaml")
    message = str(caught.value)
    assert str(tmp_path / "plans.yaml") in message and str(tmp_path / "train.yaml") in message
    assert "remove score_config" in message


def test_bad_config_values_are_one_sentence(tmp_path):
    (tmp_path / "train.yaml").write_text("tracking:\n  uri: 5\n  colour: blue\n")
    with pytest.raises(ConfigError, match="tracking"):
        load_train_config(tmp_path / "train.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "absent.yaml")


def test_project_file_is_found_upwards_and_read_relative_to_itself(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_project_file(tmp_path / "a" / "b") in (None, *[
        p / "crsrisk.toml" for p in tmp_path.parents])  # none inside tmp_path
    (tmp_path / "crsrisk.toml").write_text(
        '[tracking]\nuri = "sqlite:///db/mlflow.db"\nexperiment = "site-b"\n')
    assert find_project_file(tmp_path / "a" / "b") == tmp_path / "crsrisk.toml"
    tracking = load_project_tracking(tmp_path / "a" / "b")
    assert tracking.uri == f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    assert tracking.experiment == "site-b"
    (tmp_path / "crsrisk.toml").write_text("[tracking\n")
    with pytest.raises(ConfigError, match="cannot be read as TOML"):
        load_project_tracking(tmp_path)
    (tmp_path / "crsrisk.toml").write_text('[tracking]\nuri_typo = "x"\n')
    with pytest.raises(ConfigError, match="tracking.uri_typo"):
        load_project_tracking(tmp_path)
