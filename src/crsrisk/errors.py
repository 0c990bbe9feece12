"""Errors a user can meet, each carrying one sentence that names the problem and the fix."""

from __future__ import annotations

__all__ = ["CrsriskError", "ContractError", "ModelError"]


class CrsriskError(Exception):
    """Base class for foreseeable user-facing problems (the CLI prints the message, exits 2)."""


class ContractError(CrsriskError, ValueError):
    """A table cannot be used at all: unreadable, empty, wrong format, required column missing."""


class ModelError(CrsriskError):
    """The model cannot be loaded or used."""
