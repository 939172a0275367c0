"""The run manager: queue, stop within one batch, NaN guard, recorded exceptions, determinism, artifacts."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import core.models.registry
from core.config import ConvBlock, CustomArchitecture, ModelSpec, SplitConfig, TrainConfig
from core.explain.metrics import metrics_at_epoch, run_predictions
from core.store.runs import RunStore
from core.training import fitting, job
from core.training.fitting import class_weights_from_counts
from core.training.manager import TrainingManager, train_to_completion

# 20 digits a class -> 140 training images: 14 full batches of 10 at 12 px (no partial batch to retrace).
TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                   epochs=2, seed=0)
WAIT = 120.0


@pytest.fixture
def manager(home: Path):
    m = TrainingManager(RunStore(home), max_concurrent=1)
    yield m
    m.shutdown(timeout=WAIT)


def test_class_weights_balance_counts() -> None:
    w = class_weights_from_counts(np.array([0, 0, 0, 1]), 3)
    assert w[0] == pytest.approx(4 / 6) and w[1] == pytest.approx(2.0) and w[2] == 1.0
    assert 3 * w[0] == pytest.approx(1 * w[1])  # each present class weighs the same in total


@pytest.mark.slow
def test_a_finished_run_has_every_artifact_and_an_epoch_rewind(home: Path) -> None:
    store = RunStore(home)
    summary = train_to_completion(TINY.replace(epochs=3), store)
    assert summary["status"] == "finished", summary["message"]
    rid = summary["run_id"]
    folder = store.run_dir(rid)
    for name in ("model.keras", "labels.json", "config.json", "predictions.npz", "epoch_predictions.npz",
                 "result.json"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "labels.json").read_text()) == [str(i) for i in range(10)]
    record = store.get(rid)
    assert record.status == "finished" and record.result["accuracy"] == summary["test"]["accuracy"]
    assert [e["epoch"] for e in store.epochs(rid)] == [1, 2, 3]
    assert set(summary["history"]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}

    test = run_predictions(store, rid, "test")
    assert test["probs"].shape == (len(test["labels"]), 10)
    assert np.allclose(test["probs"].sum(axis=1), 1, atol=1e-4)

    rewind = run_predictions(store, rid, "epochs")
    assert rewind["probs"].shape[:2] == (3, len(rewind["labels"]))
    first, last = metrics_at_epoch(rewind, 0, summary["classes"]), metrics_at_epoch(rewind, -1, summary["classes"])
    assert last["accuracy"] > first["accuracy"]  # the run improved ...
    assert first["confusion_matrix"] != last["confusion_matrix"]  # ... and the rewind shows it
    # The last epoch's rewind matches what Keras reported for that epoch (float16 storage aside).
    assert last["accuracy"] == pytest.approx(summary["history"]["val_accuracy"][-1], abs=0.01)


@pytest.mark.slow
def test_queue_runs_one_at_a_time(manager: TrainingManager) -> None:
    first = manager.start(TINY)
    second = manager.start(TINY.replace(seed=1))
    third = manager.start(TINY.replace(seed=2))
    assert manager.snapshot(second).status == manager.snapshot(third).status == "queued"
    manager.stop(third)  # a queued run stops at once and never starts
    assert manager.snapshot(third).status == "stopped"
    a = manager.wait(first, WAIT)
    b = manager.wait(second, WAIT)
    assert (a.status, b.status) == ("finished", "finished")
    assert b.started >= a.finished  # the second started only once the first was done
    assert manager.store.get(third).started is None and manager.store.epochs(third) == []
    assert [s.run_id for s in manager.list()] == [third, second, first]
    assert manager.get(first).snapshot().status == "finished" and manager.get("nope") is None

    # Snapshots are copies: changing one does not touch the run.
    a.history["loss"].append(123.0)
    assert manager.snapshot(first).history["loss"][-1] != 123.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.status = "x"  # type: ignore[misc]
    # A later manager (after a restart) rebuilds the same history and result from the store.
    again = TrainingManager(manager.store).snapshot(first)
    assert again.history["loss"] == pytest.approx(manager.snapshot(first).history["loss"])
    assert again.result == manager.snapshot(first).result

    folder = manager.store.run_dir(second)
    manager.delete(second)
    assert manager.snapshot(second) is None and not folder.exists()


@pytest.mark.slow
def test_stop_is_honoured_within_one_batch(manager: TrainingManager, monkeypatch: pytest.MonkeyPatch) -> None:
    started_after_stop: list[int] = []
    state: dict[str, Any] = {"stopped": False}

    class StopMidEpoch(keras.callbacks.Callback):
        """Requests a stop from another thread at batch 3 of epoch 2, then counts batches that still start."""

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if state["stopped"]:
                started_after_stop.append(batch)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.epoch == 1 and batch == 3 and not state["stopped"]:
                t = threading.Thread(target=manager.stop, args=(state["run_id"],))
                t.start()
                t.join()
                state["stopped"] = True

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

    real_fit = fitting.fit_model

    def fit_with_stopper(model, train_ds, val_ds, *, callbacks, **kwargs):
        return real_fit(model, train_ds, val_ds, callbacks=[*callbacks, StopMidEpoch()], **kwargs)

    monkeypatch.setattr(fitting, "fit_model", fit_with_stopper)
    state["run_id"] = manager.start(TINY.replace(epochs=30))
    snap = manager.wait(state["run_id"], WAIT)

    assert state["stopped"] and len(started_after_stop) <= 1
    assert snap.batches_per_epoch > 5  # without the stop, many more batches would have run
    assert snap.status == "stopped" and "best model so far" in snap.message
    assert snap.epoch == 1 and len(snap.history["loss"]) == 1  # the cut-short epoch is not recorded
    store = manager.store
    assert store.get(state["run_id"]).status == "stopped"
    assert (store.run_dir(state["run_id"]) / "model.keras").is_file()  # the best model so far is kept
    assert snap.result is not None and snap.result["best_epoch"] == 1


def test_nan_loss_fails_with_a_sentence(manager: TrainingManager) -> None:
    # A large L2 penalty with a large SGD step makes the weights grow exponentially until they overflow.
    broken = ModelSpec(name="custom", custom=CustomArchitecture(blocks=(ConvBlock(8),), dense_units=(16,), l2=0.5))
    rid = manager.start(TINY.replace(model=broken, optimizer="sgd", learning_rate=9.0, epochs=3))
    snap = manager.wait(rid, WAIT)
    assert snap.status == "failed"
    assert re.fullmatch(r"The loss became (NaN|infinite) at epoch [123]: try a learning rate 10x lower \(0\.9\)\.",
                        snap.message), snap.message
    assert manager.store.get(rid).message == snap.message
    assert any(e["kind"] == "error" for e in manager.store.events(rid))

def test_an_exception_is_recorded_on_the_run(manager: TrainingManager, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated failure inside fit")

    monkeypatch.setattr(fitting, "fit_model", broken_fit)
    rid = manager.start(TINY)
    snap = manager.wait(rid, WAIT)
    assert snap.status == "failed" and "simulated failure inside fit" in snap.message
    events = manager.store.events(rid)
    assert any(e["kind"] == "traceback" and "RuntimeError" in e["text"] for e in events)
    assert manager.store.get(rid).status == "failed"


def test_a_user_error_becomes_the_runs_message(manager: TrainingManager) -> None:
    rid = manager.start(TINY.replace(data=str(Path("/nonexistent/folder/of/images"))))
    snap = manager.wait(rid, WAIT)
    assert snap.status == "failed" and "does not exist" in snap.message
    assert not any(e["kind"] == "traceback" for e in manager.store.events(rid))


@pytest.mark.slow
def test_deterministic_runs_repeat_exactly(manager: TrainingManager) -> None:
    cfg = TINY.replace(deterministic=True, seed=7, augment=TINY.augment.preset("light"))
    a = manager.wait(manager.start(cfg), WAIT)
    b = manager.wait(manager.start(cfg), WAIT)
    assert a.status == b.status == "finished"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(a.history[key]) == cfg.epochs and all(np.isfinite(a.history[key])), key
        assert a.history[key] == b.history[key], key
    assert a.history["loss"][0] != a.history["loss"][1]  # real numbers, not a constant placeholder

def test_optimizers_are_built_from_the_config() -> None:
    for name, cls in (("adam", keras.optimizers.Adam), ("nadam", keras.optimizers.Nadam),
                      ("rmsprop", keras.optimizers.RMSprop), ("sgd", keras.optimizers.SGD)):
        opt = fitting.optimizer(TINY.replace(optimizer=name, momentum=0.8), 0.01)
        assert isinstance(opt, cls) and float(opt.learning_rate) == pytest.approx(0.01)
    assert fitting.optimizer(TINY.replace(optimizer="sgd", momentum=0.8), 0.01).momentum == pytest.approx(0.8)


@pytest.mark.slow
def test_decay_plateau_early_stopping_and_class_weights(home: Path) -> None:
    store = RunStore(home)
    cfg = TINY.replace(epochs=6, optimizer="nadam", lr_decay_rate=0.5, reduce_lr_patience=2,
                       early_stopping_patience=1, early_stopping_monitor="val_accuracy", class_weights=True)
    s = train_to_completion(cfg, store)
    assert s["status"] == "finished", s["message"]
    lrs = s["history"]["lr"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(5e-4)  # halved each epoch
    assert all(b < a for a, b in zip(lrs, lrs[1:]))
    stopped_early = any("Early stopping" in e["text"] for e in store.events(s["run_id"]))
    assert stopped_early == (len(lrs) < cfg.epochs)

@pytest.mark.slow
def test_transfer_model_fine_tunes_in_a_second_phase(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    initial: dict[str, np.ndarray] = {}

    def small_transfer_model(spec: ModelSpec, shape: tuple[int, int, int], n: int) -> keras.Model:
        """A stand-in with the same layout as a transfer model (frozen "backbone" called with training=False)."""
        backbone = keras.Sequential([keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3, activation="relu"),
                                     keras.layers.Conv2D(4, 3, activation="relu"),
                                     keras.layers.GlobalAveragePooling2D()], name="backbone")
        backbone.trainable = False
        inputs = keras.Input(shape)
        model = keras.Model(inputs, keras.layers.Dense(n, activation="softmax")(backbone(inputs, training=False)))
        initial["first"] = backbone.layers[1].get_weights()[0].copy()
        initial["top"] = backbone.layers[2].get_weights()[0].copy()
        return model

    monkeypatch.setattr(core.models.registry, "build_model", small_transfer_model)
    spec = ModelSpec(name="transfer:mobilenet_v2", weights=None, fine_tune_layers=2, fine_tune_epochs=1)
    cfg = TINY.replace(model=spec, epochs=1, restore_best=False, use_feature_cache=False)
    store = RunStore(home)
    s = train_to_completion(cfg, store)
    assert s["status"] == "finished", s["message"]
    assert len(s["history"]["loss"]) == 2  # one epoch with the frozen base, one fine-tuning
    assert s["history"]["lr"][1] == pytest.approx(cfg.learning_rate * spec.fine_tune_lr_factor)
    assert any("Fine-tuning the top 2" in e["text"] for e in store.events(s["run_id"]))
    saved = keras.saving.load_model(store.run_dir(s["run_id"]) / "model.keras", compile=False)
    top_conv_saved = saved.get_layer("backbone").layers[2].get_weights()[0]
    first_conv_saved = saved.get_layer("backbone").layers[1].get_weights()[0]
    assert not np.allclose(top_conv_saved, initial["top"])  # the unfrozen top layer learned
    assert np.allclose(first_conv_saved, initial["first"])  # the layer below stayed frozen


def _count_saves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count ``model.keras`` writes (``keras.Model.save`` calls) from here on."""
    calls: list[int] = []
    original = keras.Model.save

    def counting_save(self: keras.Model, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", counting_save)
    return calls


def _improvements(values: list[float]) -> int:
    best, count = None, 0
    for v in values:
        if best is None or v < best:
            best, count = v, count + 1
    return count


@pytest.mark.parametrize("share, expect", [(0.0, "once"), (1e9, "every improvement")])
@pytest.mark.slow
def test_model_keras_holds_the_best_epoch_however_saves_are_throttled(
        home: Path, monkeypatch: pytest.MonkeyPatch, share: float, expect: str) -> None:
    """Share 0: no save may happen during training, so model.keras is written once at the end; a huge share:
    every improving epoch is written. Either way the file is the best epoch's model (what the test split saw)."""
    monkeypatch.setattr(job, "SAVE_TIME_SHARE", share)
    saves = _count_saves(monkeypatch)
    store = RunStore(home)
    s = train_to_completion(TINY.replace(epochs=4), store)
    assert s["status"] == "finished", s["message"]
    improving = _improvements(s["history"]["val_loss"])
    assert len(saves) == (1 if expect == "once" else improving)
    model = keras.saving.load_model(store.run_dir(s["run_id"]) / "model.keras")
    test = run_predictions(store, s["run_id"], "test")
    from core.data.pipeline import make_tf_dataset
    from core.data.sources import load_dataset

    split = load_dataset(TINY.data, TINY.split, home=home).splits["test"]
    pixels = make_tf_dataset(split, image_size=TINY.image_size, channels=1, batch_size=10, training=False)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), test["probs"], rtol=1e-4, atol=1e-5)
    assert s["best_epoch"] == int(np.argmin(s["history"]["val_loss"])) + 1


