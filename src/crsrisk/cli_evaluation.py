"""Commands for evaluation and reporting: evaluate, recalibrate, report (on crsrisk.cli.app)."""

from __future__ import annotations
