"""core.plots: pure figure builders (train vs validation, onset marks, downsampling, data charts)."""

from __future__ import annotations

from core.plots.data import pixel_histogram_chart, size_chart, split_counts_chart
from core.plots.style import downsample
from core.plots.training import learning_rate_chart, training_curves
from core.training.verdicts import Onset

HISTORY = {
    "loss": [1.0, 0.6, 0.3, 0.1],
    "val_loss": [1.0, 0.7, 0.9, 1.2],
    "accuracy": [0.4, 0.7, 0.9, 1.0],
    "val_accuracy": [0.4, 0.6, 0.55, 0.5],
    "lr": [1e-3, 1e-3, 5e-4, 5e-5],
}


def traces(fig, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_downsample_keeps_short_series_and_bins_long_ones() -> None:
    assert downsample([1, 2, 3], [3.0, 2.0, 1.0], max_points=10) == ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    xs, ys = downsample(list(range(1000)), [float(v) for v in range(1000)], max_points=100)
    assert len(xs) == len(ys) == 100
    assert xs[-1] == 999.0  # the line ends at the newest batch
    assert ys[0] == sum(range(10)) / 10  # each point is its bin's mean
    assert downsample([1, 2], [float("nan"), None]) == ([], [])


def test_training_curves_have_train_and_validation_for_loss_and_accuracy() -> None:
    fig = training_curves(HISTORY)
    assert len(traces(fig, "training")) == 2 and len(traces(fig, "validation")) == 2
    loss = traces(fig, "validation")[0]
    assert list(loss.x) == [1, 2, 3, 4] and list(loss.y) == HISTORY["val_loss"]
    assert [t.showlegend for t in traces(fig, "training")] == [True, False]  # one legend entry per series
    assert fig.layout.uirevision == "keep"  # zoom survives the once-a-second redraw


def test_batch_points_are_downsampled() -> None:
    batches = [{"x": i / 100, "loss": 1.0, "accuracy": 0.5} for i in range(1, 2001)]
    fig = training_curves(HISTORY, batches)
    per_batch = traces(fig, "training (per batch)")
    assert len(per_batch) == 2 and all(len(t.x) <= 300 for t in per_batch)


def test_onset_is_marked_with_a_line_and_a_region() -> None:
    onset = Onset(best_epoch=2, best_val_loss=0.7, region=(2, 4), overfitting=True)
    fig = training_curves(HISTORY, onset=onset)
    shapes = fig.layout.shapes
    assert any(s.type == "rect" and s.x0 == 2 and s.x1 == 4 for s in shapes)
    assert any(s.type == "line" and s.x0 == 2 for s in shapes)
    texts = [a.text.strip() for a in fig.layout.annotations]
    assert "overfitting" in texts and "lowest validation loss (epoch 2)" in texts


def test_teacher_mode_makes_fonts_and_lines_bigger() -> None:
    normal, big = training_curves(HISTORY), training_curves(HISTORY, teacher_mode=True)
    assert big.layout.font.size > normal.layout.font.size
    assert traces(big, "training")[0].line.width > traces(normal, "training")[0].line.width


def test_learning_rate_chart_switches_to_log_scale_for_big_changes() -> None:
    assert learning_rate_chart(HISTORY).layout.yaxis.type == "log"
    assert learning_rate_chart({"lr": [1e-3, 1e-3]}).layout.yaxis.type != "log"


def test_data_charts() -> None:
    counts = {"train": {"cat": 7, "dog": 3}, "val": {"cat": 2, "dog": 1}, "test": {"cat": 2, "dog": 0}}
    fig = split_counts_chart(counts)
    assert [t.name for t in fig.data] == ["training", "validation", "test"]
    assert list(fig.data[0].x) == ["cat", "dog"] and list(fig.data[2].y) == [2, 0]
    sizes = size_chart([{"size": "64x48", "count": 10}, {"size": "32x32", "count": 2}, {"size": "?", "count": 1}])
    assert list(sizes.data[0].x) == [64, 32] and list(sizes.data[0].y) == [48, 32]
    hist = pixel_histogram_chart({"channel_names": ["gray"],
                                  "histogram": {"bin_edges": [0, 128, 256], "counts": [[3, 1]]}})
    assert list(hist.data[0].x) == [64, 192] and list(hist.data[0].y) == [0.75, 0.25]
