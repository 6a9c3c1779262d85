"""A small raster chart: one plot area on a white PNG, drawn with Pillow.

Why not matplotlib: a dataset card draws ~20 plots of the same three kinds (bars, stacked
bars, step lines) at the end of every job, and matplotlib spent ~3 s of a one-core curate
job on them (0.7 s of it importing itself; bench/RESULTS.md, issue 18), longer than the
job's extraction of 200 pages. These plots need boxes, lines, ticks and anti-aliased text
only; Pillow (FreeType text) draws a card's set in a few hundred milliseconds.

Coordinates: `Chart` maps data to pixels inside its plot area (`x_range`, `y_range`, an
optional logarithmic x axis) and draws ticks with labels from `nice_ticks` / `log_ticks`.
Marks are axis-aligned boxes and lines, so no anti-aliasing is needed for them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, GRID = "#ffffff", "#222222", "#e6e6e6"
FONT_SIZE, TITLE_SIZE, SMALL_SIZE = 12, 14, 10


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled TrueType face at `size` px (its fixed bitmap face where Pillow was
    built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # no FreeType: one fixed size
        return ImageFont.load_default()


def text_width(value: str, size: int = FONT_SIZE) -> float:
    """Width in pixels of `value` drawn at `size` (for laying out margins before drawing)."""
    return font(size).getlength(value)


def compact_number(value: float) -> str:
    """Tick label of at most ~5 characters: 950, 12.5k, 1.2M, 0.25."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi], about `target` of them."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """(decades, minor ticks at 2x and 5x) within [lo, hi] for a log axis (lo > 0)."""
    major, minor = [], []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0 ** exponent
            if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
                (major if mult == 1 else minor).append(value)
    return major, minor


def row_span(i: int, rows: int, fill: float = 0.7) -> tuple[float, float]:
    """The y interval of horizontal bar `i` of `rows` (y_range(0, rows)), the first at the top."""
    middle = rows - i - 0.5
    return middle - fill / 2, middle + fill / 2


@dataclass
class Margins:
    left: int = 58
    right: int = 16
    top: int = 30
    bottom: int = 34


