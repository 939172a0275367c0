"""core.training.curves: the overfitting onset (best epoch, divergence region, the sentence)."""

from __future__ import annotations

import math

from core.training.curves import overfitting_onset


def test_no_validation_loss_means_no_onset() -> None:
    assert overfitting_onset({}) is None
    assert overfitting_onset({"loss": [1.0, 0.5]}) is None
    assert overfitting_onset({"loss": [1.0], "val_loss": [math.nan]}) is None


def test_divergence_region_starts_at_the_best_epoch_and_ends_at_the_last_diverging_one() -> None:
    onset = overfitting_onset({
        "loss": [1.0, 0.7, 0.5, 0.3, 0.2, 0.1],
        "val_loss": [1.1, 0.8, 0.6, 0.7, 0.9, 1.2],
    })
    assert onset is not None and onset.overfitting
    assert onset.best_epoch == 3 and onset.best_val_loss == 0.6
    assert onset.region == (3, 6)
    assert "From epoch 3 on the model overfits" in onset.sentence
    assert "0.5 → 0.1" in onset.sentence and "0.6 → 1.2" in onset.sentence


def test_still_improving_is_not_overfitting() -> None:
    onset = overfitting_onset({"loss": [1.0, 0.8, 0.6], "val_loss": [1.0, 0.9, 0.85]})
    assert onset is not None and not onset.overfitting and onset.region is None
    assert onset.best_epoch == 3
    assert "no sign of overfitting yet" in onset.sentence


def test_small_noise_after_the_best_epoch_is_tolerated() -> None:
    onset = overfitting_onset({"loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.0, 0.80, 0.79, 0.81]})
    assert onset is not None and not onset.overfitting
    assert onset.best_epoch == 3 and "stayed close" in onset.sentence


def test_rising_training_loss_is_called_unstable_not_overfitting() -> None:
    onset = overfitting_onset({"loss": [1.0, 0.8, 1.5, 2.5], "val_loss": [1.0, 0.8, 1.6, 2.6]})
    assert onset is not None and not onset.overfitting
    assert "unstable training" in onset.sentence


def test_nan_epochs_are_skipped_and_epochs_stay_aligned() -> None:
    onset = overfitting_onset({"loss": [1.0, 0.5, 0.2, 0.1], "val_loss": [math.nan, 0.5, 0.9, 1.0]})
    assert onset is not None and onset.best_epoch == 2 and onset.region == (2, 4)
    assert onset.to_dict()["region"] == (2, 4)
