"""The run's own early stopping and learning-rate plateau decide exactly what Keras' callbacks decide,
and keep their counters in public state a checkpoint can store."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from core.training.callbacks import EarlyStop, EpochDecay, HalveOnPlateau

# A validation loss that improves, stalls, improves a little (once by less than the plateau's 1e-4), then
# rises: every branch of both callbacks.
LOSSES = [1.0, 0.8, 0.8, 0.85, 0.79, 0.78995, 0.9, 0.95, 0.97, 0.99, 0.78, 0.77996, 1.1, 1.2, 1.3, 1.4, 1.5]


def _model(lr: float = 1e-2) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def _drive(callback: keras.callbacks.Callback, losses: list[float], monitor: str = "val_loss") -> list[tuple]:
    """Run the callback over the epochs; per epoch: (stop asked, learning rate after the epoch)."""
    model = _model()
    callback.set_model(model)
    callback.on_train_begin()
    out = []
    for epoch, value in enumerate(losses):
        model.stop_training = False
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {monitor: value, "loss": value})
        out.append((model.stop_training, round(float(model.optimizer.learning_rate.numpy()), 10)))
    return out


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stop_stops_at_the_epoch_keras_would(patience: int) -> None:
    ours = _drive(EarlyStop("val_loss", "min", patience), LOSSES)
    theirs = _drive(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, mode="min"), LOSSES)
    assert ours == theirs and any(stop for stop, _ in ours)


@pytest.mark.parametrize("patience", [1, 2])
def test_plateau_halves_the_learning_rate_when_keras_would(patience: int) -> None:
    ours = _drive(HalveOnPlateau("val_loss", "min", patience), LOSSES)
    theirs = _drive(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5,
                                                      patience=patience, min_lr=1e-7), LOSSES)
    assert ours == theirs and len({lr for _, lr in ours}) > 2


def test_accuracy_is_watched_upwards() -> None:
    accuracies = [0.5, 0.6, 0.6, 0.55, 0.5]
    ours = _drive(EarlyStop("val_accuracy", "max", 2), accuracies, monitor="val_accuracy")
    theirs = _drive(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=2, mode="max"), accuracies,
                    monitor="val_accuracy")
    assert ours == theirs and [stop for stop, _ in ours] == [False, False, False, True, True]


def test_state_is_plain_json_and_restores_mid_run() -> None:
    """Stop after 6 epochs, save the state, restore it into fresh callbacks: the rest goes as without the stop."""
    whole = [EarlyStop("val_loss", "min", 3), HalveOnPlateau("val_loss", "min", 2), EpochDecay(0.1)]
    model = _model()
    for cb in whole:
        cb.set_model(model)
        cb.on_train_begin()
    for epoch, value in enumerate(LOSSES[:6]):
        for cb in whole:
            cb.on_epoch_begin(epoch)
            cb.on_epoch_end(epoch, {"val_loss": np.float32(value)})
    saved = json.loads(json.dumps([cb.state() for cb in whole]))  # numpy numbers became plain ones
    fresh = [EarlyStop("val_loss", "min", 3), HalveOnPlateau("val_loss", "min", 2), EpochDecay(0.1)]
    for cb, state in zip(fresh, saved):
        cb.on_train_begin()
        cb.restore(state)
    assert [cb.state() for cb in fresh] == saved
    assert saved[0]["best"] == pytest.approx(0.78995, abs=1e-6) and saved[1]["best"] == pytest.approx(0.79, abs=1e-6)
    assert saved[1]["wait"] == 1 and saved[2] == {"first": False}
