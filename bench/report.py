"""The benchmark's one table: each row a figure, what it was measured next to, its target and a verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Row:
    part: str  # "a".."e"
    figure: str
    measured: str  # the figure and what it was measured side by side with
    target: str = ""
    met: bool | None = None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT met")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "verdict": self.verdict}


def format_table(rows: Sequence[Row]) -> str:
    header = ("part", "figure", "measured (side by side)", "target", "verdict")
    cells = [header] + [(f"({r.part})", r.figure, r.measured, r.target, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def num(value: float, digits: int = 0) -> str:
    """1,234 / 1,234.5 style; "n/a" for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"
