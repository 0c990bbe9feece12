"""The `crsrisk` command line. Each module holds one group of commands and only wires stages."""

from __future__ import annotations

from crsrisk.cli import data, evaluation, scoring, training  # noqa: F401  (registers the commands)
from crsrisk.cli.common import app

__all__ = ["app"]
