"""Evaluation kinds, one module each: what a suite turns on, how its jobs are planned and what enters their
identity, how a unit executes, the record it writes and the tables it adds. ``plan``, ``execute``, the store and
the report read the kinds from this registry and from nowhere else.

A new kind is one module with a ``Kind`` and one line below (``tests/test_kinds.py`` checks every piece).
"""
from __future__ import annotations

from ..errors import QuestbenchError
from . import attacks, calibration, clean, corruption, diagnostics, shift
from .base import Job, Kind, Part, Planning, Work

# the registry, in the order a rank runs its units
KINDS: dict[str, Kind] = {k.name: k for k in (
    # calibration right after the kinds whose forward passes give its rows: what it takes from them is let go
    # before the attacks run
    clean.KIND, shift.KIND, corruption.KIND, calibration.KIND, attacks.ATTACK, attacks.CHECK, diagnostics.KIND,
)}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise QuestbenchError(f"unknown evaluation kind {name!r}; known: {', '.join(KINDS)}") from None


__all__ = ["Job", "KINDS", "Kind", "Part", "Planning", "Work", "kind"]
