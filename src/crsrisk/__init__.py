"""crsrisk: predict severe cytokine release syndrome before CAR-T or bispecific therapy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["score"]

if TYPE_CHECKING:
    from crsrisk.scoring.core import score


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import crsrisk` (and the CLI's start) stays light.
    if name == "score":
        from crsrisk.scoring.core import score

        return score
    raise AttributeError(f"module 'crsrisk' has no attribute {name!r}")
