"""The fitted risk model: a model adapter, calibrator, tiers and planning, as one object.

Training builds it, the MLflow PythonModel wraps it, batch scoring calls it directly. Its
``score`` turns validated contract rows into the score table of contract section 5. What differs
between model types (XGBoost, logistic regression, a published score) lives in its adapter
(crsrisk.modeling.adapters); calibration lives in crsrisk.modeling.calibration.

`RiskModel.save` writes data only, never a pickle: ``model.json`` (features, coefficients,
calibrator, tiers, planning texts, name, version, contract version, info) and, for XGBoost,
the booster as ``booster.ubj``. `RiskModel.load` refuses a folder holding anything else.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.errors import CorruptModelError, ModelError
from crsrisk.explain.drivers import Contributions, render_drivers
from crsrisk.modeling.adapters import (
    BOOSTER_FILE,
    ModelAdapter,
    adapter_files,
    adapter_from_data,
    shared_xgboost_inputs,
)
from crsrisk.modeling.calibration import (
    PROBABILITY_FLOOR,
    Calibrator,
    Recalibrated,
    calibrator_from_dict,
)
from crsrisk.modeling.tiers import ActionTiers
from crsrisk.modeling.uncertainty import BootstrapEnsemble

# PROBABILITY_FLOOR, Calibrator and Recalibrated live in crsrisk.modeling.calibration; they are
# re-exported here for callers that import them with the model.
__all__ = [
    "PROBABILITY_FLOOR",
    "DRIVER_SCALE",
    "SCORE_COLUMNS",
    "FLOAT_SCORE_COLUMNS",
    "TIERS",
    "MODEL_FILE",
    "FORMAT_VERSION",
    "Calibrator",
    "Recalibrated",
    "Tiers",
    "RiskModel",
]

DRIVER_SCALE = "log-odds of the model before calibration"
SCORE_COLUMNS = (
    "patient_id",
    "risk",
    "risk_lower",  # 90 % interval across bootstrap refits (empty when the model has none)
    "risk_upper",
    "risk_tier",
    "top_drivers",
    "planning",
    "model_name",
    "model_version",
)
FLOAT_SCORE_COLUMNS = ("risk", "risk_lower", "risk_upper")
TIERS = ("low", "intermediate", "high")
MODEL_FILE = "model.json"
FORMAT = "crsrisk risk model"
FORMAT_VERSION = 1
# Every file a saved model may hold; anything else in its folder is refused unread.
KNOWN_FILES = frozenset({MODEL_FILE, BOOSTER_FILE})


@dataclass(frozen=True)
class Tiers:
    """risk < low -> low; low <= risk < high -> intermediate; risk >= high -> high."""

    low: float
    high: float

    def codes(self, risk: np.ndarray) -> np.ndarray:
        """0 low, 1 intermediate, 2 high (positions in TIERS)."""
        return (np.asarray(risk) >= self.low).astype(np.int8) + (
            np.asarray(risk) >= self.high
        ).astype(np.int8)

    def assign(self, risk: np.ndarray) -> np.ndarray:
        return np.asarray(TIERS, dtype=object)[self.codes(risk)]


# Up to this many rows a text column is built from a list: Arrow's set-up costs more.
_FEW_ROWS = 64


def _texts(choices: list[str | None], codes: np.ndarray, index: pd.Index) -> pd.Series:
    """``choices[code]`` for each code, as a text column: a few long texts (planning) repeated
    on every row are copied by Arrow instead of being converted row by row."""
    if len(codes) <= _FEW_ROWS:
        return pd.Series([choices[c] for c in codes.tolist()], index=index, dtype="str")
    taken = pc.take(pa.array(choices, type=pa.large_string()), pa.array(codes))
    return pd.Series(taken.to_pandas(), dtype="str").set_axis(index)


@dataclass(frozen=True)
class RiskModel:
    """A fitted candidate: ``margin`` (log-odds), ``risk`` (calibrated), ``score`` (table).

    Built once with every part it holds and never changed afterwards: a model with another
    version, calibrator or intervals is a new one (``dataclasses.replace``), so a model that
    scored a row is the model whose name and version the row carries.

    Parameters
    ----------
    adapter
        The fitted model type (crsrisk.modeling.adapters): margin and contributions.
    calibrator
        Margin -> probability (crsrisk.modeling.calibration).
    tiers, planning
        Tier thresholds, and the planning text of each tier.
    top_k
        Drivers in words per patient.
    name, version, contract_version
        As registered, and the data contract version of the training data.
    info
        JSON-able facts about the model (candidate, calibration, fingerprints...).
    """

    adapter: ModelAdapter
    calibrator: Calibrator | Recalibrated
    tiers: Tiers
    planning: dict[str, str]
    top_k: int = 3
    name: str = "crs-severe"
    version: str = "unregistered"
    contract_version: str = CONTRACT_VERSION
    info: dict = field(default_factory=dict)
    # Per-patient intervals (None: risk_lower and risk_upper stay empty) and tiers per therapy
    # class (None: `tiers` and `planning` for every row). Both are plain data: to_dict/from_dict.
    uncertainty: BootstrapEnsemble | None = None
    action_tiers: ActionTiers | None = None

    @property
    def kind(self) -> str:
        """The model type, for display: ``"xgboost"``, ``"logistic"`` or a published score."""
        return self.adapter.kind

    # -- predictions -------------------------------------------------------------------------

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        """The model matrix for validated contract rows."""
        return self.adapter.design(valid)

    def margin(self, valid: pd.DataFrame, design: pd.DataFrame | None = None) -> np.ndarray:
        """Uncalibrated log-odds."""
        return self.adapter.margin(self.design(valid) if design is None else design)

    def risk(self, valid: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of ASTCT grade >= 3 CRS."""
        return self.calibrator.predict(self.margin(valid))

    def contributions(
        self, valid: pd.DataFrame, design: pd.DataFrame | None = None
    ) -> Contributions:
        """Per-driver contributions to the margin (TreeSHAP, exact linear terms, or the score)."""
        return self.adapter.contributions(self.design(valid) if design is None else design)

    def score(self, valid: pd.DataFrame, drivers: bool = True,
              design: pd.DataFrame | None = None) -> pd.DataFrame:
        """The score table (contract section 5) for validated rows, in their order.

        ``design``: ``self.design(valid)``, when already computed.
        """
        with shared_xgboost_inputs():
            return self._score(valid, drivers, self.design(valid) if design is None else design)

    def _score(self, valid: pd.DataFrame, drivers: bool, design: pd.DataFrame) -> pd.DataFrame:
        # Risk always comes from the model's own margin: summed float32 contributions can
        # differ from it in the 7th digit, and a patient's risk must not depend on drivers.
        margin = self.margin(valid, design)
        if drivers:
            top = render_drivers(self.contributions(valid, design), valid, self.top_k)
        else:
            top = pd.Series(pd.NA, index=valid.index, dtype="str")
        risk = self.calibrator.predict(margin)
        if self.uncertainty is not None:
            lower, upper = self.uncertainty.interval(design, margin, self.calibrator)
        else:
            lower = upper = np.full(len(risk), np.nan)
        if self.action_tiers is not None:
            codes = self.action_tiers.codes(valid, risk)
            choices, plan = self.action_tiers.planning(valid, codes)
        else:
            codes = self.tiers.codes(risk)
            choices, plan = [self.planning.get(t) for t in TIERS], codes
        n = np.zeros(len(risk), dtype=np.int8)
        return pd.DataFrame(
            {
                "patient_id": valid["patient_id"].astype("str"),
                "risk": risk,
                "risk_lower": lower,
                "risk_upper": upper,
                "risk_tier": _texts(list(TIERS), codes, valid.index),
                "top_drivers": top,
                "planning": _texts(choices, plan, valid.index),
                "model_name": _texts([self.name], n, valid.index),
                "model_version": _texts([str(self.version)], n, valid.index),
            },
            index=valid.index,
        )

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything but the adapter's binary files, as JSON-able data."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "adapter": self.adapter.state(),
            "calibrator": self.calibrator.to_dict(),
            "tiers": {"low": float(self.tiers.low), "high": float(self.tiers.high)},
            "planning": dict(self.planning),
            "top_k": int(self.top_k),
            "name": self.name,
            "version": str(self.version),
            "contract_version": self.contract_version,
            "info": self.info,
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
            "action_tiers": None if self.action_tiers is None else self.action_tiers.to_dict(),
            "drivers_scale": DRIVER_SCALE,
            "written_with": {"python": platform.python_version(), "xgboost": xgb.__version__},
        }

    def save(self, folder: str | Path) -> Path:
        """Write the model to a new or empty ``folder`` as data: ``model.json`` (+ booster).

        Raises
        ------
        ModelError
            ``folder`` already holds files, or ``info`` is not JSON-able.
        """
        folder = Path(folder)
        if folder.is_dir() and any(folder.iterdir()):
            raise ModelError(f"{folder} already holds files: save the model into a new folder.")
        try:
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"The model cannot be saved as JSON ({exc}): keep its info to "
                             "text, numbers, lists and dicts.") from exc
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.adapter.files().items():
            (folder / name).write_bytes(content)
        # Written last: a folder without it is an incomplete save, refused by load.
        (folder / MODEL_FILE).write_text(text, encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RiskModel:
        """The model `save` wrote to ``folder``, scoring bit for bit as the saved one.

        Nothing in the folder is executed: any file other than ``model.json`` and the files
        of its model type is refused before anything is read.

        Raises
        ------
        ModelError
            The folder holds a file a model does not have, lacks one, or its content is not
            that of a crsrisk model of this format.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelError(f"{folder} is not a folder: give the folder a crsrisk model was "
                             "saved to.")
        present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
        _refuse_unexpected(folder, present, KNOWN_FILES)
        if MODEL_FILE not in present:
            raise ModelError(f"{folder} lacks {MODEL_FILE}: it is not a saved crsrisk model, "
                             "or its save was interrupted; save or export the model again.")
        where = folder / MODEL_FILE
        try:
            document = json.loads(where.read_text(encoding="utf-8"))
            kind = _check_format(document)
            expected = {MODEL_FILE, *adapter_files(kind)}
            _refuse_unexpected(folder, present, expected)
            missing = sorted(expected - set(present))
            if missing:
                raise CorruptModelError(f"{folder} lacks {missing[0]}, which a {kind} model needs: "
                                 "save or export the model again.")
            files = {name: (folder / name).read_bytes() for name in adapter_files(kind)}
            return cls(
                adapter=adapter_from_data(kind, document["adapter"], files),
                calibrator=calibrator_from_dict(document["calibrator"]),
                tiers=_tiers(document["tiers"]),
                planning={str(k): str(v) for k, v in document["planning"].items()},
                top_k=int(document["top_k"]),
                name=str(document["name"]),
                version=str(document["version"]),
                contract_version=str(document["contract_version"]),
                info=dict(document["info"]),
                uncertainty=(None if document.get("uncertainty") is None
                             else BootstrapEnsemble.from_dict(document["uncertainty"])),
                action_tiers=(None if document.get("action_tiers") is None
                              else ActionTiers.from_dict(document["action_tiers"])),
            )
        except ModelError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as exc:
            detail = str(exc).rstrip(".").replace("\n", " ")
            raise CorruptModelError(f"{where} is not a valid crsrisk model ({type(exc).__name__}: "
                             f"{detail}): save or export the model again.") from exc


def _refuse_unexpected(folder: Path, present: list[str], expected: set[str] | frozenset) -> None:
    unexpected = [name for name in present if name not in expected]
    if unexpected:
        raise CorruptModelError(
            f"{folder / unexpected[0]} is not part of a saved crsrisk model, which holds only "
            f"{' and '.join(sorted(expected))}: nothing was loaded; remove it, or save or "
            "export the model again."
        )


def _check_format(document: object) -> str:
    """The model type of a model.json document of a format this crsrisk reads."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("it is not a crsrisk risk model")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version!r}, this crsrisk reads {FORMAT_VERSION}")
    kind = document.get("kind")
    adapter_files(kind)  # an unknown model type raises here
    return kind


def _tiers(data: dict) -> Tiers:
    low, high = float(data["low"]), float(data["high"])
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"tiers low {low} and high {high} are not 0 <= low <= high <= 1")
    return Tiers(low=low, high=high)