@pytest.mark.slow
def test_fine_tuning_keeps_the_best_epoch_including_the_backbone(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen layers are not copied while frozen; once unfrozen, the kept (best) weights include them."""
    initial: dict[str, np.ndarray] = {}

    def small_transfer_model(spec: ModelSpec, shape: tuple[int, int, int], n: int) -> keras.Model:
        backbone = keras.Sequential([keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3, activation="relu"),
                                     keras.layers.GlobalAveragePooling2D()], name="backbone")
        backbone.trainable = False
        inputs = keras.Input(shape)
        model = keras.Model(inputs, keras.layers.Dense(n, activation="softmax")(backbone(inputs, training=False)))
        initial["conv"] = backbone.layers[1].get_weights()[0].copy()
        return model

    monkeypatch.setattr(core.models.registry, "build_model", small_transfer_model)
    spec = ModelSpec(name="transfer:mobilenet_v2", weights=None, fine_tune_layers=2, fine_tune_epochs=2,
                     fine_tune_lr_factor=1.0)
    store = RunStore(home)
    s = train_to_completion(TINY.replace(model=spec, epochs=1, restore_best=True, use_feature_cache=False), store)
    assert s["status"] == "finished", s["message"]
    saved = keras.saving.load_model(store.run_dir(s["run_id"]) / "model.keras", compile=False)
    conv = saved.get_layer("backbone").layers[1].get_weights()[0]
    # Best = epoch 1 (frozen phase): the original conv; best = a fine-tuning epoch: the conv it learned.
    assert np.allclose(conv, initial["conv"]) == (s["best_epoch"] == 1)
    assert s["best_epoch"] == int(np.argmin(s["history"]["val_loss"])) + 1
