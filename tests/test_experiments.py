"""The experiment engine: lab and grid definitions, group queuing, status, stop, results and the lab's lessons."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.config import AugmentConfig, ModelSpec, SplitConfig, TrainConfig, apply_changes
from core.errors import UserError
from core.training.experiments.grid import MAX_GRID_COMBINATIONS, grid_experiment
from core.training.experiments.groups import (
    Experiment,
    ExperimentRun,
    GroupStatus,
    MemberRun,
    best_run,
    end_value,
    group_status,
    list_experiments,
    load_manifest,
    queue_experiment,
    results_table,
    stop_group,
    wait_group,
)
from core.training.experiments.lab import (
    LabSettings,
    lab_experiment,
    lab_network,
    lab_train_sizes,
    label_noise_sentence,
    learning_curve_ordered,
    learning_curve_points,
    learning_curve_sentence,
    regulariser_sentence,
)

TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=12, seed=0), model=ModelSpec(name="tiny"),
                   image_size=8, batch_size=16, epochs=1, use_feature_cache=False)


# ---------------------------------------------------------------- configs from changes


def test_apply_changes_sets_nested_paths_and_augmentation():
    base = TINY.replace(model=ModelSpec(name="custom", custom=lab_network()))
    out = apply_changes(base, {"split.label_noise": 0.3, "model.custom.dropout": 0.5, "class_weights": True,
                               "augment": "light"})
    assert out.split.label_noise == 0.3 and out.split.seed == base.split.seed
    assert out.model.custom.dropout == 0.5 and out.model.custom.blocks == base.model.custom.blocks
    assert out.class_weights is True and out.augment == AugmentConfig.preset("light")
    assert apply_changes(base, {"augment": {"rotation": 0.05}}).augment == AugmentConfig(rotation=0.05)
    assert base.split.label_noise == 0.0  # frozen: the original is untouched


def test_apply_changes_refuses_unknown_or_impossible_paths():
    with pytest.raises(UserError):
        apply_changes(TINY, {"split.nonsense": 1})
    with pytest.raises(UserError):
        apply_changes(TINY, {"model.custom.dropout": 0.2})  # a preset has no custom architecture
    with pytest.raises(UserError):
        apply_changes(TINY, {"learning_rate": -1.0})  # the config's own validation


# ---------------------------------------------------------------- the lab


def test_lab_is_one_split_and_seed_with_the_three_series():
    settings = LabSettings()
    sizes = lab_train_sizes(settings)
    assert sizes[0.1] < sizes[0.25] < sizes[0.5] < sizes[1.0]
    exp = lab_experiment(settings, sizes)
    assert exp.kind == "lab" and len(exp.runs) == 4 + 2 + 5
    base_split = {k: v for k, v in settings.split.to_dict().items() if k not in ("train_fraction", "label_noise")}
    for run in exp.runs:
        cfg = run.config
        assert {k: v for k, v in cfg.split.to_dict().items() if k not in ("train_fraction", "label_noise")} == base_split
        assert cfg.seed == settings.seed and cfg.data == settings.source
        # about the same number of weight updates for every training-set size, within the epoch bounds
        assert settings.min_epochs <= cfg.epochs <= settings.max_epochs
    by_key = {r.key: r for r in exp.runs}
    curve = [r for r in exp.runs if "learning_curve" in r.series]
    assert [r.config.split.train_fraction for r in curve] == [0.1, 0.25, 0.5, 1.0]
    assert curve[0].config.epochs > curve[-1].config.epochs  # small sets get more epochs
    assert [r.config.split.label_noise for r in exp.runs if "label_noise" in r.series] == [0.0, 0.1, 0.3]
    plain = by_key["data-25"].config
    assert "regularisers" in by_key["data-25"].series
    assert not plain.augment.enabled and plain.model.custom.dropout == 0 and plain.model.custom.l2 == 0
    assert by_key["reg-augmentation"].config.augment.enabled
    assert by_key["reg-dropout"].config.model.custom.dropout > 0
    assert by_key["reg-l2"].config.model.custom.l2 > 0
    assert all(b.batch_norm for b in by_key["reg-batch_norm"].config.model.custom.blocks)
    assert by_key["reg-early_stopping"].config.early_stopping_patience > 0
    # each regulariser run differs from the plain run in its own switch only
    for key in ("reg-dropout", "reg-l2", "reg-batch_norm"):
        other = by_key[key].config
        assert other.augment == plain.augment and other.early_stopping_patience == plain.early_stopping_patience
        assert other.split == plain.split and other.epochs == plain.epochs


# ---------------------------------------------------------------- grid definitions


def test_grid_makes_every_combination_with_labels():
    exp = grid_experiment(TINY, {"learning_rate": [1e-3, 3e-3], "batch_size": [8, 16]})
    assert exp.kind == "grid" and exp.params == ("learning_rate", "batch_size")
    combos = {(r.config.learning_rate, r.config.batch_size) for r in exp.runs}
    assert combos == {(1e-3, 8), (1e-3, 16), (3e-3, 8), (3e-3, 16)}
    assert all(r.config.data == TINY.data and r.config.epochs == TINY.epochs for r in exp.runs)
    assert exp.runs[0].label == "learning rate 0.001, batch size 8"


def test_grid_limits_and_plain_errors():
    with pytest.raises(UserError, match="13 combinations"):
        grid_experiment(TINY, {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-5, 1e-5, 2e-3, 5e-3,
                                                 7e-3, 9e-3]})
    assert len(grid_experiment(TINY, {"epochs": [1, 2, 3], "batch_size": [8, 16, 32, 64]}).runs) == MAX_GRID_COMBINATIONS
    with pytest.raises(UserError, match="at most 3"):
        grid_experiment(TINY, {"learning_rate": [1e-3], "batch_size": [8], "epochs": [1], "optimizer": ["adam"]})
    with pytest.raises(UserError, match="fixed architecture"):
        grid_experiment(TINY, {"dropout": [0.0, 0.3]})
    with pytest.raises(UserError):
        grid_experiment(TINY, {})
    with pytest.raises(UserError):
        grid_experiment(TINY, {"learning_rate": []})
    custom = TINY.replace(model=ModelSpec(name="custom", custom=lab_network()))
    assert [r.config.model.custom.dropout for r in grid_experiment(custom, {"dropout": [0.0, 0.3]}).runs] == [0.0, 0.3]


# ---------------------------------------------------------------- queuing, status, stop (real manager)


@pytest.fixture
def manager(home: Path):
    from core.store.runs import RunStore
    from core.training.manager import TrainingManager

    m = TrainingManager(RunStore(home))
    yield m
    m.shutdown(timeout=60)


@pytest.mark.slow
def test_grid_2x2_on_digits_with_tiny_completes_as_one_group_with_a_parallel_coordinates_chart(manager):
    from core.plots.experiments import parallel_coordinates_figure

    exp = grid_experiment(TINY, {"learning_rate": [1e-3, 3e-3], "batch_size": [8, 16]})
    group = queue_experiment(manager, exp)
    status = wait_group(manager, group, timeout=240)
    assert status.total == 4 and status.counts == {"finished": 4}
    records = [r for r in manager.store.list() if r.group == group]
    assert len(records) == 4  # ordinary runs in the store, one group
    rows = results_table(status)
    vals = [r["val_accuracy"] for r in rows]
    assert all(v is not None for v in vals) and vals == sorted(vals, reverse=True)
    assert best_run(status) == rows[0]["run_id"]
    fig = parallel_coordinates_figure(rows, status.params)
    assert fig.data[0].type == "parcoords" and fig.layout.meta["runs"] == 4
    assert [d.label for d in fig.data[0].dimensions] == ["learning_rate", "batch_size", "validation accuracy"]
    assert load_manifest(manager.store.home, group).kind == "grid"
    assert [m.group for m in list_experiments(manager.store.home)] == [group]


@pytest.mark.slow
def test_stop_group_cancels_queued_runs_and_stops_the_running_one(manager):
    slow = TINY.replace(epochs=200, split=SplitConfig(limit_per_class=40, seed=0))
    exp = grid_experiment(slow, {"learning_rate": [1e-3, 2e-3, 3e-3]})
    group = queue_experiment(manager, exp)
    first = load_manifest(manager.store.home, group).entries[0]["run_id"]
    running = threading.Event()
    for _ in range(600):  # until the first run has started its epochs
        snap = manager.snapshot(first)
        if snap.status == "running" and snap.epoch >= 1:
            running.set()
            break
        threading.Event().wait(0.1)
    assert running.is_set()
    assert stop_group(manager, group) == 3
    status = wait_group(manager, group, timeout=120)
    assert status.counts == {"stopped": 3} and not status.active
    messages = [m.snapshot.message for m in status.members]
    assert messages[1] == messages[2] == "Stopped before it started."
    assert status.members[0].snapshot.epoch < 200


# ---------------------------------------------------------------- results and lessons (canned runs)


def _member(key, series, values, train, val, test=0.5, status="finished", label=None):
    history = {"accuracy": train, "val_accuracy": val, "loss": [1.0] * len(train), "val_loss": [1.0] * len(val)}
    snap = SimpleNamespace(status=status, history=history, result={"accuracy": test, "timing": {"fit_seconds": 3.0}},
                           epoch=len(train), epochs_total=len(train), batch=0, batches_per_epoch=5,
                           started=100.0, finished=110.0, message=None)
    return MemberRun(key, label or key, tuple(series), values, f"run-{key}", snap)


def _lab_status(order_ok: bool = True) -> GroupStatus:
    vals = [0.55, 0.8, 0.9, 0.95] if order_ok else [0.55, 0.9, 0.8, 0.95]
    members = [
        _member(f"data-{f}", ["learning_curve"] + (["label_noise"] if f == 100 else []) + (["regularisers"] if f == 25 else []),
                {"train_fraction": f / 100, "label_noise": 0.0, "regularisers": "none", "train_images": f * 4},
                [0.9, 1.0, 1.0], [v - 0.02, v, v], test=v)
        for f, v in zip((10, 25, 50, 100), vals)
    ]
    members.append(_member("noise-30", ["label_noise"], {"train_fraction": 1.0, "label_noise": 0.3},
                           [0.6, 0.7, 0.72], [0.85, 0.88, 0.9]))
    members.append(_member("reg-augmentation", ["regularisers"], {"train_fraction": 0.25, "regularisers": "augmentation"},
                           [0.8, 0.9, 0.93], [0.85, 0.9, 0.92]))
    members.append(_member("reg-early_stopping", ["regularisers"],
                           {"train_fraction": 0.25, "regularisers": "early_stopping"}, [0.9, 1.0], [0.78, 0.8]))
    return GroupStatus("lab-x", "lab", "Overfitting lab", (), tuple(members))


def test_learning_curve_points_order_and_sentence_come_from_the_numbers():
    status = _lab_status()
    points = learning_curve_points(status)
    assert [p["fraction"] for p in points] == [0.1, 0.25, 0.5, 1.0]
    assert [p["images"] for p in points] == [40, 100, 200, 400]
    assert points[0]["val_accuracy"] == pytest.approx((0.53 + 0.55 + 0.55) / 3)
    assert learning_curve_ordered(points)
    sentence = learning_curve_sentence(points)
    assert "With 10 % of the data the model memorises" in sentence and "training accuracy reaches 97%" in sentence
    assert "stalls at 54%" in sentence and "More data, better validation accuracy" in sentence
    unordered = learning_curve_points(_lab_status(order_ok=False))
    assert not learning_curve_ordered(unordered)
    assert "did not rise at every step" in learning_curve_sentence(unordered)


def test_noise_and_regulariser_sentences_name_the_measured_numbers():
    status = _lab_status()
    noise = label_noise_sentence(status)
    assert "With 30 % of the training labels flipped, training accuracy is 67%" in noise
    assert "Training accuracy suffers most" in noise and "validation still loses 7 points" in noise
    reg = regulariser_sentence(status)
    assert "Augmentation helps most: validation 89%" in reg
    assert "Early stopping ended after 2 epochs" in reg


def test_results_table_sorts_by_validation_with_unfinished_last():
    members = (
        _member("a", ["grid"], {"learning_rate": 1e-3}, [0.5], [0.6]),
        _member("b", ["grid"], {"learning_rate": 3e-3}, [0.5], [0.9]),
        MemberRun("c", "c", ("grid",), {"learning_rate": 1e-2}, "run-c",
                  SimpleNamespace(status="queued", history={}, result=None, epoch=0, epochs_total=3, batch=0,
                                  batches_per_epoch=0, started=None, finished=None, message=None)),
    )
    status = GroupStatus("grid-x", "grid", "Grid", ("learning_rate",), members)
    rows = results_table(status)
    assert [r["key"] for r in rows] == ["b", "a", "c"] and rows[0]["learning_rate"] == 3e-3
    assert best_run(status) == "run-b"
    assert status.active and status.done == 2 and 0 < status.progress < 1


def test_end_value_ignores_gaps_and_averages_the_last_epochs():
    assert end_value([0.1, float("nan"), 0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert end_value([]) is None and end_value([float("nan")]) is None


def test_group_status_of_an_unknown_group_is_none(manager):
    assert group_status(manager, "lab-none") is None
    with pytest.raises(UserError):
        stop_group(manager, "lab-none")


def test_experiment_refuses_duplicate_keys():
    run = ExperimentRun("k", "k", ("grid",), {}, TINY)
    with pytest.raises(ValueError):
        Experiment("grid", "x", (run, run))
