"""Figures every benchmark prints."""

from __future__ import annotations


def quantile(values: list[float], q: float) -> float:
    """The value below which a fraction ``q`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
