"""Helpers the benchmark scripts share (they run as `python bench/NAME.py`, so this imports)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pandas as pd

T = TypeVar("T")


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """The fastest of `repeats` calls, in seconds, and the last call's result."""
    times: list[float] = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def as_text(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as pandas reads a CSV file: every cell text (pandas' str dtype), dates as
    YYYY-MM-DD."""
    out = {}
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            out[name] = col.dt.strftime("%Y-%m-%d")
        else:
            out[name] = col.astype("str").where(col.notna())
    return pd.DataFrame(out)
