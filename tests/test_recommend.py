"""Recommended settings: the rules on synthetic facts and real folders, the download note, and `train --recommended`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import AugmentConfig, ModelSpec, SplitConfig, TrainConfig
from core.training.recommend import (
    DatasetFacts,
    facts_from_report,
    recommend,
    scratch_size,
    with_download_note,
)
from tests.data_factory import make_class_folder

PHOTOS = DatasetFacts(source="/data/hands", num_classes=10, train_images=1443, smallest_class=140, median_side=100,
                      channels=3, colour_share=1.0, imbalance_ratio=1.1)
DIGITS = DatasetFacts(source="builtin:digits", num_classes=10, train_images=1257, smallest_class=124, median_side=8,
                      channels=1, colour_share=0.0, imbalance_ratio=1.05)
SETTINGS = {"model", "image_size", "epochs", "early_stopping", "augmentation"}


def test_photos_get_a_frozen_imagenet_backbone_at_224_px_with_the_cache_and_early_stopping() -> None:
    rec = recommend(PHOTOS)
    config = rec.apply(TrainConfig(data=PHOTOS.source))
    assert rec.kind == "transfer" and rec.model == "transfer:mobilenet_v2"
    assert config.model.name == "transfer:mobilenet_v2" and config.model.weights == "imagenet"
    assert config.model.fine_tune_epochs == 0 and config.use_feature_cache
    assert config.image_size == 224 and config.epochs >= 30
    assert config.early_stopping_patience > 0 and config.restore_best
    assert not config.augment.enabled
    assert SETTINGS <= {c.setting for c in rec.choices}
    assert all(c.sentence.endswith(".") and c.value for c in rec.choices)
    assert "1,443 training photos" in rec.choice("model").sentence


def test_tiny_grey_images_get_a_small_scratch_cnn_near_their_own_size() -> None:
    rec = recommend(DIGITS)
    config = rec.apply(TrainConfig())
    assert rec.kind == "scratch" and config.model.name == "tiny" and not config.model.is_transfer
    assert config.image_size == 16  # 8-px digits: two pooling layers need room
    assert config.early_stopping_patience > 0 and config.epochs > 10
    assert SETTINGS <= {c.setting for c in rec.choices}
    assert "feature_cache" not in {c.setting for c in rec.choices}


@pytest.mark.parametrize(("facts", "kind"), [
    (DatasetFacts("builtin:shapes?size=64", 4, 560, 140, 64, 3, 1.0, 1.0), "scratch"),   # drawn by a program
    (DatasetFacts("/xrays", 2, 800, 300, 256, 1, 0.0, 1.3), "transfer"),                 # large grey photos
    (DatasetFacts("/icons", 5, 500, 100, 16, 3, 1.0, 1.0), "scratch"),                   # colour, but tiny
    (DatasetFacts("/cifar", 10, 4250, 425, 32, 3, 1.0, 1.0), "transfer"),                # small colour photos
])
def test_the_model_family_follows_what_the_images_are(facts: DatasetFacts, kind: str) -> None:
    assert recommend(facts).kind == kind


def test_small_photos_are_enlarged_to_160_px_and_larger_ones_to_224() -> None:
    cifar = DatasetFacts("/cifar", 10, 4250, 425, 32, 3, 1.0, 1.0)
    assert recommend(cifar).changes["image_size"] == 160
    assert "small (32 px)" in recommend(cifar).choice("image_size").sentence
    assert recommend(PHOTOS).changes["image_size"] == 224
    assert "enlarged 2.2×" in recommend(PHOTOS).choice("image_size").sentence


def test_many_small_grey_images_get_the_deeper_scratch_cnn() -> None:
    mnist = DatasetFacts("mnist", 10, 51_000, 4_600, 28, 1, 0.0, 1.1)
    config = recommend(mnist).apply(TrainConfig())
    assert config.model.name == "deep_convblock" and config.image_size == 32


@pytest.mark.parametrize(("side", "size"), [(8, 16), (16, 16), (28, 32), (50, 56), (300, 64), (0, 32)])
def test_scratch_size_is_the_images_side_rounded_up_to_8_between_16_and_64(side: int, size: int) -> None:
    assert scratch_size(side) == size


def test_imbalance_adds_class_weights_and_few_images_add_gentle_augmentation() -> None:
    few = DatasetFacts("/few", 3, 90, 20, 28, 1, 0.0, 2.0)
    rec = recommend(few)
    config = rec.apply(TrainConfig())
    assert config.class_weights and "2.0×" in rec.choice("class_weights").sentence
    assert config.augment == AugmentConfig.preset("gentle") and config.augment.flip == "none"
    assert recommend(PHOTOS).choice("class_weights") is None


def test_a_model_the_user_chose_fixes_the_family_and_is_left_alone() -> None:
    rec = recommend(PHOTOS, model="tiny")
    config = rec.apply(TrainConfig(model=ModelSpec(name="tiny")))
    assert rec.kind == "scratch" and rec.model == "tiny" and "model.name" not in rec.changes
    assert config.model.name == "tiny" and config.image_size == 64
    assert "your choice" in rec.choice("model").value


def test_apply_keeps_the_paths_the_user_set_and_everything_below_them() -> None:
    mine = TrainConfig(epochs=3, model=ModelSpec(name="tiny", alpha=0.5))
    config = recommend(PHOTOS).apply(mine, keep=["epochs", "model"])
    assert config.epochs == 3 and config.model == mine.model
    assert config.image_size == 224 and config.early_stopping_patience > 0


def test_facts_from_a_health_report_of_a_real_folder(tmp_path: Path) -> None:
    from core.data.health import health_report
    from core.data.sources import load_dataset

    root = make_class_folder(tmp_path / "d", classes=("a", "b", "c"), per_class={"a": 20, "b": 20, "c": 8}, size=40)
    ds = load_dataset(str(root), SplitConfig(seed=0))
    facts = facts_from_report(health_report(ds))
    assert facts.num_classes == 3 and facts.train_images == len(ds.splits["train"])
    assert facts.smallest_class == int((ds.splits["train"].labels == 2).sum())
    assert facts.median_side == 40 and facts.channels == 3 and facts.colour_share == 1.0
    assert facts.imbalance_ratio >= 2 and facts.photos
    assert facts_from_report(health_report(ds).to_dict()) == facts


def test_real_hand_photos_get_transfer_learning(shared_dir: Path, tmp_path: Path) -> None:
    from core.data.health import health_report
    from core.data.sources import load_dataset

    folder = shared_dir / "datasets" / "sign-language-digits"
    if not folder.is_dir():
        pytest.skip("../shared/datasets/sign-language-digits is absent")
    subset = tmp_path / "hands"
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        (subset / cls.name).mkdir(parents=True)
        for photo in sorted(cls.iterdir())[:12]:
            (subset / cls.name / photo.name).symlink_to(photo)
    facts = facts_from_report(health_report(load_dataset(str(subset), SplitConfig(seed=0))))
    assert facts.median_side == 100 and facts.colour_share == 1.0 and facts.num_classes == 10
    rec = recommend(facts)
    assert rec.kind == "transfer" and rec.changes["image_size"] == 224


def test_the_download_note_appears_only_while_the_weights_are_missing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import core.models.transfer as transfer

    monkeypatch.setattr(transfer, "keras_models_dir", lambda: tmp_path)
    rec = recommend(PHOTOS)
    note = with_download_note(rec).notes
    assert len(note) == 1 and "downloads them once" in note[0] and "internet" in note[0]
    name = transfer.weights_file(ModelSpec(name=rec.model, alpha=0.35), (224, 224, 3))
    (tmp_path / name).write_bytes(b"weights")
    assert with_download_note(rec).notes == ()
    assert with_download_note(recommend(DIGITS)).notes == ()


# ---------------------------------------------------------------- the command line


def _args(*argv: str):
    from core.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def test_cli_recommends_when_no_model_or_size_is_given_and_explicit_flags_win(capsys: pytest.CaptureFixture) -> None:
    from core import cli

    assert cli._wants_recommendation(_args("--data", "builtin:digits"))
    assert cli._wants_recommendation(_args("--data", "builtin:digits", "--model", "tiny", "--recommended"))
    assert not cli._wants_recommendation(_args("--data", "builtin:digits", "--model", "tiny"))
    assert not cli._wants_recommendation(_args("--data", "builtin:digits", "--image-size", "32"))
    args = _args("--data", "builtin:digits", "--limit-per-class", "20", "--epochs", "3", "--augment", "light")
    config, info = cli._recommended(args, cli._train_config(args))
    assert config.epochs == 3 and config.augment == AugmentConfig.preset("light")   # the user's flags
    assert config.model.name == "tiny" and config.image_size == 16 and config.early_stopping_patience > 0
    assert info["kind"] == "scratch" and info["kept_from_flags"] == ["--epochs", "--augment"]
    assert {c["setting"] for c in info["choices"]} >= SETTINGS
    err = capsys.readouterr().err
    assert err.startswith("Recommended for this dataset (your flags win: --epochs, --augment):")
    assert "Image size: 16 px." in err


def test_cli_without_readable_data_leaves_the_config_for_the_run_to_fail(tmp_path: Path) -> None:
    from core import cli

    args = _args("--data", str(tmp_path / "missing"))
    config = cli._train_config(args)
    assert cli._recommended(args, config) == (config, None)


@pytest.mark.slow
def test_cli_train_recommended_json_shows_which_and_why(home: Path, capsys: pytest.CaptureFixture) -> None:
    from core.cli import main
    from core.store.runs import RunStore

    code = main(["train", "--data", "builtin:digits", "--limit-per-class", "20", "--recommended", "--epochs", "2",
                 "--json", "--home", str(home)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["status"] == "finished"
    rec = summary["recommendation"]
    assert rec["model"] == "tiny" and rec["kept_from_flags"] == ["--epochs"]
    size = next(c for c in rec["choices"] if c["setting"] == "image_size")
    assert size["value"] == "16 px" and size["changes"] == {"image_size": 16} and size["sentence"]
    config = RunStore(home).get(summary["run_id"]).config
    assert config.image_size == 16 and config.epochs == 2 and config.early_stopping_patience > 0
