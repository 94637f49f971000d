"""A bar chart of a usage series as inline SVG geometry (no script, no library).

Pure: values in, integer pixel boxes out. Heights are scaled with exact decimals and floored
to whole pixels; a non-zero value always gets at least one pixel so it is never invisible.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

WIDTH = 720
HEIGHT = 160
BOTTOM = 20  # room for the day labels
LEFT = 48  # room for the scale
SCALE_CHARS = 7  # what the scale's label fits in LEFT at its 10 px font


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str  # the day
    value: str  # the figure shown on hover


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_bottom: int
    left: int
    bars: list[Bar]
    maximum: str  # the peak, exact (the heading)
    ticks: list[tuple[int, str]]  # (x, day label) every few bars
    scale: str = ""  # the peak as the scale shows it, short enough to fit its room


def scale_label(top: Decimal) -> str:
    """The peak, exact when it fits the scale's room, else in two significant digits (a
    309-digit sum of doubles near 1e308 was cut to its last digits there)."""
    exact = str(top)
    return exact if len(exact) <= SCALE_CHARS else format(top, ".2g").replace(".0e", "e")


def bars(points: list[tuple[dt.date, Decimal | int | None]]) -> Chart:
    values = [Decimal(v) if v is not None else Decimal(0) for _, v in points]
    top = max(values, default=Decimal(0))
    plot = HEIGHT - BOTTOM
    n = max(len(points), 1)
    slot = (WIDTH - LEFT) // n
    width = max(slot - 2, 1)
    out: list[Bar] = []
    ticks: list[tuple[int, str]] = []
    step = max(n // 6, 1)
    for i, ((day, raw), value) in enumerate(zip(points, values, strict=True)):
        height = 0
        if top > 0 and value > 0:
            height = max(int((value * (plot - 4)) // top), 1)
        x = LEFT + i * slot + 1
        shown = "-" if raw is None else str(raw)
        out.append(Bar(x, plot - height, width, height, day.isoformat(), shown))
        if i % step == 0:
            ticks.append((x, day.strftime("%m-%d")))
    return Chart(WIDTH, HEIGHT, plot, LEFT, out, str(top), ticks, scale_label(top))
