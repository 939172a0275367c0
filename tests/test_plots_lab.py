"""Figures for experiments and data checks draw what they are given."""

from __future__ import annotations

import pytest

from core.plots.data import channel_stats_figure, class_brightness_figure
from core.plots.experiments import (
    final_accuracy_figure,
    group_curves_figure,
    learning_curve_figure,
    parallel_coordinates_figure,
)
from core.plots.style import run_color


def test_group_curves_overlay_each_run_in_one_colour_on_both_panels():
    series = [{"label": "10 %", "history": {"accuracy": [0.5, 1.0], "val_accuracy": [0.4, 0.6]}},
              {"label": "100 %", "history": {"accuracy": [0.6, 0.9], "val_accuracy": [0.5, float("nan")]}}]
    fig = group_curves_figure(series)
    assert fig.layout.meta["runs"] == ["10 %", "100 %"]
    assert len(fig.data) == 4
    by_run = {}
    for trace in fig.data:
        by_run.setdefault(trace.name, set()).add(trace.line.color)
    assert all(len(colors) == 1 for colors in by_run.values()) and len({c for s in by_run.values() for c in s}) == 2
    assert list(fig.data[3].y) == [0.5, None]  # a NaN epoch is a gap, not a zero
    assert fig.layout.yaxis.tickformat == ".0%"
    big = group_curves_figure(series, teacher_mode=True)
    assert big.data[0].line.width > fig.data[0].line.width and big.layout.font.size > fig.layout.font.size


def test_final_accuracy_bars_show_three_numbers_per_run():
    rows = [{"run": "plain", "train_accuracy": 1.0, "val_accuracy": 0.8, "test_accuracy": 0.82},
            {"run": "dropout", "train_accuracy": 0.9, "val_accuracy": 0.85, "test_accuracy": None}]
    fig = final_accuracy_figure(rows)
    assert [t.name for t in fig.data] == ["training", "validation", "test"]
    assert list(fig.data[1].x) == [0.8, 0.85] and list(fig.data[2].text) == ["82%", ""]
    assert fig.layout.meta["runs"] == ["plain", "dropout"]


def test_learning_curve_uses_images_on_x_and_shades_the_gap():
    points = [{"fraction": 1.0, "images": 360, "train_accuracy": 1.0, "val_accuracy": 0.95, "test_accuracy": 0.96},
              {"fraction": 0.1, "images": 36, "train_accuracy": 1.0, "val_accuracy": 0.7, "test_accuracy": 0.72}]
    fig = learning_curve_figure(points)
    assert fig.layout.meta["x"] == [36, 360] and fig.layout.meta["val"] == [0.7, 0.95]
    assert fig.layout.xaxis.title.text == "training images"
    assert any(t.fill == "tonexty" for t in fig.data)
    assert {"training", "validation", "test"} <= {t.name for t in fig.data}


def test_parallel_coordinates_maps_log_and_category_axes():
    rows = [{"learning_rate": 1e-3, "optimizer": "adam", "val_accuracy": 0.9},
            {"learning_rate": 1e-2, "optimizer": "sgd", "val_accuracy": 0.6},
            {"learning_rate": 1e-2, "optimizer": "adam", "val_accuracy": None}]  # still training: left out
    fig = parallel_coordinates_figure(rows, ["learning_rate", "optimizer"],
                                                labels={"learning_rate": "learning rate"},
                                                scales={"learning_rate": "log", "optimizer": "category"})
    par = fig.data[0]
    assert par.type == "parcoords" and fig.layout.meta["runs"] == 2
    lr, opt, score = par.dimensions
    assert lr.label == "learning rate" and list(lr.values) == pytest.approx([-3, -2])
    assert list(lr.ticktext) == ["0.001", "0.01"]
    assert list(opt.values) == [0, 1] and list(opt.ticktext) == ["adam", "sgd"]
    assert score.label == "validation accuracy" and list(score.values) == [0.9, 0.6]
    assert list(par.line.color) == [0.9, 0.6]
    empty = parallel_coordinates_figure([], ["learning_rate"])
    assert empty.layout.meta["runs"] == 0


def test_channel_and_class_statistics_figures():
    stats = {"channel_names": ["red", "green", "blue"], "mean": [120.0, 100.0, 80.0], "std": [30.0, 20.0, 10.0],
             "histogram": {"bin_edges": [i * 8 for i in range(33)], "counts": [[1] * 32, [2] * 32, [0] * 31 + [5]]}}
    fig = channel_stats_figure(stats)
    assert fig.layout.meta["channels"] == ["red", "green", "blue"] and len(fig.data) == 3
    assert sum(fig.data[0].y) == pytest.approx(1.0) and fig.data[2].y[-1] == pytest.approx(1.0)
    assert "mean 120" in fig.layout.annotations[0].text
    per_class = {"channel_names": ["gray"], "classes": {"a": {"mean": [30.0], "std": [3.0]},
                                                        "b": {"mean": [200.0], "std": [9.0]}}}
    bars = class_brightness_figure(per_class)
    assert list(bars.data[0].y) == [30.0, 200.0] and list(bars.data[0].error_y.array) == [3.0, 9.0]
    assert bars.layout.meta["classes"] == ["a", "b"]


def test_run_colours_are_distinct_for_a_full_grid():
    colors = [run_color(i) for i in range(12)]
    assert len(set(colors)) == 12
