"""Risk tiers that mean an action: thresholds and planning texts per therapy class.

Each tier starts at the risk at which a team would take its planning actions (configs/score.yaml),
per therapy class where the evidence differs. The thresholds are clinical choices stored with
the model; training reports the sensitivity and NPV each reaches but never moves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from crsrisk.config import ScoreConfig

__all__ = [
    "ONSET_WINDOWS",
    "ActionTiers",
    "threshold_performance",
    "tier_counts",
]

TIER_NAMES = ("low", "intermediate", "high")  # as riskmodel.TIERS, codes 0, 1, 2
# The expected CRS onset window that replaces {onset} in planning texts.
ONSET_WINDOWS = {
    "CD28": "around day 2 for a CD28 product",
    "4-1BB": "days 3-9 for a 4-1BB product",
    "bispecific": "for 24-48 h after each step-up dose",
    "unknown": "through day 14",
}
_ONSETS = tuple(ONSET_WINDOWS)
_OTHER = "other"


def _text_values(column: pd.Series) -> np.ndarray:
    """A text or categorical column's values as an object array (NaN where missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # by its codes: a few rows cost less
        codes = column.cat.codes.to_numpy()
        levels = np.append(column.cat.categories.to_numpy(dtype=object), np.nan)
        return levels[codes]  # code -1 (missing) takes the last entry
    return column.astype("str").to_numpy(dtype=object)


