"""Checks before training: each fires on the data problem it names, and its fix removes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import AugmentConfig, ModelSpec, SplitConfig, TrainConfig
from core.data.checks import (
    FEW_IMAGES_AUGMENT,
    apply_fixes,
    brightness_shortcut,
    class_pixel_stats,
    copies_of_training,
    pre_training_checks,
    set_aside_notes,
)
from core.data.health import health_report
from core.data.sources import load_dataset
from tests.data_factory import make_class_folder, make_scene_splits, make_split_folders, save_image


def _checks(source: str, config: TrainConfig) -> dict:
    ds = load_dataset(source, config.split)
    return {c.kind: c for c in pre_training_checks(health_report(ds), config)}


def test_imbalance_offers_class_weights_and_the_fix_silences_it(tmp_path: Path):
    root = make_class_folder(tmp_path / "imb", classes=("cat", "dog"), per_class={"cat": 40, "dog": 12}, size=8)
    config = TrainConfig(data=str(root), image_size=16)
    found = _checks(str(root), config)
    check = found["imbalance"]
    assert "'cat'" in check.sentence and "'dog'" in check.sentence and "to 1" in check.sentence
    assert check.fix == {"class_weights": True}
    fixed = check.apply(config)
    assert fixed.class_weights and not config.class_weights
    assert "imbalance" not in _checks(str(root), fixed)
    balanced = make_class_folder(tmp_path / "bal", classes=("cat", "dog"), per_class=20, size=8)
    assert "imbalance" not in _checks(str(balanced), TrainConfig(data=str(balanced), image_size=16))


def test_leakage_offers_dropping_duplicates_and_the_fixed_split_has_none(tmp_path: Path):
    root = make_split_folders(tmp_path / "leak", per_split={"train": 12, "val": 4, "test": 4}, size=8)
    # The same two pictures in training and in test (renamed): leakage.
    for name in ("a", "b"):
        shutil.copy(root / "train" / name / f"{name}_000.png", root / "test" / name / f"copy_{name}.png")
    config = TrainConfig(data=str(root), image_size=16)
    check = _checks(str(root), config)["leakage"]
    assert "2 picture(s) in the test split are near-copies" in check.sentence
    assert check.fix_label == "Set the near-copies aside" and check.fix == {"split.drop_duplicates": True}
    fixed = check.apply(config)
    before, after = load_dataset(str(root), config.split), load_dataset(str(root), fixed.split)
    assert health_report(before).num_duplicates_across_splits == 2
    assert health_report(after).num_duplicates_across_splits == 0
    assert copies_of_training(health_report(before)) == {"val": 0, "test": 2}
    assert copies_of_training(health_report(after)) == {"val": 0, "test": 0}
    assert set_aside_notes(before.notes) == []
    assert set_aside_notes(after.notes) == [
        "2 of the 10 test pictures were copies or near-copies of training or validation pictures and were set aside: "
        "test scores are on the other 8."]
    assert len(after.splits["test"]) == len(before.splits["test"]) - 2
    assert len(after.splits["train"]) == len(before.splits["train"])  # the training copy is kept
    assert after.split_hash != before.split_hash
    assert "leakage" not in _checks(str(root), fixed)


def test_few_images_offers_augmentation_then_more_training_images_then_nothing(tmp_path: Path):
    root = make_class_folder(tmp_path / "few", classes=("a", "b"), per_class={"a": 30, "b": 8}, size=8)
    config = TrainConfig(data=str(root), image_size=16, class_weights=True)
    check = _checks(str(root), config)["few_images"]
    assert "'b'" in check.sentence and "'a'" not in check.sentence
    assert check.fix == {"augment": FEW_IMAGES_AUGMENT}
    augmented = check.apply(config)
    assert augmented.augment.enabled and augmented.augment.flip == "none"  # no mirror images: safe for digits
    wide = augmented.replace(split=SplitConfig(val_fraction=0.2, test_fraction=0.2))
    second = _checks(str(root), wide)["few_images"]
    assert second.fix == {"split.val_fraction": 0.1, "split.test_fraction": 0.1}
    last = _checks(str(root), second.apply(wide)).get("few_images")
    assert last is not None and not last.fixable and last.severity == "info"


def test_small_images_suggest_an_input_near_their_own_size():
    config = TrainConfig(data="builtin:digits", image_size=32, split=SplitConfig(limit_per_class=10))
    check = _checks(config.data, config)["small_images"]
    assert "8×8" in check.sentence and "4×" in check.sentence and check.fix == {"image_size": 16}
    assert "small_images" not in _checks(config.data, check.apply(config))
    assert "small_images" not in _checks(config.data, config.replace(image_size=16))  # twice the side is fine
    transfer = config.replace(model=ModelSpec(name="transfer:mobilenet_v2"))
    assert "small_images" not in _checks(config.data, transfer)


def test_apply_fixes_applies_every_fix(tmp_path: Path):
    root = make_class_folder(tmp_path / "both", classes=("a", "b"), per_class={"a": 40, "b": 9}, size=8)
    config = TrainConfig(data=str(root), image_size=32)
    checks = list(_checks(str(root), config).values())
    assert {c.kind for c in checks} == {"imbalance", "few_images", "small_images"}
    fixed = apply_fixes(config, checks)
    assert fixed.class_weights and fixed.augment.enabled and fixed.image_size == 16
    left = _checks(str(root), fixed)  # the next step for too few images: give training a bigger share
    assert set(left) == {"few_images"} and left["few_images"].fix == {"split.val_fraction": 0.1,
                                                                      "split.test_fraction": 0.1}


def test_class_pixel_stats_find_a_class_photographed_darker(tmp_path: Path):
    rng = np.random.default_rng(0)
    for i in range(12):
        save_image(rng.integers(150, 200, size=(8, 8, 3)).astype(np.uint8), tmp_path / "d" / "light" / f"{i}.png")
        save_image(rng.integers(150, 200, size=(8, 8, 3)).astype(np.uint8), tmp_path / "d" / "also" / f"{i}.png")
        save_image(rng.integers(10, 40, size=(8, 8, 3)).astype(np.uint8), tmp_path / "d" / "dark" / f"{i}.png")
    ds = load_dataset(str(tmp_path / "d"), SplitConfig(val_fraction=0.2, test_fraction=0.2))
    stats = class_pixel_stats(ds)
    assert stats["channel_names"] == ["red", "green", "blue"]
    assert stats["classes"]["dark"]["mean"][0] == pytest.approx(25, abs=4)
    assert stats["classes"]["light"]["mean"][1] == pytest.approx(175, abs=6)
    sentence = brightness_shortcut(stats)
    assert sentence is not None and "'dark'" in sentence and "darker" in sentence
    even = {"channel_names": ["gray"], "classes": {"a": {"mean": [100.0], "std": [5.0]},
                                                   "b": {"mean": [110.0], "std": [5.0]}}}
    assert brightness_shortcut(even) is None


def test_checks_accept_a_report_dict_and_an_augmented_config():
    report = {"counts": {"train": {"a": 50, "b": 50}}, "num_duplicates_across_splits": 0,
              "sizes": {"median": [64, 64]}}
    config = TrainConfig(image_size=32, augment=AugmentConfig.preset("light"))
    assert pre_training_checks(report, config) == []


def test_leakage_counts_near_copies_not_only_identical_files(tmp_path: Path):
    root = make_scene_splits(tmp_path / "near", per_split={"train": 12, "val": 4, "test": 4})
    # Mirror images of three training pictures in validation: no identical file, but the same photos.
    for k, name in enumerate(("a", "a", "b")):
        src = root / "train" / name / f"{name}_00{k}.png"
        save_image(np.asarray(Image.open(src))[:, ::-1], root / "val" / name / f"mirror_{k}.png")
    config = TrainConfig(data=str(root), image_size=16)
    ds = load_dataset(str(root), config.split)
    report = health_report(ds)
    assert report.num_duplicates_across_splits == 0
    assert report.near_copies["val_in_train"] == 3
    check = _checks(str(root), config)["leakage"]
    assert check.sentence.startswith("3 picture(s) in the validation split are near-copies of pictures the model trains on")
    assert copies_of_training(report) == {"val": 3, "test": 0}
    fixed = load_dataset(str(root), check.apply(config).split)
    assert len(fixed.splits["val"]) == len(ds.splits["val"]) - 3
    assert copies_of_training(health_report(fixed)) == {"val": 0, "test": 0}
    assert set_aside_notes(fixed.notes) == [
        "3 of the 11 validation pictures were copies or near-copies of training pictures and were set aside: "
        "validation scores are on the other 8."]


def test_leakage_falls_back_to_exact_copies_in_a_report_without_near_copies():
    report = {"counts": {"train": {"a": 50, "b": 50}}, "num_duplicates_across_splits": 4,
              "sizes": {"median": [64, 64]}}
    (check,) = pre_training_checks(report, TrainConfig(image_size=32, augment=AugmentConfig.preset("light")))
    assert check.kind == "leakage" and check.sentence.startswith("4 picture(s) in validation or test are copies")
    assert pre_training_checks(report, TrainConfig(image_size=32, augment=AugmentConfig.preset("light"),
                                                   split=SplitConfig(drop_duplicates=True))) == []