class Chart:
    """A white image with one plot area; marks take data coordinates."""

    def __init__(self, width: int, height: int, title: str = "", margins: Margins | None = None):
        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.margins = margins or Margins()
        m = self.margins
        self.box = (m.left, m.top, width - m.right, height - m.bottom)  # plot area: x0, y0, x1, y1
        self.x_lo, self.x_hi, self.y_lo, self.y_hi = 0.0, 1.0, 0.0, 1.0
        self.x_log = False
        if title:
            self.text((width / 2, 6), title, size=TITLE_SIZE, anchor="ma")

    # ------------------------------------------------------------ scales
    def x_range(self, lo: float, hi: float, log: bool = False) -> None:
        self.x_log = log and lo > 0
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        self.x_lo, self.x_hi = lo, hi

    def y_range(self, lo: float, hi: float) -> None:
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        self.y_lo, self.y_hi = lo, hi

    def px(self, x: float) -> float:
        x0, _, x1, _ = self.box
        if self.x_log:
            x = max(x, self.x_lo)
            share = (math.log10(x) - math.log10(self.x_lo)) / (math.log10(self.x_hi) - math.log10(self.x_lo))
        else:
            share = (x - self.x_lo) / (self.x_hi - self.x_lo)
        return x0 + share * (x1 - x0)

    def py(self, y: float) -> float:
        _, y0, _, y1 = self.box
        return y1 - (y - self.y_lo) / (self.y_hi - self.y_lo) * (y1 - y0)

    # ------------------------------------------------------------ marks
    def text(self, xy: tuple[float, float], value: str, size: int = FONT_SIZE, anchor: str = "la",
             fill: str = INK) -> None:
        self.draw.text(xy, value, font=font(size), fill=fill, anchor=anchor)

    def rect(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float, color: str,
             edge: str | None = None) -> None:
        """A box in data coordinates (at least one pixel wide and tall where it is non-empty)."""
        left, right = sorted((self.px(x_lo), self.px(x_hi)))
        top, bottom = sorted((self.py(y_hi), self.py(y_lo)))
        if right - left < 1 or bottom - top < 1:
            if x_hi == x_lo or y_hi == y_lo:
                return
            right, bottom = max(right, left + 1), max(bottom, top + 1)
        self.draw.rectangle((left, top, right - 1, bottom - 1), fill=color, outline=edge)

    def vline(self, x: float, color: str = INK, dash: int = 0, width: int = 1) -> None:
        """A vertical line across the plot area; `dash` > 0 draws dashes of that many pixels."""
        _, y0, _, y1 = self.box
        xp = self.px(x)
        if not self.box[0] <= xp <= self.box[2]:
            return
        if not dash:
            self.draw.line((xp, y0, xp, y1), fill=color, width=width)
            return
        y = float(y0)
        while y < y1:
            self.draw.line((xp, y, xp, min(y + dash, y1)), fill=color, width=width)
            y += 2 * dash

    def stairs(self, edges: Sequence[float], values: Sequence[float], color: str, width: int = 2) -> None:
        """A step line: `values[i]` over [edges[i], edges[i+1]]."""
        points = []
        for i, value in enumerate(values):
            y = self.py(value)
            points += [(self.px(edges[i]), y), (self.px(edges[i + 1]), y)]
        if points:
            self.draw.line(points, fill=color, width=width, joint="curve")

    # ------------------------------------------------------------ axes
    def frame(self) -> None:
        x0, y0, x1, y1 = self.box
        self.draw.line((x0, y1, x1, y1), fill=INK)
        self.draw.line((x0, y0, x0, y1), fill=INK)

    def x_axis(self, label: str = "", formatter: Callable[[float], str] = compact_number, ticks: int = 5) -> None:
        _, _, _, y1 = self.box
        if self.x_log:
            major, minor = log_ticks(self.x_lo, self.x_hi)
            for value in minor:
                self.draw.line((self.px(value), y1, self.px(value), y1 + 3), fill=INK)
            if len(major) < 2:  # a range inside one decade: label the 2x / 5x ticks too
                major = sorted(major + minor)
        else:
            major = nice_ticks(self.x_lo, self.x_hi, ticks)
        for value in major:
            x = self.px(value)
            self.draw.line((x, y1, x, y1 + 5), fill=INK)
            self.text((x, y1 + 7), formatter(value), size=SMALL_SIZE, anchor="ma")
        if label:
            self.text(((self.box[0] + self.box[2]) / 2, self.image.height - 4), label, size=SMALL_SIZE, anchor="md")

    def y_axis(self, label: str = "", formatter: Callable[[float], str] = compact_number, ticks: int = 5,
               grid: bool = True) -> None:
        x0, _, x1, _ = self.box
        for value in nice_ticks(self.y_lo, self.y_hi, ticks):
            y = self.py(value)
            if grid and value != self.y_lo:
                self.draw.line((x0 + 1, y, x1, y), fill=GRID)
            self.draw.line((x0 - 5, y, x0, y), fill=INK)
            self.text((x0 - 7, y), formatter(value), size=SMALL_SIZE, anchor="rm")
        if label:  # written upwards along the axis, as on most charts
            width = int(text_width(label, SMALL_SIZE)) + 2
            tile = Image.new("RGB", (width, SMALL_SIZE + 4), BACKGROUND)
            ImageDraw.Draw(tile).text((1, 1), label, font=font(SMALL_SIZE), fill=INK)
            self.image.paste(tile.rotate(90, expand=True), (3, int((self.box[1] + self.box[3] - width) / 2)))

    def category_axis(self, labels: Sequence[str], size: int = SMALL_SIZE) -> None:
        """One label per row left of the plot area, the first at the top (see `row_span`)."""
        x0 = self.box[0]
        for i, label in enumerate(labels):
            low, high = row_span(i, len(labels))
            self.text((x0 - 6, self.py((low + high) / 2)), label, size=size, anchor="rm")

    def legend(self, items: Sequence[tuple[str, str] | tuple[str, str, str]], corner: str = "upper right",
               origin: tuple[float, float] | None = None) -> None:
        """Labels with a key (`style` box, line, dash or dot: as the mark was drawn), stacked, at a
        corner of the plot area or at `origin`. Items are (label, color) or (label, color, style)."""
        if not items:
            return
        size, line, swatch = SMALL_SIZE, SMALL_SIZE + 5, 10
        width = swatch + 6 + max(text_width(item[0], size) for item in items)
        x0, y0, x1, _ = self.box
        if origin is not None:
            left, top = origin
        else:
            left = x1 - width - 6 if corner.endswith("right") else x0 + 6
            top = y0 + 4
        for i, item in enumerate(items):
            label, color, style = (*item, "box")[:3]
            y = top + i * line
            middle = y + 2 + swatch / 2
            if style == "box":
                self.draw.rectangle((left, y + 2, left + swatch, y + 2 + swatch), fill=color)
            elif style in ("dash", "dot"):  # the vline dash patterns, 5 px and 2 px
                step = 5 if style == "dash" else 2
                for start in range(0, swatch, 2 * step):
                    self.draw.line((left + start, middle, left + min(start + step, swatch), middle), fill=color)
            else:
                self.draw.line((left, middle, left + swatch, middle), fill=color, width=2)
            self.text((left + swatch + 6, y), label, size=size)

    def save(self, path: str | Path) -> Path:
        # compress_level 3: a flat-colour chart compresses about as well as at the default 6, faster.
        self.image.save(path, format="PNG", compress_level=3)
        return Path(path)
