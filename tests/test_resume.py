"""Resume: a stopped or interrupted run continues from its last checkpoint under the same id, or refuses with a sentence.

kill -9 and resume is tests/test_crash_recovery.py; a full disk is tests/test_disk_full.py.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import core.training.job as job
import core.training.snapshot as snapshot
from core.cli import main
from core.config import ModelSpec, SplitConfig, TrainConfig
from core.errors import UserError
from core.serving.predictor import Predictor
from core.store.runs import RunStore
from core.training import checkpoint
from core.training.callbacks import EarlyStop, EpochDecay, HalveOnPlateau
from core.training.manager import TrainingManager
from tests.data_factory import make_class_folder
from tests.run_helpers import stopping_in_epoch

TIMEOUT = 120
TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                   epochs=4, seed=0, learning_rate=3e-3, restore_best=False)
STEPS = math.ceil(140 / 10)  # 140 training images (20 a class, 70 %) in batches of 10


def train_stopped(store: RunStore, config: TrainConfig, epoch: int) -> str:
    """A run stopped during ``epoch``: its checkpoint holds the epochs before it."""
    manager = TrainingManager(store)
    with stopping_in_epoch(epoch):
        run_id = manager.start(config)
        snap = manager.wait(run_id, TIMEOUT)
    assert snap.status == "stopped", snap.message
    assert snap.epoch == epoch - 1 and snap.resume_epoch == epoch - 1
    return run_id


def _plain(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def _iterations(store: RunStore, run_id: str) -> int:
    """Optimizer steps stored in the run's model.keras (saved every epoch when the last epoch is kept)."""
    model = keras.saving.load_model(store.run_dir(run_id) / "model.keras")
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with one run of TINY stopped in epoch 3 (checkpoint after epoch 2)."""
    home = tmp_path_factory.mktemp("resume") / "home"
    store = RunStore(home)
    run_id = train_stopped(store, TINY, epoch=3)
    store.close()
    return home, run_id


@pytest.fixture
def copy(stopped: tuple[Path, str], tmp_path: Path) -> tuple[RunStore, str]:
    """A private copy of the stopped run's home, so each test may change or damage it."""
    home, run_id = stopped
    shutil.copytree(home, tmp_path / "home")
    return RunStore(tmp_path / "home"), run_id


# ---------------------------------------------------------------- resuming


@pytest.mark.slow
def test_a_stopped_run_resumes_under_the_same_id_and_continues_its_optimizer(copy: tuple[RunStore, str]) -> None:
    store, run_id = copy
    before = store.epochs(run_id)
    assert [e["epoch"] for e in before] == [1, 2]
    manager = TrainingManager(store)
    assert manager.resume(run_id) == run_id
    snap = manager.wait(run_id, TIMEOUT)
    manager.shutdown()
    assert snap.run_id == run_id and snap.status == "finished", snap.message
    after = store.epochs(run_id)
    assert [e["epoch"] for e in after] == [1, 2, 3, 4]  # each epoch exactly once
    assert after[:2] == before  # the epochs before the checkpoint are untouched
    assert snap.history["loss"] == [e["loss"] for e in after] and snap.epoch == TINY.epochs
    record = store.get(run_id)
    assert record.status == "finished" and record.result["epochs_completed"] == TINY.epochs
    assert _iterations(store, run_id) == TINY.epochs * STEPS  # Adam's step count went on from the checkpoint
    assert not checkpoint.checkpoint_dir(store.run_dir(run_id)).exists()  # a finished run needs no checkpoint
    texts = [e["text"] for e in store.events(run_id)]
    assert "Resumed from the checkpoint after epoch 2 (kept model: epoch 2)." in texts
    epochs = np.load(store.run_dir(run_id) / "epoch_predictions.npz")["probs"]
    assert len(epochs) == TINY.epochs  # the epoch rewind covers the epochs before and after the resume
    assert Predictor.from_run(store, run_id).predict([np.zeros((12, 12, 1), np.uint8)]).shape == (1, 10)


