"""The Train page: the form with a live layer table, Start/Stop, reattaching, and the live panel's renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import TIMEOUT, make_app, texts, wait_until

TRAIN = "pages/train.py"
FAST = {"data": "builtin:digits"}


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def built_params(spec, size: int = 32, channels: int = 1, classes: int = 10) -> int:
    from core.models.registry import build_model, count_params

    return count_params(build_model(spec, (size, size, channels), classes))["total"]


def test_form_shows_the_live_parameter_count_of_the_chosen_preset(app_home: Path) -> None:
    from core.config import ModelSpec

    at = make_app(page=TRAIN, query=FAST)
    at.run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert "Start training" in labels and "1 · Run the overfitting demo" in labels
    assert metric(at, "Parameters") == f"{built_params(ModelSpec(name='tiny')):,}"
    at.selectbox(key="train_preset").set_value("overfit_demo").run()
    assert metric(at, "Parameters") == f"{built_params(ModelSpec(name='overfit_demo')):,}"


def test_custom_builder_recomputes_parameters_and_explains_bad_input(app_home: Path) -> None:
    from core.config import ConvBlock, CustomArchitecture, ModelSpec

    at = make_app(page=TRAIN, query=FAST)
    at.run()
    at.segmented_control(key="train_arch_kind").set_value("Build your own").run()
    at.text_input(key="train_dense_units").set_value("16").run()
    assert not at.exception
    spec = ModelSpec(name="custom", custom=CustomArchitecture(
        blocks=(ConvBlock(16), ConvBlock(32)), head="flatten", dense_units=(16,)))
    assert metric(at, "Parameters") == f"{built_params(spec):,}"
    at.text_input(key="train_dense_units").set_value("lots").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Dense units must be whole numbers separated by commas, e.g. 256, 64."]


def _start(at, epochs: int) -> str:
    at.number_input(key="train_epochs_Preset").set_value(epochs)
    at.select_slider(key="train_size_Preset").set_value(16)
    at.button(key="train_start").click().run()
    assert not at.exception
    run = at.query_params.get("run")
    return run[0] if isinstance(run, list) else run


@pytest.mark.slow
def test_start_creates_a_run_and_stop_stops_it(app_home: Path) -> None:
    from ui.engine import get_manager

    at = make_app(page=TRAIN, query=FAST)
    at.run()
    run_id = _start(at, epochs=200)
    snap = get_manager().snapshot(run_id)
    assert snap is not None and snap.config.epochs == 200 and snap.config.data == "builtin:digits"
    assert snap.status in ("queued", "running")
    at.button(key=f"train_stop_{run_id}").click().run()
    assert not at.exception
    assert get_manager().wait(run_id, timeout=TIMEOUT).status == "stopped"
    at.run()
    assert "stopped by you" in texts(at)
    assert not [b for b in at.button if b.key == f"train_stop_{run_id}"]


@pytest.mark.slow
def test_finished_run_shows_its_test_metrics_after_a_refresh(app_home: Path) -> None:
    from ui.engine import get_manager

    at = make_app(page=TRAIN, query=FAST)
    at.run()
    run_id = _start(at, epochs=1)
    snap = get_manager().wait(run_id, timeout=TIMEOUT)
    assert snap.status == "finished", snap.message
    # A new session (a refresh, another computer) with the run in the URL reattaches to it.
    fresh = make_app(page=TRAIN, query={**FAST, "run": run_id})
    fresh.run()
    assert not fresh.exception
    assert metric(fresh, "Test accuracy") == f"{snap.result['accuracy']:.1%}"
    assert "Macro F1" in [m.label for m in fresh.metric]
    links = [link.proto for link in fresh.main.get("page_link")]
    assert any(link.page == "evaluate" and f"run={run_id}" in link.query_string for link in links)


@pytest.mark.slow
def test_second_tab_without_a_run_attaches_to_the_active_one(app_home: Path) -> None:
    from ui.engine import get_manager

    first = make_app(page=TRAIN, query=FAST)
    first.run()
    run_id = _start(first, epochs=200)
    second = make_app(page=TRAIN, query=FAST)
    second.run()
    assert not second.exception
    assert second.query_params.get("run") in (run_id, [run_id])
    assert any(b.key == f"train_stop_{run_id}" for b in second.button)
    get_manager().stop(run_id)
    assert wait_until(lambda: not get_manager().snapshot(run_id).active, timeout=TIMEOUT)


# ---------------------------------------------------------------- the fragment's renders, canned snapshots


def _render_canned(status: str, root: str, collapsed: bool = False) -> None:
    """Runs inside AppTest: render one canned RunSnapshot with the live panel's render function.

    ``collapsed``: a run stuck at guessing level (10 even classes), from the recorded signs-collapsed run.
    """
    import json
    from pathlib import Path
    import sys

    sys.path.insert(0, root)
    from core.config import TrainConfig
    from core.training.snapshot import RunSnapshot
    from ui.train_panel import render_run

    history = {
        "loss": [1.0, 0.6, 0.3, 0.1, 0.05, 0.03],
        "val_loss": [1.0, 0.7, 0.6, 0.8, 1.1, 1.3],
        "accuracy": [0.4, 0.7, 0.85, 0.95, 0.99, 0.995],
        "val_accuracy": [0.4, 0.6, 0.7, 0.68, 0.66, 0.64],
        "lr": [1e-3] * 6,
    }
    split = None
    if collapsed:
        recorded = json.loads((Path(root) / "tests/fixtures/histories/signs-collapsed.json").read_text())
        history = {k: v[:6] for k, v in recorded["history"].items()}
        split = {"sizes": recorded["sizes"], "train_class_counts": recorded["train_class_counts"]}
    batches = [{"x": i / 10, "loss": 1.0 - i / 60, "accuracy": i / 60} for i in range(1, 56)]
    result = {"accuracy": 0.6875, "macro_f1": 0.61, "timing": {"fit_seconds": 12.0}}
    snap = RunSnapshot(
        run_id="canned-run", name="canned", status=status,
        message="The loss became NaN in epoch 6." if status == "failed" else None,
        config=TrainConfig(data="builtin:digits"), epoch=6, epochs_total=10, batch=7, batches_per_epoch=20,
        images_per_second=512.0, eta_seconds=95.0, history=history, batch_history=batches,
        result=result if status == "finished" else None, created=1.0, started=1.0, finished=None, split=split,
    )
    render_run(snap, teacher=False, key="canned")


def canned(status: str, collapsed: bool = False):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import ROOT

    at = AppTest.from_function(_render_canned, args=(status, str(ROOT), collapsed), default_timeout=TIMEOUT)
    at.run()
    return at


def test_render_of_a_running_snapshot_shows_progress_curves_onset_and_stop(app_home: Path) -> None:
    at = canned("running")
    assert not at.exception
    assert [b.label for b in at.button] == ["Stop"]
    progress = at.get("progress")[0].proto
    assert abs(progress.value - round(100 * (6 + 7 / 20) / 10)) <= 1 and "epoch 7 of 10 · batch 7 of 20" in progress.text
    assert metric(at, "Images per second") == "512"
    assert metric(at, "Time left") == "1 min 35 s"
    assert metric(at, "Best validation accuracy") == "70.0%"
    assert len(at.get("plotly_chart")) == 2  # the curves and the learning rate
    assert any("From epoch 3 on the model overfits" in w.value for w in at.warning)
    assert not any("not learning" in w.value for w in at.warning)


def test_live_panel_says_a_run_stuck_at_guessing_level_is_not_learning_with_what_to_try(app_home: Path) -> None:
    at = canned("running", collapsed=True)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("After 6 epochs the model is not learning" in w and "learning rate 10 times lower" in w
               and "transfer model" in w for w in warnings), warnings
    assert not any("overfit" in w for w in warnings)


def test_render_of_finished_and_failed_snapshots(app_home: Path) -> None:
    done = canned("finished")
    assert not done.exception
    assert metric(done, "Test accuracy") == "68.8%"
    assert not done.button  # nothing to stop
    failed = canned("failed")
    assert not failed.exception
    assert [e.value for e in failed.error] == ["The loss became NaN in epoch 6."]


def test_demo_pair_is_shown_side_by_side(app_home: Path) -> None:
    from tests.app.conftest import record_run

    plain = record_run(app_home, "finished", name="demo plain", group="overfit-demo-1")
    regularised = record_run(app_home, "finished", name="demo regularised", group="overfit-demo-1")
    record_run(app_home, "finished", name="unrelated run")
    at = make_app(page=TRAIN, query={**FAST, "run": regularised})
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "The overfitting lesson, side by side" in shown
    assert shown.index("demo plain") < shown.index("demo regularised")  # plain on the left
    assert "unrelated run" not in "\n".join(m.value for m in at.main.markdown)
    assert plain != regularised


# ---------------------------------------------------------------- resume an interrupted run


@pytest.mark.slow
def test_an_interrupted_run_offers_resume_from_its_checkpoint_and_the_button_resumes_it(app_home: Path) -> None:
    from core.store.runs import RunStore
    from core.training.manager import TrainingManager
    from tests.app.conftest import tiny_config
    from tests.run_helpers import stopping_in_epoch
    from ui.engine import get_manager, get_store

    earlier = TrainingManager(RunStore(app_home))  # "the server before the crash", not the app's manager
    with stopping_in_epoch(2):
        run_id = earlier.start(tiny_config(epochs=3))
        assert earlier.wait(run_id, timeout=TIMEOUT).status == "stopped"
    # What a restart after kill -9 leaves (store.mark_interrupted): the run is interrupted after epoch 1.
    RunStore(app_home).set_status(run_id, "interrupted", "The program stopped while this run was training; "
                                                         "the epochs saved so far are kept.")

    at = make_app(page=TRAIN, query={**FAST, "run": run_id})
    at.run()
    assert not at.exception
    labels = {b.key: b.label for b in at.button}
    assert labels[f"train_resume_{run_id}"] == "Resume from epoch 2"
    assert labels[f"train_again_{run_id}"] == "Run again from epoch 1"
    at.button(key=f"train_resume_{run_id}").click().run()
    assert not at.exception and not at.error
    snap = get_manager().wait(run_id, timeout=TIMEOUT)
    assert snap.status == "finished", snap.message
    assert [e["epoch"] for e in get_store().epochs(run_id)] == [1, 2, 3]  # the same run, epochs appended
    at.run()
    assert metric(at, "Test accuracy") == f"{snap.result['accuracy']:.1%}"
    assert not [b for b in at.button if b.key in (f"train_resume_{run_id}", f"train_again_{run_id}")]


def test_a_run_without_a_checkpoint_can_only_run_again(app_home: Path) -> None:
    at = canned("interrupted")
    assert not at.exception
    assert [b.label for b in at.button] == ["Run again from epoch 1"]
    assert "There is no checkpoint to resume from" in texts(at)


def _recommended_text(at) -> str:
    block = next(e for e in at.expander if e.label == "Recommended for this dataset")
    return " ".join(m.value for m in block.markdown)


def test_recommended_block_explains_each_choice_and_fills_the_form(app_home: Path) -> None:
    from core.training.recommend import SCRATCH_EPOCHS, SCRATCH_PATIENCE

    at = make_app(page=TRAIN, query=FAST)
    at.run()
    assert not at.exception
    text = _recommended_text(at)
    for line in ("**Model: tiny (a CNN trained from scratch).**", "**Image size: 16 px.**", "**Early stopping:",
                 "**Augmentation: none.**", f"**Epochs: up to {SCRATCH_EPOCHS}.**"):
        assert line in text
    assert not [s for s in at.success if "uses the recommended settings" in s.value]
    at.button(key="train_use_recommended").click().run()
    assert not at.exception
    assert at.selectbox(key="train_preset").value == "tiny"
    assert at.select_slider(key="train_size_Preset").value == 16
    assert at.number_input(key="train_epochs_Preset").value == SCRATCH_EPOCHS
    assert at.number_input(key="train_patience").value == SCRATCH_PATIENCE
    assert not at.error
    assert [s for s in at.success if "uses the recommended settings" in s.value]


def test_recommended_block_puts_photos_on_transfer_learning(app_home: Path, tmp_path: Path) -> None:
    from core.training.recommend import TRANSFER_SIZE
    from tests.data_factory import make_class_folder

    folder = make_class_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=10, size=64)
    at = make_app(page=TRAIN, query={"data": str(folder)})
    at.run()
    assert not at.exception
    assert "**Model: MobileNetV2 transfer" in _recommended_text(at)
    at.button(key="train_use_recommended").click().run()
    assert not at.exception
    assert at.segmented_control(key="train_arch_kind").value == "Transfer learning"
    assert at.selectbox(key="train_backbone").value == "transfer:mobilenet_v2"
    assert at.select_slider(key="train_size_Transfer learning").value == TRANSFER_SIZE
    assert not at.error
