"""core.data (sources, folders, splits, builtin, health): sources, layouts, splits, built-ins and the health report."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from data_factory import (
    class_color,
    make_array,
    make_class_folder,
    make_flat_folder,
    make_split_folders,
    make_zip,
    plant_bad_files,
    save_image,
)

from core.config import SplitConfig
from core.data import builtin, splits
from core.data.builtin import list_builtin
from core.data.dataset import Dataset, Split
from core.data.health import health_report
from core.data.sources import load_dataset
from core.errors import UserError


def _names(ds: Dataset, split: str) -> list[str]:
    return sorted(ds.relative(f) for f in ds.splits[split].files)


def _label_of(ds: Dataset, split: str) -> dict[str, str]:
    part = ds.splits[split]
    return {ds.relative(f): ds.class_names[int(y)] for f, y in zip(part.files, part.labels)}


# ---------------------------------------------------------------- layouts


def test_class_folders_are_split_70_15_15_per_class(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("zebra", "ant", "moth"), per_class=20)
    ds = load_dataset(str(root))
    assert ds.class_names == ["ant", "moth", "zebra"]
    assert ds.channels == 3 and ds.native_size == (16, 16) and ds.total_images == 60
    for s, n in (("train", 14), ("val", 3), ("test", 3)):
        counts = np.bincount(ds.splits[s].labels, minlength=3)
        assert counts.tolist() == [n, n, n], s
    # labels follow the folders
    for name, label in _label_of(ds, "train").items():
        assert name.split("/")[0] == label
    all_files = sum((_names(ds, s) for s in ("train", "val", "test")), [])
    assert len(all_files) == len(set(all_files)) == 60


def test_same_seed_same_split_anywhere_and_other_seed_differs(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "one", per_class=20)
    a = load_dataset(str(root), SplitConfig(seed=3))
    b = load_dataset(str(root), SplitConfig(seed=3))
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "copy")
    c = load_dataset(str(moved), SplitConfig(seed=3))
    d = load_dataset(str(root), SplitConfig(seed=4))
    assert a.split_hash == b.split_hash == c.split_hash
    assert _names(a, "test") == _names(c, "test")
    assert d.split_hash != a.split_hash and _names(d, "test") != _names(a, "test")
    assert len(a.split_hash) == 64


def test_split_folders_are_respected_with_validation_alias(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 5, "validation": 2, "test": 3})
    ds = load_dataset(str(root))
    assert {s: len(p) for s, p in ds.splits.items()} == {"train": 10, "val": 4, "test": 6}
    assert all(n.startswith("validation/") for n in _names(ds, "val"))
    assert all(n.startswith("test/") for n in _names(ds, "test"))


def test_train_and_test_only_carves_validation_out_of_train(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 20, "test": 4})
    ds = load_dataset(str(root), SplitConfig(val_fraction=0.25))
    assert len(ds.splits["test"]) == 8 and all(n.startswith("test/") for n in _names(ds, "test"))
    assert len(ds.splits["val"]) == 10 and all(n.startswith("train/") for n in _names(ds, "val"))
    assert len(ds.splits["train"]) == 30
    assert any("no validation split" in n for n in ds.notes)


def test_mixed_layout_flat_test_split_takes_labels_from_file_names(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", classes=("cat", "catfish"), per_split={"train": 6, "test": 3},
                              flat_splits=("test",))
    ds = load_dataset(str(root))
    labels = _label_of(ds, "test")
    assert len(labels) == 6
    for name, label in labels.items():
        assert Path(name).name.split(".")[0] == label  # 'catfish.001.png' is not a 'cat'
    assert ds.class_names == ["cat", "catfish"]


def test_flat_folder_labels_from_file_names(tmp_path: Path) -> None:
    root = make_flat_folder(tmp_path / "d", classes=("rock", "paper", "scissors"), per_class=6)
    save_image(make_array(1, 16), root / "paper.123.png")
    save_image(make_array(1, 16), root / "0001.png")  # no class in its name
    ds = load_dataset(str(root))
    assert ds.class_names == ["paper", "rock", "scissors"]
    assert ds.total_images == 19
    assert [s.path for s in ds.skipped] == ["0001.png"] and "class" in ds.skipped[0].reason
    for split in ds.splits:
        for name, label in _label_of(ds, split).items():
            assert name.startswith(label)


def test_flat_folder_with_separator_and_given_classes(tmp_path: Path) -> None:
    root = make_flat_folder(tmp_path / "d", classes=("big_cat", "dog"), per_class=4, pattern="{cls}__{i}{ext}")
    ds = load_dataset(f"{root}?sep=__")
    assert ds.class_names == ["big_cat", "dog"]
    ds = load_dataset(f"{root}?classes=dog,big_cat")
    assert ds.class_names == ["big_cat", "dog"] and ds.total_images == 8


def test_test_classes_differing_from_train_is_a_sentence(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", classes=("a", "b"), per_split={"train": 4, "test": 2})
    make_class_folder(root / "test", classes=("a", "b", "c"), per_class=1, seed=5)
    with pytest.raises(UserError, match=r"test folder \(test\) and the training folder \(train\) hold different "
                                        r"classes \(only in test: c\)"):
        load_dataset(str(root))


def test_one_class_and_empty_and_missing_sources(tmp_path: Path) -> None:
    one = make_class_folder(tmp_path / "one", classes=("only",), per_class=5)
    with pytest.raises(UserError, match="fewer than two classes"):
        load_dataset(str(one))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no usable images"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a folder or a zip"):
        load_dataset(str(tmp_path / "notes.txt"))


def test_planted_bad_files_are_listed_and_good_ones_kept(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("a", "b"), per_class=8)
    expected = plant_bad_files(root / "a")
    (root / "a" / ".hidden.png").write_bytes(b"")      # hidden: ignored, not reported
    (root / "b" / "Thumbs.db").write_bytes(b"junk")     # OS junk: ignored
    ds = load_dataset(str(root))
    reasons = {s.path: s.reason for s in ds.skipped}
    assert set(reasons) == {f"a/{name}" for name in expected}
    for name, word in expected.items():
        assert word in reasons[f"a/{name}"], (name, reasons[f"a/{name}"])
    assert ds.total_images == 16
    report = health_report(ds).to_dict()
    assert report["num_skipped"] == len(expected)
    assert {s["path"] for s in report["skipped"]} == set(reasons)


def test_wrapper_folder_is_descended(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "outer" / "inner", per_class=4)
    ds = load_dataset(str(tmp_path / "outer"))
    assert ds.class_names == ["a", "b"] and ds.name == "inner"


def test_gray_folder_is_one_channel(tmp_path: Path) -> None:
    for k, c in enumerate(("a", "b")):
        for i in range(4):
            save_image(np.full((8, 8), 40 + 100 * k + i, np.uint8), tmp_path / c / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.channels == 1
    assert ds.splits["train"].image(0).shape == (8, 8, 1)


# ---------------------------------------------------------------- split options


def test_limit_per_class_and_train_fraction(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", per_class=40)
    ds = load_dataset(str(root), SplitConfig(limit_per_class=20))
    assert ds.total_images == 40
    assert np.bincount(ds.splits["train"].labels).tolist() == [14, 14]
    full = load_dataset(str(root), SplitConfig(seed=1))
    half = load_dataset(str(root), SplitConfig(seed=1, train_fraction=0.5))
    assert np.bincount(half.splits["train"].labels).tolist() == [14, 14]
    assert set(half.splits["train"].files) < set(full.splits["train"].files)
    assert half.splits["val"].files == full.splits["val"].files
    assert half.splits["test"].files == full.splits["test"].files


def test_limit_per_class_shares_given_splits(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 30, "val": 5, "test": 5})
    ds = load_dataset(str(root), SplitConfig(limit_per_class=8))
    assert {s: len(p) for s, p in ds.splits.items()} == {"train": 12, "val": 2, "test": 2}


def test_label_noise_flips_only_training_labels_seeded(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=40)
    clean = load_dataset(str(root), SplitConfig(seed=2))
    noisy = load_dataset(str(root), SplitConfig(seed=2, label_noise=0.2))
    again = load_dataset(str(root), SplitConfig(seed=2, label_noise=0.2))
    train = noisy.splits["train"]
    flipped = train.labels != train.original_labels
    assert flipped.sum() == round(0.2 * len(train))
    np.testing.assert_array_equal(train.original_labels, clean.splits["train"].labels)
    np.testing.assert_array_equal(train.labels, again.splits["train"].labels)
    for s in ("val", "test"):
        np.testing.assert_array_equal(noisy.splits[s].labels, clean.splits[s].labels)
    assert noisy.split_hash != clean.split_hash


def test_tiny_classes_keep_a_training_image() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    tr, va, te = splits._stratified(labels, 0.3, 0.3, seed=0)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(6))
    assert set(labels[tr].tolist()) == {0, 1, 2}


def test_split_subset_and_describe() -> None:
    imgs = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2, 1)
    part = Split(labels=[0, 1, 0, 1], images=imgs)
    sub = part.subset([3, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [1, 1]
    np.testing.assert_array_equal(sub.image(0), imgs[3])
    assert sub.describe(1) == "#1"


# ---------------------------------------------------------------- built-ins


def test_list_builtin_names_and_to_dict() -> None:
    infos = {i.name: i for i in list_builtin()}
    assert {"digits", "shapes", "mnist", "fashion_mnist", "cifar10", "cifar100", "rock_paper_scissors"} <= set(infos)
    assert infos["digits"].to_dict()["images"] == 1797 and not infos["digits"].needs_download
    assert infos["rock_paper_scissors"].needs_download
    json.dumps([i.to_dict() for i in infos.values()])


def test_digits() -> None:
    ds = load_dataset("builtin:digits")
    assert ds.num_classes == 10 and ds.total_images == 1797 and ds.channels == 1
    img = ds.splits["train"].image(0)
    assert img.shape == (8, 8, 1) and img.dtype == np.uint8
    assert ds.splits["train"].images.max() == 255
    assert ds.native_size == (8, 8)


def test_shapes_are_deterministic_and_configurable() -> None:
    a = load_dataset("builtin:shapes?classes=4&per_class=10&size=32&seed=1")
    b = load_dataset("builtin:shapes?classes=4&per_class=10&size=32&seed=1")
    c = load_dataset("builtin:shapes?classes=4&per_class=10&size=32&seed=2")
    assert a.class_names == ["circle", "square", "star", "triangle"]
    assert a.total_images == 40 and a.channels == 3 and a.native_size == (32, 32)
    np.testing.assert_array_equal(a.splits["train"].images, b.splits["train"].images)
    assert a.split_hash == b.split_hash != c.split_hash
    named = load_dataset("builtin:shapes?classes=star,ring&per_class=3&size=16")
    assert named.class_names == ["ring", "star"]
    upright = load_dataset("builtin:shapes?classes=4&per_class=10&size=32&seed=1&rotation=0")
    assert not np.array_equal(upright.splits["train"].images, a.splits["train"].images)
    default = load_dataset("builtin:shapes")
    assert default.num_classes == 4 and default.total_images == 800 and default.native_size == (64, 64)


def test_shapes_differ_between_classes_and_images() -> None:
    ds = load_dataset("builtin:shapes?classes=8&per_class=6&size=32", SplitConfig(val_fraction=0.0, test_fraction=0.0))
    imgs = ds.splits["train"].images
    assert len({img.tobytes() for img in imgs}) == len(imgs) == 48
    report = health_report(ds)
    assert report.num_duplicates_across_splits == 0 and report.duplicates_within_splits == 0


@pytest.mark.parametrize("query,match", [
    ("classes=9", "between 2 and 8"),
    ("classes=circle", "at least two"),
    ("size=abc", "whole number"),
    ("colour=red", "no option colour"),
    ("noise=2", "between 0 and 1"),
    ("rotation=200", "between 0 and 180"),
])
def test_shapes_bad_options_are_sentences(query: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        load_dataset(f"builtin:shapes?{query}")


def test_unknown_builtin() -> None:
    with pytest.raises(UserError, match="no built-in dataset 'nope'"):
        load_dataset("builtin:nope")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No name resolution, as on a machine without internet."""
    def fail(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.mark.parametrize("name,fname", [
    ("mnist", "mnist.npz"),
    ("cifar10", "cifar-10-batches-py-target_archive"),
    ("fashion_mnist", "train-labels-idx1-ubyte.gz"),
])
def test_keras_sources_offline_name_the_file_and_folder(offline: None, name: str, fname: str) -> None:
    with pytest.raises(UserError) as err:
        load_dataset(f"builtin:{name}")
    text = str(err.value)
    assert fname in text and str(builtin.keras_home()) in text and "\n" not in text


def test_fashion_mnist_placed_by_hand_loads_offline(offline: None) -> None:
    folder = builtin.keras_home() / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def write(name: str, header: int, data: np.ndarray) -> None:
        with gzip.open(folder / name, "wb") as f:
            f.write(b"\0" * header + data.tobytes())

    y_train, y_test = np.repeat(np.arange(10, dtype=np.uint8), 4), np.repeat(np.arange(10, dtype=np.uint8), 2)
    write("train-labels-idx1-ubyte.gz", 8, y_train)
    write("train-images-idx3-ubyte.gz", 16, rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write("t10k-labels-idx1-ubyte.gz", 8, y_test)
    write("t10k-images-idx3-ubyte.gz", 16, rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    try:
        ds = load_dataset("builtin:fashion_mnist", SplitConfig(val_fraction=0.25))
    finally:
        shutil.rmtree(folder)
    assert ds.num_classes == 10 and ds.channels == 1 and ds.class_names[9] == "ankle_boot"
    assert {s: len(p) for s, p in ds.splits.items()} == {"train": 30, "val": 10, "test": 20}
    assert ds.splits["train"].image(0).shape == (28, 28, 1)


def _rps_zips(folder: Path) -> Path:
    src = folder / "src"
    make_class_folder(src / "rps", classes=("paper", "rock", "scissors"), per_class=6, seed=1)
    make_class_folder(src / "rps-test-set", classes=("paper", "rock", "scissors"), per_class=2, seed=2)
    site = folder / "site"
    site.mkdir()
    make_zip(src / "rps", site / "rps.zip", prefix="rps/")
    make_zip(src / "rps-test-set", site / "rps-test-set.zip", prefix="rps-test-set/")
    return site


def test_rock_paper_scissors_downloads_once_through_get_file(tmp_path: Path, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    site = _rps_zips(tmp_path)
    monkeypatch.setattr(builtin, "RPS_BASE_URL", site.as_uri() + "/")
    (home / "downloads").mkdir()
    (home / "downloads" / "rps.zip").write_bytes(b"<html>an interrupted download</html>")
    ds = load_dataset("builtin:rock_paper_scissors", home=home)
    assert ds.class_names == ["paper", "rock", "scissors"]
    assert len(ds.splits["test"]) == 6 and len(ds.splits["train"]) + len(ds.splits["val"]) == 18
    assert all("rps-test-set/" in n for n in _names(ds, "test"))
    assert (home / "downloads" / "rps.zip").is_file() and (home / "downloads" / "rps-test-set.zip").is_file()
    shutil.rmtree(site)  # the cache must be enough now
    again = load_dataset("builtin:rock_paper_scissors", home=home)
    assert again.split_hash == ds.split_hash


def test_rock_paper_scissors_offline_is_one_sentence(offline: None, home: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("builtin:rock_paper_scissors", home=home)
    text = str(err.value)
    assert "rps.zip and rps-test-set.zip" in text and str(home / "downloads") in text
    assert builtin.RPS_BASE_URL in text and "\n" not in text


# ---------------------------------------------------------------- health report


def test_health_report_counts_imbalance_sizes_and_pixels(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("a", "b"), per_class={"a": 30, "b": 6})
    save_image(make_array(1, 24), root / "b" / "big.png")
    ds = load_dataset(str(root))
    r = health_report(ds)
    assert r.num_classes == 2 and r.total_images == 37
    assert r.class_totals == {"a": 30, "b": 7}
    assert sum(r.counts["train"].values()) == len(ds.splits["train"])
    assert r.imbalance_ratio == pytest.approx(30 / 7, rel=1e-3)
    assert any("imbalanced" in w and "'b'" in w for w in r.warnings)
    assert r.sizes["top"][0] == {"size": "16x16", "count": 36} and r.sizes["max"] == [24, 24]
    assert r.channel_distribution == {"color": 37} and r.mode_distribution == {"RGB": 37}
    stats = r.pixel_stats
    assert stats["sample"] == 37 and stats["channel_names"] == ["red", "green", "blue"]
    # every image is its class colour plus symmetric noise: the mean is the pixel-weighted class colour
    pixels_a, pixels_b = 30 * 16 * 16, 6 * 16 * 16 + 24 * 24
    expected = (pixels_a * np.array(class_color(0)) + pixels_b * np.array(class_color(1))) / (pixels_a + pixels_b)
    np.testing.assert_allclose(stats["mean"], expected, atol=2.0)
    assert all(sum(c) == pixels_a + pixels_b for c in stats["histogram"]["counts"])
    json.dumps(r.to_dict())
    text = r.to_text()
    assert "2 classes, 37 images" in text and "WARNING" in text


def test_duplicates_across_splits_are_leakage(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 6, "test": 3})
    shutil.copy(root / "train" / "a" / "a_000.png", root / "test" / "a" / "copy_of_a0.png")
    # the same picture saved as BMP is the same image too
    from PIL import Image

    Image.open(root / "train" / "b" / "b_001.png").save(root / "test" / "b" / "b_again.bmp")
    ds = load_dataset(str(root))
    r = health_report(ds)
    groups = [{(i["split"], i["file"]) for i in g["items"]} for g in r.duplicates_across_splits]
    assert {("train", "train/a/a_000.png"), ("test", "test/a/copy_of_a0.png")} in groups
    assert {("train", "train/b/b_001.png"), ("test", "test/b/b_again.bmp")} in groups
    assert r.num_duplicates_across_splits == 2
    assert any("leakage" in w for w in r.warnings)


def test_report_of_array_source_and_digits_text() -> None:
    r = health_report(load_dataset("builtin:digits"))
    d = r.to_dict()
    assert d["num_classes"] == 10 and d["total_images"] == 1797 and d["num_skipped"] == 0
    assert d["channel_distribution"] == {"gray": 1797} and d["pixel_stats"]["channel_names"] == ["gray"]
    assert 0 < d["pixel_stats"]["mean"][0] < 255
    assert "10 classes, 1,797 images" in r.to_text()