@dataclass(frozen=True)
class ActionTiers:
    """Tier thresholds and planning actions per therapy class.

    Parameters
    ----------
    thresholds
        Therapy class -> (intermediate from, high from), risks in (0, 1).
    actions
        Therapy class -> tier -> list of ``[text, diagnoses]`` (diagnoses empty: all).
    disclaimer
        Shown with the planning texts in reports.
    """

    thresholds: dict[str, tuple[float, float]]
    actions: dict[str, dict[str, list[list]]]
    disclaimer: str = ""

    @classmethod
    def from_config(cls, score: ScoreConfig) -> ActionTiers:
        """The tiers of a score config (configs/score.yaml)."""
        thresholds, actions = {}, {}
        for therapy, planning in score.therapy_classes.items():
            thresholds[therapy] = (float(planning.intermediate.risk_at_least),
                                   float(planning.high.risk_at_least))
            actions[therapy] = {
                tier: [[a.text, list(a.diagnoses)] for a in getattr(planning, tier).actions]
                for tier in TIER_NAMES
            }
        return cls(thresholds, actions, score.disclaimer)

    # -- persistence as plain data -----------------------------------------------------------

    def to_dict(self) -> dict:
        return {"thresholds": {k: list(v) for k, v in self.thresholds.items()},
                "actions": self.actions, "disclaimer": self.disclaimer}

    @classmethod
    def from_dict(cls, data: dict) -> ActionTiers:
        return cls({k: (float(v[0]), float(v[1])) for k, v in data["thresholds"].items()},
                   data["actions"], data.get("disclaimer", ""))

    # -- assignment ----------------------------------------------------------------------------

    def _classes(self, valid: pd.DataFrame) -> np.ndarray:
        return _text_values(valid["therapy_class"])

    def codes(self, valid: pd.DataFrame, risk: np.ndarray) -> np.ndarray:
        """0 low, 1 intermediate, 2 high, by each row's therapy class thresholds."""
        classes = self._classes(valid)
        risk = np.asarray(risk, dtype=float)
        lower = np.full(len(risk), np.nan)
        upper = np.full(len(risk), np.nan)
        for therapy, (low, high) in self.thresholds.items():
            rows = classes == therapy
            lower[rows], upper[rows] = low, high
        if np.isnan(lower).any():  # the contract requires the class; a stray one is a bug
            unknown = sorted(set(classes[np.isnan(lower)]))
            raise ValueError(f"no tiers for therapy class {', '.join(unknown)}")
        return (risk >= lower).astype(np.int8) + (risk >= upper).astype(np.int8)

    def _diagnosis_keys(self) -> tuple[str, ...]:
        named = {d for tiers in self.actions.values() for acts in tiers.values()
                 for _, diagnoses in acts for d in diagnoses}
        return (*sorted(named), _OTHER)

    def _text(self, therapy: str, tier: str, onset: str, diagnosis: str) -> str:
        parts = [text.replace("{onset}", ONSET_WINDOWS[onset])
                 for text, diagnoses in self.actions[therapy][tier]
                 if not diagnoses or diagnosis in diagnoses]
        return " | ".join(parts)

    @cached_property
    def _choices(self) -> list[str]:
        """Every planning text, in the order `planning` indexes them (built once per model:
        a one-patient request would otherwise spend a millisecond on them)."""
        dx_keys = self._diagnosis_keys()
        return [self._text(c, t, o, d) for c in self.thresholds for t in TIER_NAMES
                for o in _ONSETS for d in dx_keys]

    def planning(self, valid: pd.DataFrame, codes: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Planning text of each row: the distinct texts and each row's position among them.

        The text follows the row's therapy class, tier, expected onset (costimulation or
        bispecific) and, for diagnosis-specific actions, its diagnosis.
        """
        classes = list(self.thresholds)
        dx_keys = self._diagnosis_keys()
        choices = self._choices
        therapy = self._classes(valid)
        class_code = np.zeros(len(valid), dtype=np.int64)
        for i, c in enumerate(classes):
            class_code[therapy == c] = i
        costim = _text_values(valid["costim_domain"])
        onset = np.where(therapy == "bispecific", "bispecific",
                         np.where(np.isin(costim, ("CD28", "4-1BB")), costim, "unknown"))
        onset_code = np.select([onset == o for o in _ONSETS], range(len(_ONSETS)))
        diagnosis = _text_values(valid["diagnosis"])
        dx_code = np.full(len(valid), len(dx_keys) - 1, dtype=np.int64)
        for i, d in enumerate(dx_keys[:-1]):
            dx_code[diagnosis == d] = i
        index = ((class_code * 3 + codes.astype(np.int64)) * len(_ONSETS) + onset_code) \
            * len(dx_keys) + dx_code
        return choices, index


def threshold_performance(risk: np.ndarray, y: np.ndarray, valid: pd.DataFrame,
                          tiers: ActionTiers) -> pd.DataFrame:
    """Sensitivity (events at or above) and NPV (non-events below) of every threshold.

    Computed on the rows given (out-of-fold risks of the development rows at training); a
    figure that cannot be computed is NaN with the reason in ``note``.
    """
    classes = valid["therapy_class"].astype("str").to_numpy()
    y = np.asarray(y, dtype=int)
    rows = []
    for therapy, (low, high) in tiers.thresholds.items():
        mine = classes == therapy
        for tier, threshold in (("intermediate", low), ("high", high)):
            r, t = risk[mine], y[mine]
            above, below = r >= threshold, r < threshold
            notes = []
            if not t.sum():
                notes.append(f"no {therapy} events: sensitivity undefined")
            if not below.sum():
                notes.append(f"no {therapy} rows below {threshold}: NPV undefined")
            rows.append({
                "therapy_class": therapy, "tier": tier, "risk_at_least": threshold,
                "rows": int(mine.sum()), "events": int(t.sum()), "at_or_above": int(above.sum()),
                "sensitivity": t[above].sum() / t.sum() if t.sum() else np.nan,
                "npv": 1 - t[below].mean() if below.sum() else np.nan,
                "note": "; ".join(notes),
            })
    return pd.DataFrame(rows)


def tier_counts(scores: pd.DataFrame, valid: pd.DataFrame) -> pd.DataFrame:
    """Patients per therapy class and tier (a score table and its validated rows)."""
    table = pd.crosstab(valid["therapy_class"].astype("str"),
                        pd.Categorical(scores["risk_tier"], categories=TIER_NAMES))
    table.index.name, table.columns.name = "therapy_class", "tier"
    return table
