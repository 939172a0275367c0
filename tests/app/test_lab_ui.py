"""The experiment UI: overfitting lab and grid search on Train, data checks on Data and Train, the repro card."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import TIMEOUT, make_app, texts, tiny_config, train_finished_run, wait_until
from tests.data_factory import make_class_folder

TRAIN = "pages/train.py"


def _store(home: Path):
    from ui.engine import _store_for

    return _store_for(str(home.resolve()))


def _manager(home: Path):
    from ui.engine import _manager_for

    return _manager_for(str(home.resolve()))


def fake_group(home: Path, kind: str, members: list[dict[str, Any]], params: tuple[str, ...] = ()) -> str:
    """An experiment group of stored runs with canned curves and results (no training)."""
    from core.store.files import atomic_write_json
    from core.training.experiments.groups import Manifest, experiments_dir, new_group_id

    store = _store(home)
    group = new_group_id(kind)
    entries = []
    for m in members:
        run_id = store.create_run(tiny_config(name=m["label"], group=group, **m.get("changes", {})), name=m["label"])
        store.set_status(run_id, "running")
        for e, (a, v) in enumerate(zip(m["train"], m["val"]), start=1):
            store.add_epoch(run_id, e, {"loss": 1 - a, "accuracy": a, "val_loss": 1 - v, "val_accuracy": v,
                                        "lr": 1e-3, "seconds": 1.0})
        store.set_result(run_id, {"accuracy": m["test"], "timing": {"fit_seconds": 2.0}})
        store.set_status(run_id, "finished")
        entries.append({"key": m["key"], "label": m["label"], "series": m["series"], "values": m["values"],
                        "run_id": run_id})
    title = "Overfitting lab" if kind == "lab" else "Grid search: learning rate x batch size"
    atomic_write_json(experiments_dir(store.home) / f"{group}.json",
                      Manifest(group, kind, title, time.time(), params, tuple(entries)).to_dict())
    return group


def lab_members() -> list[dict[str, Any]]:
    out = []
    for f, v, n in ((10, 0.6, 36), (25, 0.8, 92), (50, 0.9, 180), (100, 0.95, 360)):
        series = ["learning_curve"] + (["label_noise"] if f == 100 else []) + (["regularisers"] if f == 25 else [])
        out.append({"key": f"data-{f}", "label": f"{f} % of the training data ({n} images)", "series": series,
                    "values": {"train_fraction": f / 100, "label_noise": 0.0, "regularisers": "none", "train_images": n},
                    "train": [0.8, 1.0, 1.0, 1.0], "val": [v - 0.1, v, v, v], "test": v})
    out.append({"key": "noise-30", "label": "30 % of the labels flipped", "series": ["label_noise"],
                "values": {"train_fraction": 1.0, "label_noise": 0.3, "regularisers": "none"},
                "train": [0.7, 0.7, 0.7], "val": [0.9, 0.9, 0.9], "test": 0.88})
    out.append({"key": "reg-augmentation", "label": "25 % data + augmentation", "series": ["regularisers"],
                "values": {"train_fraction": 0.25, "label_noise": 0.0, "regularisers": "augmentation"},
                "train": [0.95, 0.95, 0.95], "val": [0.88, 0.88, 0.88], "test": 0.9})
    return out


def frame_with(at, column: str):
    """The first dataframe showing ``column`` (dataframes without selection have no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def charts(at) -> int:
    return len(at.get("plotly_chart"))


# ---------------------------------------------------------------- the overfitting lab


def test_finished_lab_shows_its_three_lessons_with_numbers(app_home: Path) -> None:
    group = fake_group(app_home, "lab", lab_members())
    at = make_app(page=TRAIN, query={"data": "builtin:digits", "lab": group})
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "With 10 % of the data the model memorises: training accuracy reaches 100% while validation stalls at 60%" in shown
    assert "More data, better validation accuracy: 60% → 80% → 90% → 95%" in shown
    assert "With 30 % of the training labels flipped, training accuracy is 70%" in shown
    assert "Augmentation helps most: validation 88%" in shown
    assert "6 of 6 runs done" in [p.proto.text for p in at.get("progress")][0]
    assert charts(at) >= 5  # learning curve, three overlays, the regulariser bars (plus the form's drawing)
    assert not [b for b in at.button if (b.key or "").startswith("lab_stop_")]  # nothing left to stop


@pytest.mark.slow
def test_lab_button_queues_every_run_as_one_group_and_stop_cancels_them(app_home: Path) -> None:
    from core.training.experiments.groups import list_experiments, wait_group

    at = make_app(page=TRAIN, query={"data": "builtin:digits"})
    at.run()
    assert not at.exception and "Run the overfitting lab" in [b.label for b in at.button]
    at.button(key="lab_start").click().run()
    assert not at.exception
    [manifest] = list_experiments(app_home.resolve(), "lab")
    assert len(manifest.entries) == 11 and all(e["run_id"] for e in manifest.entries)
    assert at.query_params["run"] in (manifest.entries[0]["run_id"], [manifest.entries[0]["run_id"]])  # live panel
    assert at.button(key="lab_start").disabled  # one lab at a time
    at.button(key=f"lab_stop_{manifest.group}").click().run()
    assert not at.exception
    status = wait_group(_manager(app_home), manifest.group, timeout=TIMEOUT)
    assert status.counts == {"stopped": 11}


# ---------------------------------------------------------------- grid search


def test_grid_form_counts_runs_and_refuses_more_than_twelve(app_home: Path) -> None:
    at = make_app(page=TRAIN, query={"data": "builtin:digits", "grid": "none"})
    at.run()
    assert not at.exception
    assert at.button(key="grid_start").label == "Run the grid search (4 runs)"
    at.multiselect(key="grid_values_learning_rate").set_value([1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    at.multiselect(key="grid_values_batch_size").set_value([8, 16, 32]).run()
    assert not at.exception
    assert any("15 combinations; the limit is 12" in e.value for e in at.error)
    assert at.button(key="grid_start").disabled


@pytest.mark.slow
def test_grid_button_queues_one_group_and_stop_stops_the_whole_group(app_home: Path) -> None:
    from core.training.experiments.groups import list_experiments, wait_group

    at = make_app(page=TRAIN, query={"data": "builtin:digits", "grid": "none"})
    at.run()
    at.number_input(key="grid_epochs").set_value(100).run()
    at.button(key="grid_start").click().run()
    assert not at.exception
    [manifest] = list_experiments(app_home.resolve(), "grid")
    assert manifest.params == ("learning_rate", "batch_size") and len(manifest.entries) == 4
    records = [r for r in _store(app_home).list() if r.group == manifest.group]
    assert sorted((r.config.learning_rate, r.config.batch_size) for r in records) == [
        (1e-3, 16), (1e-3, 32), (3e-3, 16), (3e-3, 32)]
    assert all(r.config.epochs == 100 and r.config.data == "builtin:digits" for r in records)
    at.button(key=f"grid_stop_{manifest.group}").click().run()
    assert not at.exception
    assert wait_group(_manager(app_home), manifest.group, timeout=TIMEOUT).counts == {"stopped": 4}


def test_finished_grid_shows_sorted_table_parallel_coordinates_and_the_best_run(app_home: Path) -> None:
    members = []
    for i, (lr, bs, v) in enumerate(((1e-3, 16, 0.7), (1e-3, 32, 0.9), (3e-3, 16, 0.6), (3e-3, 32, 0.8))):
        members.append({"key": f"grid-{i}", "label": f"learning rate {lr:g}, batch size {bs}", "series": ["grid"],
                        "values": {"learning_rate": lr, "batch_size": bs}, "train": [0.9, 1.0], "val": [v, v],
                        "test": v, "changes": {"learning_rate": lr, "batch_size": bs}})
    group = fake_group(app_home, "grid", members, params=("learning_rate", "batch_size"))
    at = make_app(page=TRAIN, query={"data": "builtin:digits", "grid": group})
    at.run()
    assert not at.exception
    assert "Best so far:** learning rate 0.001, batch size 32" in texts(at)
    best = next(m for m in _store(app_home).list() if m.name == "learning rate 0.001, batch size 32")
    links = [p for p in at.get("page_link") if "best run" in p.proto.label]
    assert links and f"run={best.run_id}" in links[0].proto.page + "?" + links[0].proto.query_string
    table = frame_with(at, "validation acc.")
    assert list(table["validation acc."]) == [90.0, 80.0, 70.0, 60.0]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    parcoords = [s for s in specs if s["data"] and s["data"][0]["type"] == "parcoords"]
    assert parcoords and len(parcoords[0]["data"][0]["dimensions"]) == 3


# ---------------------------------------------------------------- data checks


def test_data_page_shows_checks_and_pixel_statistics(app_home: Path) -> None:
    at = make_app(page="pages/data.py", query={"data": "builtin:shapes"})
    at.run()
    assert not at.exception
    assert "Checks before training" in [h.value for h in at.header]
    assert any("Ready to train" in s.value for s in at.success)
    table = frame_with(at, "nearly black (< 8)")
    assert list(table["channel"]) == ["red", "green", "blue"]
    assert "Pixel statistics per channel" in [s.value for s in at.subheader]
    assert "No class stands out by brightness" in texts(at)


@pytest.mark.slow
def test_train_warns_before_start_and_applies_the_fix(app_home: Path, tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "pets", classes=("cat", "dog"), per_class={"cat": 40, "dog": 12}, size=16)
    at = make_app(page=TRAIN, query={"data": str(root)})
    at.run()
    assert not at.exception
    assert any("The classes are imbalanced: 'cat'" in w.value for w in at.warning)
    at.button(key="train_fix_imbalance").click().run()
    assert not at.exception
    assert any("Fix applied: class weights on" in s.value for s in at.success)
    assert not [b for b in at.button if b.key == "train_fix_imbalance"]
    at.number_input(key="train_epochs_Preset").set_value(50)
    at.button(key="train_start").click().run()
    assert not at.exception
    run = at.query_params.get("run")
    run_id = run[0] if isinstance(run, list) else run
    assert _store(app_home).get(run_id).config.class_weights is True
    _manager(app_home).stop(run_id)
    at.button(key="train_unfix_imbalance").click().run()
    assert any("The classes are imbalanced" in w.value for w in at.warning)


# ---------------------------------------------------------------- reproducibility card


@pytest.mark.slow
def test_evaluate_shows_the_repro_card_and_run_again_repeats_the_recipe(app_home: Path) -> None:
    from core.training.repro import same_recipe

    run_id = train_finished_run(app_home, seed=5)
    at = make_app(page="pages/evaluate.py", query={"run": run_id})
    at.run()
    assert not at.exception
    assert any(e.label.startswith("Reproducibility card") for e in at.expander)
    seed = next(m for m in at.metric if m.label == "Seed")
    assert seed.value == "5"
    versions = frame_with(at, "what")
    assert {"Python", "TensorFlow", "Keras", "NumPy", "CPU", "GPU"} <= set(versions["what"])
    assert "Recorded by the run itself" in texts(at)
    at.button(key=f"repro_again_{run_id}").click().run()
    assert not at.exception
    store = _store(app_home)
    again = [r for r in store.list() if r.run_id != run_id]
    assert len(again) == 1 and again[0].name.endswith("(again)")
    assert same_recipe(again[0].config, store.get(run_id).config)
    _manager(app_home).stop(again[0].run_id)
    assert wait_until(lambda: not _manager(app_home).snapshot(again[0].run_id).active, timeout=TIMEOUT)
