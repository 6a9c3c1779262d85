"""The card's raster charts: tick placement, data-to-pixel mapping, and what the card plots show."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image

from schemas.card_plots import (
    DROPPED_STACKED_COLOR,
    KEPT_COLOR,
    REASON_COLORS,
    funnel_png,
    histogram_png,
)
from schemas.raster_chart import Chart, compact_number, log_ticks, nice_ticks


def rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def pixels_of(path, color: str) -> np.ndarray:
    """Boolean mask of the pixels that are exactly `color`."""
    image = np.asarray(Image.open(path).convert("RGB"))
    return np.all(image == rgb(color), axis=-1)


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1800) == [0, 500, 1000, 1500]
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 3) == [3]
    assert log_ticks(30, 20000) == ([100, 1000, 10000], [50, 200, 500, 2000, 5000, 20000])
    assert [compact_number(v) for v in (950, 12500, 1.2e6, 0.25)] == ["950", "12.5k", "1.2M", "0.25"]


def test_bars_are_drawn_to_scale(tmp_path):
    chart = Chart(400, 300)
    chart.x_range(0, 4)
    chart.y_range(0, 40)
    chart.rect(0, 1, 0, 10, KEPT_COLOR)
    chart.rect(2, 3, 0, 40, KEPT_COLOR)
    path = chart.save(tmp_path / "bars.png")
    green = pixels_of(path, KEPT_COLOR)
    short, tall = green[:, int(chart.px(0.5))].sum(), green[:, int(chart.px(2.5))].sum()
    assert abs(tall / short - 4.0) < 0.1
    top, bottom = chart.box[1], chart.box[3]
    assert abs(tall - (bottom - top)) <= 1  # the 40 bar fills the plot area's height


def test_log_axis_gives_each_decade_the_same_width():
    chart = Chart(600, 300)
    chart.x_range(10, 10000, log=True)
    assert abs((chart.px(100) - chart.px(10)) - (chart.px(10000) - chart.px(1000))) < 1e-6


def histogram_tables(dropped: bool) -> tuple[pa.Table, pa.Table]:
    rows = [{"split": "kept", "column": "x", "lo": float(i), "hi": float(i + 1), "count": 10 * (i + 1)}
            for i in range(5)]
    if dropped:
        rows += [{"split": "dropped", "column": "x", "lo": float(i), "hi": float(i + 1), "count": 5} for i in range(5)]
    stats = pa.table({"split": ["kept"], "column": ["x"], "count": [150], "q50": [3.5], "mean": [3.2]})
    return pa.Table.from_pylist(rows), stats


def test_histogram_stacks_dropped_rows_only_when_there_are_some(tmp_path):
    with_drops = histogram_png(*histogram_tables(True), "x", tmp_path / "a.png")
    without = histogram_png(*histogram_tables(False), "x", tmp_path / "b.png")
    assert pixels_of(with_drops, DROPPED_STACKED_COLOR).sum() > 500
    assert pixels_of(without, DROPPED_STACKED_COLOR).sum() < 150  # the legend's swatch at most: none here
    assert pixels_of(without, KEPT_COLOR).sum() > 5000


def test_funnel_bar_splits_kept_and_dropped_rows_in_proportion(tmp_path):
    funnel = pa.table({"stage": ["read", "filter"], "rows_in": [1800, 1800], "kept": [1800, 1480]})
    drops = pa.table({"stage": ["filter", "filter"], "reason": ["lang_kept", "too_short"], "rows": [200, 120]})
    path = funnel_png(funnel, drops, tmp_path / "funnel.png")
    green, first, second = (pixels_of(path, c) for c in (KEPT_COLOR, REASON_COLORS[0], REASON_COLORS[1]))
    rows = np.nonzero(first.any(axis=1))[0]
    middle = rows[len(rows) // 2]  # a pixel row through the filter stage's bar
    kept_px, lang_px, short_px = green[middle].sum(), first[middle].sum(), second[middle].sum()
    assert abs(kept_px / (kept_px + lang_px + short_px) - 1480 / 1800) < 0.01
    assert abs(lang_px / short_px - 200 / 120) < 0.1