def test_checkpoint_restores_weights_and_optimizer_state_exactly(tmp_path: Path) -> None:
    def model() -> keras.Model:
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="frozen"),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
        m.get_layer("frozen").trainable = False  # like a transfer model's backbone
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        return m

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)
    trained = model()
    trained.fit(x, y, epochs=1, batch_size=8, verbose=0)
    first = checkpoint.write_checkpoint(tmp_path, trained, epoch=1, previous=None, kept_epoch=1, kept_weights=None)
    trained.fit(x, y, epochs=1, batch_size=8, verbose=0)
    state = checkpoint.write_checkpoint(tmp_path, trained, epoch=2, previous=first, kept_epoch=2, kept_weights=None)
    files = sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    assert len([f for f in files if f.startswith("frozen-")]) == 1  # the frozen layer's weights: written once
    with np.load(checkpoint.checkpoint_dir(tmp_path) / state.weights) as epoch_file:
        assert len([k for k in epoch_file.files if k.startswith("w")]) == len(trained.weights) - 2
    weights, opt = checkpoint.read_arrays(tmp_path, state, state.weights)
    fresh = model()
    checkpoint.restore_training_state(fresh, weights, opt)
    for a, b in zip(trained.weights + trained.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path
    assert int(fresh.optimizer.iterations.numpy()) == 8  # two epochs of four batches


def test_early_stopping_and_lr_plateau_counters_survive_a_resume() -> None:
    saved = [EarlyStop("val_loss", "min", 5), HalveOnPlateau("val_loss", "min", 3), EpochDecay(0.1)]
    saved[0].wait, saved[0].best, saved[0].best_epoch = 2, np.float32(0.25), 4
    saved[1].wait, saved[1].best = 1, 0.3
    saved[2].first = False
    state = json.loads(json.dumps(checkpoint.callback_state(saved)))  # as state.json stores it
    fresh = [EarlyStop("val_loss", "min", 5), HalveOnPlateau("val_loss", "min", 3), EpochDecay(0.1)]
    for cb in fresh:
        cb.on_train_begin()  # resets the counters, as a new fit does
    checkpoint.apply_callback_state(fresh, state)
    assert (fresh[0].wait, fresh[0].best, fresh[0].best_epoch) == (2, 0.25, 4)
    assert (fresh[1].wait, fresh[1].best) == (1, 0.3)
    assert fresh[2].first is False


def test_counters_saved_by_an_older_checkpoint_still_apply() -> None:
    """state.json written before the run had its own callbacks: Keras' attribute names, read back the same."""
    old = [["EarlyStopping", {"wait": 3, "stopped_epoch": 0, "best": 0.5, "best_epoch": 2}],
           ["ReduceLROnPlateau", {"wait": 1, "best": 0.4, "cooldown_counter": 0}]]
    fresh = [EarlyStop("val_loss", "min", 5), HalveOnPlateau("val_loss", "min", 3)]
    checkpoint.apply_callback_state(fresh, old)
    assert (fresh[0].wait, fresh[0].best, fresh[0].best_epoch, fresh[1].wait, fresh[1].best) == (3, 0.5, 2, 1, 0.4)


def test_a_crash_between_the_weights_file_and_its_state_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    m.optimizer.build(m.trainable_variables)
    first = checkpoint.write_checkpoint(tmp_path, m, epoch=1, previous=None, kept_epoch=1, kept_weights=None)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("the process dies here")

    monkeypatch.setattr(checkpoint, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_checkpoint(tmp_path, m, epoch=2, previous=first, kept_epoch=2, kept_weights=None)
    monkeypatch.undo()
    assert checkpoint.read_state(tmp_path) == first  # still names whole files
    folder = checkpoint.checkpoint_dir(tmp_path)
    assert (folder / "epoch-0002.npz").is_file()  # the orphan, removed by the next checkpoint
    (folder / ".epoch-0003.dead.tmp.npz").write_bytes(b"half")  # a temp file a kill -9 left behind
    third = checkpoint.write_checkpoint(tmp_path, m, epoch=3, previous=first, kept_epoch=1,
                                        kept_weights=m.get_weights())
    assert third.kept == "epoch-0001.npz"  # the kept epoch's own file is reused, not rewritten
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0001.npz", "epoch-0003.npz", "state.json"]


@pytest.mark.slow
def test_cli_resume_continues_the_run_and_prints_its_summary(copy: tuple[RunStore, str],
                                                               capsys: pytest.CaptureFixture) -> None:
    store, run_id = copy
    assert main(["resume", run_id, "--json", "--home", str(store.home)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == run_id and summary["status"] == "finished"
    assert len(summary["history"]["loss"]) == TINY.epochs and summary["test"]["accuracy"] is not None
    assert [e["epoch"] for e in store.epochs(run_id)] == [1, 2, 3, 4]


def test_cli_resume_refusals_print_one_sentence_and_exit_2(copy: tuple[RunStore, str],
                                                           capsys: pytest.CaptureFixture) -> None:
    store, run_id = copy
    shutil.rmtree(checkpoint.checkpoint_dir(store.run_dir(run_id)))
    assert main(["resume", run_id, "--home", str(store.home)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Run {run_id} has no checkpoint to resume from") and err.count("\n") == 1
    assert main(["resume", "nope", "--json", "--home", str(store.home)]) == 2
    assert capsys.readouterr().err == "error: There is no run 'nope'.\n"
    assert store.get(run_id).status == "stopped"  # refused: nothing changed


# ---------------------------------------------------------------- refusals


def _refused(store: RunStore, run_id: str) -> str:
    """Resume must refuse with one sentence and leave the run as it was."""
    before = (store.get(run_id), store.epochs(run_id)) if store.get(run_id) else None
    manager = TrainingManager(store)
    with pytest.raises(UserError) as err:
        manager.resume(run_id)
    if before is not None:
        assert (store.get(run_id), store.epochs(run_id)) == before
    assert manager.active() == []
    return _plain(err)


def test_resume_refuses_an_unknown_finished_failed_or_active_run(copy: tuple[RunStore, str]) -> None:
    store, _ = copy
    assert _refused(store, "no-such-run") == "There is no run 'no-such-run'."
    finished = store.create_run(TINY)
    store.set_status(finished, "finished")
    assert "already finished, so there is nothing to resume: use Run again" in _refused(store, finished)
    failed = store.create_run(TINY)
    store.set_status(failed, "failed", "The loss became NaN at epoch 3: try a learning rate 10x lower (0.0003).")
    assert "Only an interrupted or stopped run can be resumed" in _refused(store, failed)
    queued = store.create_run(TINY)  # owned by this live process: it is not interrupted
    assert "is still waiting in the queue, so there is nothing to resume yet" in _refused(store, queued)


def test_resume_refuses_a_run_without_a_checkpoint(copy: tuple[RunStore, str]) -> None:
    store, _ = copy
    run_id = store.create_run(TINY)
    store.set_status(run_id, "interrupted", "The program stopped while this run was training.")
    assert TrainingManager(store).snapshot(run_id).resume_epoch is None  # no button to offer
    assert "has no checkpoint to resume from" in _refused(store, run_id)


def test_resume_refuses_a_run_whose_folder_was_deleted(copy: tuple[RunStore, str]) -> None:
    store, run_id = copy
    shutil.rmtree(store.run_dir(run_id))
    assert f"Run {run_id} cannot be resumed because its folder was deleted: use Run again" in _refused(store, run_id)


@pytest.mark.parametrize("damage", ["truncated weights", "garbage state", "missing weights"])
def test_resume_refuses_a_damaged_checkpoint(copy: tuple[RunStore, str], damage: str) -> None:
    store, run_id = copy
    folder = checkpoint.checkpoint_dir(store.run_dir(run_id))
    weights = folder / "epoch-0002.npz"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage state":
        (folder / "state.json").write_bytes(b"\x00garbage{")
    else:
        weights.unlink()
    assert "cannot be resumed because its checkpoint is damaged" in _refused(store, run_id)


@pytest.mark.slow
def test_resume_refuses_when_the_dataset_changed(home: Path, tmp_path: Path) -> None:
    data = make_class_folder(tmp_path / "data", classes=("a", "b"), per_class=12, size=16)
    store = RunStore(home)
    config = TINY.replace(data=str(data), split=SplitConfig(), image_size=16, epochs=3)
    run_id = train_stopped(store, config, epoch=2)
    make_class_folder(tmp_path / "more", classes=("a",), per_class=1, size=16, seed=9)
    shutil.move(tmp_path / "more" / "a" / "a_000.png", data / "a" / "a_new.png")  # one more picture
    assert "cannot be resumed because its dataset changed since it trained" in _refused(store, run_id)


# ---------------------------------------------------------------- transfer runs


SHAPES = "builtin:shapes?classes=3&per_class=20&size=32&seed=0"
TRANSFER = TrainConfig(data=SHAPES, split=SplitConfig(seed=0), image_size=32, batch_size=16, epochs=3, seed=0,
                       model=ModelSpec(name="transfer:mobilenet_v2", alpha=0.35, head_units=16, weights=None),
                       restore_best=False)


def _steps(home: Path, config: TrainConfig) -> int:
    from core.data.sources import load_dataset

    return math.ceil(len(load_dataset(config.data, config.split, home=home).splits["train"]) / config.batch_size)


def _resume(store: RunStore, run_id: str) -> snapshot.RunSnapshot:
    manager = TrainingManager(store)
    manager.resume(run_id)
    snap = manager.wait(run_id, TIMEOUT)
    manager.shutdown()
    return snap


def _stand_in_backbone(weights: None = None, include_top: bool = False, input_shape: tuple = (32, 32, 3),
                       alpha: float = 0.35) -> keras.Model:
    """A four-layer stand-in for MobileNetV2: the resume logic under test is CNN Lab's, and tracing the real
    backbone's gradients costs ~10 s a fit on 2 cores (the real one's cached path is tests/test_features.py)."""
    del weights, include_top, alpha
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c3")(x)
    return keras.Model(inputs, x, name="stand_in")


@pytest.mark.slow
def test_a_transfer_run_resumes_on_cached_features_and_in_its_fine_tuning_phase(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One run, resumed twice: first in the head-on-cached-features phase, then inside fine-tuning."""
    monkeypatch.setattr(keras.applications, "MobileNetV2", _stand_in_backbone)
    store = RunStore(home)
    config = TRANSFER.replace(epochs=2, model=TRANSFER.model.replace(fine_tune_layers=2, fine_tune_epochs=2))
    steps = _steps(home, config)
    run_id = train_stopped(store, config, epoch=2)  # checkpoint after epoch 1: the head on cached features
    assert checkpoint.read_state(store.run_dir(run_id)).phase == "main"

    with stopping_in_epoch(4):  # resumed: epoch 2 on cached features, epoch 3 fine-tunes, stopped in epoch 4
        snap = _resume(store, run_id)
    assert snap.status == "stopped" and snap.epoch == 3, snap.message
    texts = [e["text"] for e in store.events(run_id)]
    assert any(t.startswith("Backbone features reused from the cache") for t in texts), texts  # the head path again
    state = checkpoint.read_state(store.run_dir(run_id))
    assert (state.epoch, state.phase, state.fine_tune_start) == (3, "fine_tune", 2)

    snap = _resume(store, run_id)  # inside fine-tuning: unfreeze, recompile, then the fine-tuning optimizer's state
    assert snap.status == "finished", snap.message
    assert [e["epoch"] for e in store.epochs(run_id)] == [1, 2, 3, 4]
    model = keras.saving.load_model(store.run_dir(run_id) / "model.keras")
    assert model.get_layer("backbone").trainable  # the resumed run trained the unfrozen top of the backbone
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2 * steps  # both fine-tuning epochs


def test_resume_rewrites_model_keras_unless_it_holds_the_kept_epoch(copy: tuple[RunStore, str]) -> None:
    """model.keras is written at most every so often during training (core.job.SAVE_TIME_SHARE), so the
    checkpoint records which epoch it holds; a resume rewrites it exactly when that is not the kept epoch."""
    store, run_id = copy
    path = checkpoint.checkpoint_dir(store.run_dir(run_id)) / checkpoint.STATE_FILE
    state = json.loads(path.read_text())
    for model_epoch, rewrite in ((state["kept_epoch"], False), (state["kept_epoch"] - 1, True), (None, True)):
        path.write_text(json.dumps({**state, "model_epoch": model_epoch}))
        assert checkpoint.plan_resume(store, run_id).rewrite_model is rewrite, model_epoch


# ---------------------------------------------------------------- an interrupted run's model


def test_an_interrupted_runs_model_is_rebuilt_from_its_checkpoint_and_only_then(copy: tuple[RunStore, str]) -> None:
    store, run_id = copy
    folder = store.run_dir(run_id)
    model_file = folder / "model.keras"
    before = model_file.stat().st_mtime_ns
    assert checkpoint.kept_model_file(store, run_id) == model_file  # stopped: its job saved the kept model
    assert model_file.stat().st_mtime_ns == before
    store.set_status(run_id, "interrupted", "The process ended.")
    model_file.unlink()  # a crash before the throttled save
    assert checkpoint.kept_model_file(store, run_id).is_file()
    state = checkpoint.read_state(folder)
    kept, _ = checkpoint.read_arrays(folder, state, state.kept, optimizer=False)
    rebuilt = keras.models.load_model(model_file, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt.get_weights(), kept))
    assert state.model_epoch == state.kept_epoch  # noted: the next call does not rebuild again
    (folder / "labels.json").unlink()  # a rebuild is now impossible...
    checkpoint.note_model_epoch(folder, state, None)
    assert checkpoint.kept_model_file(store, run_id) == model_file  # ...but the file there still serves
    model_file.unlink()
    with pytest.raises(UserError, match="checkpoint could not be turned into a model"):
        checkpoint.kept_model_file(store, run_id)
