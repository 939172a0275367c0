"""Evaluation figures: the clickable confusion matrix, selection parsing, cell members, top-k, comparisons."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from core.explain.confusion import cell_label, cell_members, cell_options, confusion_rates
from core.plots.evaluation import (
    comparison_bars_figure,
    confidence_figure,
    confusion_matrix_figure,
    overlay_curves_figure,
    per_class_figure,
    selected_cell,
    top_k_figure,
)

NAMES = ["0", "1", "2"]  # digit-like names: plotly would read them as numbers on a category axis
CM = np.array([[5, 2, 0], [1, 6, 0], [0, 3, 4]])


def _cells_trace(fig: go.Figure) -> go.Scatter:
    return next(t for t in fig.data if isinstance(t, go.Scatter))


def test_confusion_matrix_has_heatmap_and_one_clickable_point_per_cell() -> None:
    fig = confusion_matrix_figure(CM, NAMES)
    heat = next(t for t in fig.data if isinstance(t, go.Heatmap))
    assert np.array_equal(np.asarray(heat.z), CM)
    cells = _cells_trace(fig)
    assert len(cells.x) == 9
    # Point order is row-major over (true, predicted): customdata carries both and the count.
    for (t, p), custom, x, y in zip(np.ndindex(3, 3), cells.customdata, cells.x, cells.y):
        assert (custom[0], custom[1], custom[2]) == (t, p, CM[t, p])
        assert (x, y) == (p, t)
    assert fig.layout.clickmode == "event+select"
    assert list(fig.layout.xaxis.ticktext) == NAMES
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # first class on top


def test_hover_carries_counts_and_both_rates() -> None:
    fig = confusion_matrix_figure(CM, NAMES)
    cells = _cells_trace(fig)
    t, p = 2, 1
    custom = cells.customdata[t * 3 + p]
    assert custom[3] == pytest.approx(3 / 7)  # share of true class 2
    assert custom[4] == pytest.approx(3 / 11)  # share of everything predicted 1
    assert "customdata[2]" in cells.hovertemplate and "customdata[3]" in cells.hovertemplate


def test_normalised_matrix_shows_row_shares() -> None:
    fig = confusion_matrix_figure(CM, NAMES, normalize=True)
    z = np.asarray(next(t for t in fig.data if isinstance(t, go.Heatmap)).z, dtype=float)
    assert np.allclose(z.sum(axis=1), 1.0)
    assert z[0, 1] == pytest.approx(2 / 7)


def test_selected_cell_is_framed_and_figure_serialises() -> None:
    fig = confusion_matrix_figure(CM, NAMES, selected=(2, 1), teacher_mode=True)
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (0.5, 1.5, 1.5, 2.5)
    json.loads(fig.to_json())


def test_empty_rows_do_not_divide_by_zero() -> None:
    rows, cols = confusion_rates(np.array([[0, 0], [1, 3]]))
    assert np.all(np.isfinite(rows)) and rows[0].sum() == 0 and rows[1, 1] == pytest.approx(0.75)
    assert cols[1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "selection, expected",
    [
        ({"points": [{"curve_number": 1, "x": 1, "y": 2, "customdata": [2, 1, 3, 0.4, 0.3, "2", "1"]}]}, (2, 1)),
        ({"points": [{"x": 0.9, "y": 2.2}]}, (2, 1)),  # no customdata: nearest cell
        ({"selection": {"points": [{"x": 0, "y": 0, "customdata": [0, 0]}]}}, (0, 0)),  # whole PlotlyState
        ({"points": [{"customdata": [1, 1]}, {"customdata": [0, 2]}]}, (0, 2)),  # box: last one wins
        ({"points": []}, None),
        (None, None),
        ({"points": [{"z": 3}]}, None),  # a heatmap point without coordinates
    ],
)
def test_selected_cell_reads_streamlit_selection(selection, expected) -> None:
    assert selected_cell(selection) == expected


def test_cell_members_returns_the_images_of_the_cell_most_surprising_first() -> None:
    y = np.array([0, 0, 1, 1, 1, 2])
    probs = np.array([
        [0.9, 0.1, 0.0],  # 0 -> 0
        [0.4, 0.6, 0.0],  # 0 -> 1
        [0.2, 0.7, 0.1],  # 1 -> 1
        [0.8, 0.1, 0.1],  # 1 -> 0, more surprising
        [0.6, 0.3, 0.1],  # 1 -> 0
        [0.0, 0.0, 1.0],  # 2 -> 2
    ])
    assert cell_members(y, probs, 1, 0).tolist() == [3, 4]
    assert cell_members(y, probs, 0, 1).tolist() == [1]
    assert cell_members(y, probs, 2, 0).tolist() == []


def test_cell_options_list_mistakes_first_then_the_diagonal() -> None:
    options = cell_options(CM, NAMES)
    assert options[0] == (2, 1)  # the largest mistake
    assert set(options) == {(t, p) for t, p in zip(*np.nonzero(CM))}
    assert all(t != p for t, p in options[:3]) and all(t == p for t, p in options[3:])
    assert cell_label((2, 1), NAMES, 3) == "true 2 → predicted 1 (3 images)"


def test_top_k_bars_most_likely_on_top_with_threshold_line() -> None:
    fig = top_k_figure([("cat", 0.7), ("dog", 0.2), ("fox", 0.1)], threshold=0.8)
    bar = fig.data[0]
    assert list(bar.y) == ["fox", "dog", "cat"]  # plotly draws the last category on top
    assert any("not sure" in (a.text or "") for a in fig.layout.annotations)


def test_per_class_confidence_and_comparison_figures_build() -> None:
    per_class = [{"label": "0", "precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}]
    assert len(per_class_figure(per_class).data) == 3
    conf = confidence_figure(np.array([0.9, 0.4, 0.8]), np.array([True, False, True]))
    assert [t.name for t in conf.data] == ["right (2)", "wrong (1)"]
    histories = [("a", {"accuracy": [0.5, 0.7], "val_accuracy": [0.4, 0.6]}), ("b", {"accuracy": [0.6]})]
    curves = overlay_curves_figure(histories, "accuracy", teacher_mode=True)
    assert [t.name for t in curves.data] == ["a · training", "a · validation", "b · training"]
    assert curves.data[0].line.width > overlay_curves_figure(histories).data[0].line.width
    bars = comparison_bars_figure([{"name": "a", "accuracy": 0.8, "macro_f1": None}])
    assert list(bars.data[0].y) == [0.8]
