"""Errors a user can meet, each carrying one sentence that names the problem and the fix."""

from __future__ import annotations

__all__ = [
    "CrsriskError", "ContractError", "ModelError", "EnvironmentFault", "CorruptModelError",
]


class CrsriskError(Exception):
    """Base class for foreseeable user-facing problems (the CLI prints the message, exits 2)."""


class ContractError(CrsriskError, ValueError):
    """A table cannot be used at all: unreadable, empty, wrong format, required column missing."""


class ModelError(CrsriskError):
    """The model cannot be loaded or used."""


class EnvironmentFault(CrsriskError):
    """The machine, not the input, is at fault (the CLI exits 3).

    An output that cannot be written (folder unwritable or not a folder, disk full), a tracking
    store that is unreachable, unwritable or not a store, a corrupted model artefact. The message
    names the path or URI and what to do about it.
    """


class CorruptModelError(ModelError, EnvironmentFault):
    """A saved model's files are damaged (unreadable, cut short, edited or with files added):
    the copy on this machine is at fault, not the user's input, so the CLI exits 3."""
