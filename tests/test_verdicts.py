"""core.training.verdicts: the curve verdicts (with hysteresis, replayed on recorded real runs) and the
validation-vs-test gap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.training.verdicts import (
    OVERFIT_EPOCHS,
    chance_level,
    gap_verdict,
    read_curves,
    read_run,
    run_verdicts,
)

HISTORIES = Path(__file__).parent / "fixtures" / "histories"
RECORDED = sorted(p.stem for p in HISTORIES.glob("*.json"))


def recorded(name: str) -> dict:
    return json.loads((HISTORIES / f"{name}.json").read_text())


def kinds(history: dict, **kw) -> list[str]:
    return [v.kind for v in read_curves(history, **kw).verdicts]


def replay(data: dict) -> list[tuple[tuple[str, int | None], ...]]:
    """The verdicts (kind, epoch) shown after each epoch, as the live chart showed them."""
    h, n = data["history"], len(data["history"]["loss"])
    return [tuple((v.kind, v.epoch) for v in read_curves({k: vals[:e] for k, vals in h.items()},
                                                         data["train_class_counts"]).verdicts)
            for e in range(1, n + 1)]


# ---------------------------------------------------------------- the overfitting onset


def test_no_history_or_no_validation_loss_means_no_onset() -> None:
    assert read_curves({}).onset is None and read_curves({}).verdicts == ()
    assert read_curves({"loss": [1.0, 0.5]}).onset is None
    assert read_curves({"loss": [1.0], "val_loss": [math.nan]}).onset is None


def test_divergence_region_starts_at_the_best_epoch_and_runs_to_the_last_one() -> None:
    reading = read_curves({
        "loss": [1.0, 0.7, 0.5, 0.3, 0.2, 0.1],
        "val_loss": [1.1, 0.8, 0.6, 0.7, 0.9, 1.2],
    })
    assert reading.onset is not None and reading.onset.overfitting
    assert reading.onset.best_epoch == 3 and reading.onset.best_val_loss == 0.6
    assert reading.onset.region == (3, 6)
    main = reading.main
    assert main.kind == "overfitting" and main.epoch == 3 and main.warning
    assert "From epoch 3 on the model overfits" in main.sentence
    assert "0.5 → 0.1" in main.sentence and "0.6 → 1.2" in main.sentence
    assert "epoch 3" in main.advice


def test_overfitting_needs_three_rising_epochs_in_a_row() -> None:
    base = {"loss": [1.0, 0.7, 0.5, 0.3, 0.2, 0.1], "val_loss": [1.1, 0.8, 0.6, 0.7, 0.9, 1.2]}
    short = {k: v[: 2 + OVERFIT_EPOCHS] for k, v in base.items()}
    assert OVERFIT_EPOCHS == 3
    assert read_curves(short).main.kind == "learning" and not read_curves(short).onset.overfitting
    assert "not overfitting yet" in read_curves(short).main.sentence
    assert read_curves(base).main.kind == "overfitting"


def test_still_improving_is_not_overfitting() -> None:
    reading = read_curves({"loss": [1.0, 0.8, 0.6], "val_loss": [1.0, 0.9, 0.85]})
    assert reading.onset is not None and not reading.onset.overfitting and reading.onset.region is None
    assert reading.onset.best_epoch == 3
    assert reading.main.kind == "learning" and "no sign of overfitting yet" in reading.main.sentence


def test_small_noise_after_the_best_epoch_is_tolerated() -> None:
    reading = read_curves({"loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.0, 0.80, 0.79, 0.81]})
    assert not reading.onset.overfitting and reading.onset.best_epoch == 3
    assert "stayed close" in reading.main.sentence


def test_once_declared_overfitting_stays_through_one_new_low_and_goes_after_two() -> None:
    loss = [1.0, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.18, 0.16]
    val = [1.0, 0.8, 0.6, 0.7, 0.75, 0.8, 0.59, 0.7, 0.8]  # one new low at epoch 7, then up again
    reading = read_curves({"loss": loss, "val_loss": val})
    assert reading.main.kind == "overfitting" and reading.main.epoch == 3
    recovered = read_curves({"loss": [*loss[:7], 0.17, 0.15], "val_loss": [*val[:7], 0.55, 0.5]})
    assert "overfitting" not in [v.kind for v in recovered.verdicts] and not recovered.onset.overfitting


def test_nan_epochs_are_skipped_and_epochs_stay_aligned() -> None:
    reading = read_curves({"loss": [1.0, 0.5, 0.2, 0.1, 0.05], "val_loss": [math.nan, 0.5, 0.9, 1.0, 1.1]})
    assert reading.onset.best_epoch == 2 and reading.onset.region == (2, 5)
    assert reading.onset.to_dict()["region"] == (2, 5)


def test_memorising_only_when_training_accuracy_is_high() -> None:
    history = {"loss": [2.0, 1.5, 1.2, 1.1, 1.0, 0.95], "val_loss": [2.0, 1.6, 1.3, 1.45, 1.5, 1.6],
               "accuracy": [0.3, 0.45, 0.55, 0.6, 0.63, 0.65], "val_accuracy": [0.3, 0.4, 0.5, 0.48, 0.47, 0.46]}
    main = read_curves(history, n_classes=10).main
    assert main.kind == "overfitting" and "starts to overfit" in main.sentence
    assert "only 65%" in main.sentence and "not memorising" in main.sentence
    high = {**history, "accuracy": [0.5, 0.7, 0.85, 0.9, 0.95, 0.99]}
    assert "it is memorising them" in read_curves(high, n_classes=10).main.sentence


def test_rising_training_loss_is_called_unstable_not_overfitting() -> None:
    reading = read_curves({"loss": [1.0, 0.8, 1.5, 2.5], "val_loss": [1.0, 0.8, 1.6, 2.6]})
    assert [v.kind for v in reading.verdicts] == ["unstable"]
    assert "unstable" in reading.main.sentence and "learning rate" in reading.main.advice


def test_a_noisy_training_loss_that_keeps_falling_is_not_unstable() -> None:
    loss = [2.4, 2.2, 2.0, 1.8, 1.9, 1.6, 1.65, 1.4, 1.45, 1.2, 1.25, 1.0]  # small bumps on a clear descent
    assert "unstable" not in kinds({"loss": loss, "val_loss": loss})


def test_validation_that_wobbles_without_a_trend_is_noise_not_overfitting() -> None:
    loss = [2.0 * 0.85 ** i for i in range(12)]
    val = [2.0, 1.5, 1.0, 0.8, 0.9, 0.78, 0.88, 0.77, 0.9, 0.8, 0.92, 0.79]
    reading = read_curves({"loss": loss, "val_loss": val}, n_val=120)
    assert reading.main.kind == "noisy_validation" and not reading.main.warning
    assert "not overfitting" in reading.main.sentence and "120 validation pictures" in reading.main.sentence


def test_both_accuracies_low_on_a_plateau_is_underfitting() -> None:
    loss = [2.0, 1.6, 1.4, 1.35, 1.34, 1.33, 1.33, 1.32]
    history = {"loss": loss, "val_loss": [v + 0.05 for v in loss],
               "accuracy": [0.2, 0.35, 0.45, 0.47, 0.48, 0.48, 0.49, 0.49],
               "val_accuracy": [0.2, 0.33, 0.42, 0.44, 0.45, 0.45, 0.46, 0.46]}
    main = read_curves(history, n_classes=10).main
    assert main.kind == "underfitting" and "both low" in main.sentence and "bigger model" in main.advice
    still_falling = {**history, "loss": [2.0 * 0.8 ** i for i in range(8)]}
    assert "underfitting" not in kinds(still_falling, n_classes=10)


# ---------------------------------------------------------------- not learning


def test_chance_level_is_the_majority_share_and_the_entropy_of_the_shares() -> None:
    even = chance_level(n_classes=10)
    assert even.accuracy == pytest.approx(0.1) and even.loss == pytest.approx(math.log(10))
    uneven = chance_level([80, 20])
    assert uneven.accuracy == pytest.approx(0.8)
    assert uneven.loss == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
    assert chance_level() is None and chance_level([5]) is None


@pytest.mark.parametrize("name", ["signs-collapsed", "signs-tiny"])
def test_a_recorded_collapsed_run_is_not_learning_with_what_to_try(name: str) -> None:
    data = recorded(name)
    assert data["test_accuracy"] <= max(data["train_class_counts"]) / sum(data["train_class_counts"]) + 0.01
    main = read_curves(data["history"], data["train_class_counts"]).main
    assert main.kind == "not_learning" and main.warning and main.epoch <= 5
    assert "is not learning" in main.sentence and "(10%)" in main.sentence
    assert all(word in main.advice for word in ("learning rate", "regularisation", "bigger images", "more epochs",
                                                "transfer model"))


def test_not_learning_is_judged_against_the_majority_share_of_uneven_classes() -> None:
    history = {"loss": [0.9, 0.52, 0.51, 0.505, 0.5], "accuracy": [0.78, 0.8, 0.79, 0.8, 0.8],
               "val_loss": [0.6, 0.52, 0.51, 0.51, 0.5], "val_accuracy": [0.8] * 5}
    assert kinds(history, class_counts=[800, 200])[0] == "not_learning"
    assert "not_learning" not in kinds(history, class_counts=[500, 500])  # 80 % of two even classes is learning
    assert "not_learning" not in kinds(history)  # without the classes there is no chance level to judge by


def test_a_slow_start_is_too_early_to_call_not_learning() -> None:
    data = recorded("signs-rps")  # at guessing level for two epochs, then learns
    shown = replay(data)
    assert shown[0] == (("too_early", None),)
    assert not any(kind == "not_learning" for epoch in shown for kind, _ in epoch)


def test_a_finished_run_at_guessing_level_after_few_epochs_says_train_longer() -> None:
    history = {k: v[:3] for k, v in recorded("signs-tiny")["history"].items()}
    counts = recorded("signs-tiny")["train_class_counts"]
    live = read_run(history, {"train_class_counts": counts}).main
    over = read_run(history, {"train_class_counts": counts}, {"accuracy": 0.1}).main
    assert live.kind == over.kind == "too_early"
    assert "next epochs" in live.sentence and "more epochs" in over.advice


# ---------------------------------------------------------------- hysteresis on recorded real runs


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_runs_verdicts_never_flip_back(name: str) -> None:
    shown = replay(recorded(name))
    mains = [epoch[0] if epoch else None for epoch in shown]
    changes = [(a, b) for a, b in zip(mains, mains[1:]) if a != b]
    assert len(changes) <= 2, changes
    left: set = set()
    for a, b in changes:  # once a verdict is left, it never comes back
        left.add(a)
        assert b not in left, (a, b)
    onsets = {e for epoch in shown for kind, e in epoch if kind == "overfitting"}
    assert len(onsets) <= 1, onsets  # the onset epoch, once declared, never moves


def test_recorded_overfitting_runs_are_declared_at_the_lowest_validation_loss() -> None:
    for name in ("overfit-demo", "signs-rps"):
        data = recorded(name)
        val = data["history"]["val_loss"]
        main = read_curves(data["history"], data["train_class_counts"]).main
        assert main.kind == "overfitting" and main.epoch == val.index(min(val)) + 1, name
        assert "memorising" in main.sentence  # both get ~100 % of their training pictures right


def test_recorded_regularised_demo_is_neither_overfitting_nor_unstable() -> None:
    data = recorded("overfit-demo-regularised")
    shown = {kind for epoch in replay(data) for kind, _ in epoch}
    assert not shown & {"overfitting", "unstable", "not_learning", "underfitting"}
    final = read_curves(data["history"], data["train_class_counts"], n_val=data["sizes"]["val"]).main
    assert final.kind == "noisy_validation" and "still improving" in final.sentence
    assert "not overfitting" in final.sentence and "539 validation pictures" in final.sentence


def test_recorded_cifar_run_is_still_learning() -> None:
    data = recorded("cifar-tiny")
    shown = {kind for epoch in replay(data) for kind, _ in epoch}
    assert shown == {"learning"}
    assert "more epochs should help" in read_curves(data["history"], data["train_class_counts"]).main.sentence


# ---------------------------------------------------------------- validation vs test


def test_a_gap_within_sampling_noise_says_nothing_and_a_real_one_says_why() -> None:
    assert gap_verdict(0.80, 0.85, 60, 60) is None  # 5 points on 60 + 60 pictures is chance
    assert gap_verdict(0.80, 0.82, 5000, 5000) is None  # 2 points is not worth a sentence
    gap = gap_verdict(0.80, 0.85, 2000, 2000)
    assert gap is not None and gap.kind == "val_test_gap" and gap.warning
    assert "differ by 5 points" in gap.sentence and "near-copies" in gap.sentence


def test_the_gap_names_the_reasons_the_facts_support() -> None:
    lower = gap_verdict(0.92, 0.78, 400, 1000, {"test_from_folder": True, "near_copies_in_val": 0})
    assert "own test folder" in lower.sentence and "near-copies" not in lower.sentence
    leaky = gap_verdict(0.92, 0.78, 400, 1000, {"near_copies_in_val": 30})
    assert "30 validation pictures are copies or near-copies" in leaky.sentence
    unchecked = gap_verdict(0.92, 0.78, 400, 1000, {})
    assert "this run did not look for" in unchecked.sentence
    higher = gap_verdict(0.78, 0.92, 400, 1000, {"test_from_folder": True, "near_copies_in_test": 25,
                                                 "near_copies_set_aside": 4})
    assert "25 test pictures are copies or near-copies" in higher.sentence and "own test folder" not in higher.sentence
    assert "4 near-copies of training pictures were set aside" in higher.sentence
    few = gap_verdict(0.70, 0.90, 80, 2000, {"near_copies_in_test": 0})
    assert "few validation pictures" in few.sentence and "80 of them" in few.sentence


def test_run_verdicts_add_the_gap_of_a_run_scored_on_its_test_split() -> None:
    data = recorded("signs-rps")
    split = {"sizes": {"train": 1442, "val": 310, "test": 2000}, "train_class_counts": data["train_class_counts"],
             "test_from_folder": True}
    result = {"accuracy": 0.75, "evaluated_on": "test", "best_epoch": 12, "classes": [str(i) for i in range(10)]}
    verdicts = run_verdicts(data["history"], split, result)
    assert [v.kind for v in verdicts] == ["overfitting", "val_test_gap"]
    assert "93%" in verdicts[-1].sentence  # the kept epoch's validation accuracy
    assert "val_test_gap" not in [v.kind for v in run_verdicts(data["history"], split,
                                                               {**result, "evaluated_on": "validation"})]
