"""The reproducibility card: what a run recorded, "run again", and a deterministic rerun matching exactly."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from core.config import ModelSpec, SplitConfig, TrainConfig
from core.errors import UserError
from core.store.runs import RunStore
from core.training.manager import train_to_completion
from core.training.repro import (
    ENV_FILE,
    history_difference,
    recorded_environment,
    repro_card,
    rerun_config,
    rerun_sentence,
    same_recipe,
)

TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=12, seed=3), model=ModelSpec(name="tiny"),
                   image_size=8, batch_size=16, epochs=2, seed=7, use_feature_cache=False, name="tiny",
                   group="grid-1")


def test_rerun_config_keeps_the_recipe_and_marks_the_name():
    again = rerun_config(TINY)
    assert same_recipe(again, TINY) and again.seed == 7 and again.split == TINY.split
    assert again.name == "tiny (again)" and again.group == ""
    assert rerun_config(again).name == "tiny (again)"  # not "(again) (again)"
    det = rerun_config(TINY, deterministic=True)
    assert det.deterministic and not same_recipe(det, TINY)
    assert not same_recipe(TINY, TINY.replace(learning_rate=0.01))


def test_history_difference():
    a = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.1, 0.6], "val_accuracy": [0.4, float("nan")]}
    assert history_difference(a, dict(a)) == 0.0
    b = dict(a, val_loss=[1.1, 0.65])
    assert history_difference(a, b) == pytest.approx(0.05)
    assert history_difference(a, dict(a, loss=[1.0])) is None  # different lengths
    assert history_difference(a, dict(a, val_accuracy=[0.4, 0.5])) is None  # a gap against a number


@pytest.mark.slow
def test_deterministic_rerun_matches_and_the_card_says_so(home: Path):
    store = RunStore(home)
    first = train_to_completion(TINY.replace(deterministic=True), store)
    assert first["status"] == "finished"
    record = store.get(first["run_id"])
    again = train_to_completion(rerun_config(record.config), store)
    assert again["status"] == "finished"
    assert history_difference(first["history"], again["history"]) == 0.0
    assert first["test"]["accuracy"] == again["test"]["accuracy"]

    card = repro_card(store, first["run_id"])
    assert card.recorded and (store.run_dir(first["run_id"]) / ENV_FILE).is_file()
    assert card.seed == 7 and card.deterministic
    assert card.split_hash == record.result["split_hash"] and len(card.split_hash) == 64
    assert card.versions["python"] == platform.python_version()
    assert set(card.versions) == {"python", "tensorflow", "keras", "numpy"}
    assert card.machine["cores"] and "gpus" in card.machine
    assert card.config["seed"] == 7 and card.config["split"]["seed"] == 3
    assert [r["run_id"] for r in card.reruns] == [again["run_id"]] and card.reruns[0]["difference"] == 0.0
    assert "matched epoch for epoch" in rerun_sentence(card)
    assert "seed 7" in card.to_text() and card.split_hash in card.to_text()


def test_card_of_an_unknown_run_and_a_run_without_environment(home: Path):
    store = RunStore(home)
    with pytest.raises(UserError):
        repro_card(store, "nope")
    run_id = store.create_run(TINY)
    assert recorded_environment(store.run_dir(run_id)) is None
    card = repro_card(store, run_id)
    assert not card.recorded and card.split_hash is None and card.reruns == []
    assert rerun_sentence(card) is None
