"""Folder layouts (core.data.layouts): split folders by name and by structure, the ambiguous cases and their choices."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from data_factory import make_array, make_class_folder, make_split_folders, make_zip, save_image

from core.cli import main
from core.data.health import health_report
from core.data.layouts import split_of
from core.data.sources import describe_source, load_dataset, split_choice, with_choice
from core.errors import UserError

CIFAR_CLASSES = ("cat", "dog", "ship")


def _sizes(ds) -> dict[str, int]:
    return {s: len(p) for s, p in ds.splits.items()}


def _tops(ds, split: str) -> set[str]:
    """The top-level folders a split's files come from."""
    return {ds.relative(f).split("/")[0] for f in ds.splits[split].files}


def _cifar_copy(shared: Path, dest: Path, names: dict[str, str], per_class: dict[str, int]) -> Path:
    """Real CIFAR-10 pictures copied into ``dest/<new name>/<class>/`` from its ``train``/``test`` folders."""
    src = shared / "datasets" / "cifar10-small"
    for original, new in names.items():
        for c in CIFAR_CLASSES:
            (dest / new / c).mkdir(parents=True)
            for f in sorted((src / original / c).iterdir())[: per_class[original]]:
                shutil.copy(f, dest / new / c / f.name)
    return dest


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name, split", [
    ("train", "train"), ("Train", "train"), ("TRAINING", "train"), ("training_set", "train"),
    ("train_data", "train"), ("trainset", "train"), ("train2017", "train"), ("Training Images", "train"),
    ("val", "val"), ("valid", "val"), ("Validation", "val"), ("dev", "val"), ("val_set", "val"),
    ("test", "test"), ("testing", "test"), ("test_set", "test"), ("TestSet", "test"), ("eval", "test"),
    ("holdout", "test"), ("hold-out", "test"), ("test1", "test"),
    ("cats", None), ("seg_train", None), ("test_tube", None), ("contest", None), ("set_a", None), ("2017", None),
])
def test_split_names_are_recognised_with_their_variants(name: str, split: str | None) -> None:
    assert split_of(name) == split


# ---------------------------------------------------------------- split folders


def test_training_set_and_test_set_are_splits_not_classes(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", classes=("cats", "dogs"), per_split={"training_set": 8, "test_set": 3})
    ds = load_dataset(str(root))
    assert ds.class_names == ["cats", "dogs"]
    assert _tops(ds, "test") == {"test_set"} and _tops(ds, "train") == _tops(ds, "val") == {"training_set"}
    assert len(ds.splits["test"]) == 6
    assert ds.layout["kind"] == "splits" and ds.layout["ambiguous"] is None
    assert ds.layout["splits"] == {"train": "training_set", "test": "test_set"}
    assert ds.layout["folders"] == {"training_set": "train", "test_set": "test"}
    assert "by their names" in ds.layout["reason"]


def test_a_wrapper_inside_each_split_folder_is_opened(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "d" / "training_set" / "training_set", classes=("cats", "dogs"), per_class=6)
    make_class_folder(tmp_path / "d" / "test_set" / "test_set", classes=("cats", "dogs"), per_class=2, seed=3)
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.class_names == ["cats", "dogs"] and len(ds.splits["test"]) == 4
    assert ds.layout["splits"] == {"train": "training_set/training_set", "test": "test_set/test_set"}


def test_a_wrapper_folder_is_opened_and_said(tmp_path: Path) -> None:
    make_split_folders(tmp_path / "outer" / "pets", classes=("cats", "dogs"), per_split={"Train": 6, "Test": 2})
    ds = load_dataset(str(tmp_path / "outer"))
    assert ds.class_names == ["cats", "dogs"] and ds.layout["opened"] == ["pets"]
    assert "Everything is inside the folder 'pets', so it was opened." in ds.notes


def test_real_pictures_in_capitalised_split_folders(shared_dir: Path, tmp_path: Path) -> None:
    root = _cifar_copy(shared_dir, tmp_path / "d", {"train": "Training", "test": "Test"}, {"train": 12, "test": 4})
    ds = load_dataset(str(root))
    assert ds.class_names == list(CIFAR_CLASSES)
    assert len(ds.splits["test"]) == 12 and _tops(ds, "test") == {"Test"}
    assert list(ds.layout["folders"].items()) == [("Training", "train"), ("Test", "test")]


# ---------------------------------------------------------------- the structural rule


def test_folders_holding_the_same_classes_are_splits_whatever_their_names(shared_dir: Path, tmp_path: Path) -> None:
    root = _cifar_copy(shared_dir, tmp_path / "d", {"train": "set_a", "test": "set_b"}, {"train": 12, "test": 4})
    ds = load_dataset(str(root))
    assert ds.class_names == list(CIFAR_CLASSES)
    assert ds.layout["splits"] == {"train": "set_a", "test": "set_b"}  # the larger one trains
    assert "36 pictures" in ds.layout["reason"] and "12 pictures" in ds.layout["reason"]
    assert _tops(ds, "test") == {"set_b"}
    question = ds.layout["ambiguous"]
    assert question and "set_a and set_b" in question["sentence"]
    by_layout = {c["layout"]: c for c in question["choices"]}
    assert by_layout["splits"]["current"] and not by_layout["classes"]["current"]
    assert by_layout["splits"]["source"] == str(root)  # the automatic reading needs no choice in the source
    assert by_layout["classes"]["label"] == "set_a and set_b as classes"
    as_classes = load_dataset(by_layout["classes"]["source"])
    assert as_classes.class_names == ["set_a", "set_b"] and as_classes.layout["kind"] == "classes"
    assert {c["layout"]: c["current"] for c in as_classes.layout["ambiguous"]["choices"]} == {"splits": False,
                                                                                               "classes": True}
    # the choice is part of the source: loading it again gives the same split
    assert load_dataset(by_layout["classes"]["source"]).split_hash == as_classes.split_hash


def test_a_split_word_inside_a_name_says_which_split(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "d" / "seg_test" / "seg_test", classes=("sea", "street", "forest"), per_class=5)
    make_class_folder(tmp_path / "d" / "seg_train" / "seg_train", classes=("sea", "street", "forest"), per_class=3)
    for i in range(3):
        save_image(make_array(i), tmp_path / "d" / "seg_pred" / "seg_pred" / f"{i}.png")
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.layout["splits"] == {"train": "seg_train/seg_train", "test": "seg_test/seg_test"}  # not by size
    assert ds.layout["folders"]["seg_pred"] == "left out" and ds.layout["ambiguous"] is None
    assert len(ds.splits["test"]) == 15


def test_nearly_the_same_classes_are_splits_whose_difference_is_one_sentence(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "d" / "part_one", classes=("a", "b", "c", "d", "e"), per_class=4)
    make_class_folder(tmp_path / "d" / "part_two", classes=("a", "b", "c", "d"), per_class=2, seed=1)
    with pytest.raises(UserError, match=r"^The test folder \(part_two\) and the training folder \(part_one\) hold "
                                        r"different classes \(missing from part_two: e\)"):
        load_dataset(str(tmp_path / "d"))


def test_folders_with_different_sub_folders_are_classes(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "d" / "cats", classes=("indoor", "outdoor"), per_class=3)
    make_class_folder(tmp_path / "d" / "dogs", classes=("beach", "park"), per_class=3, seed=1)
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.class_names == ["cats", "dogs"] and ds.layout["kind"] == "classes" and ds.layout["ambiguous"] is None


def test_four_folders_with_the_same_sub_folders_stay_classes(tmp_path: Path) -> None:
    for k, fold in enumerate(("north", "south", "east", "west")):
        make_class_folder(tmp_path / "d" / fold, classes=("a", "b"), per_class=3, seed=k)
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.class_names == ["east", "north", "south", "west"]
    with pytest.raises(UserError, match="Only two or three folders"):
        load_dataset(f"{tmp_path / 'd'}?layout=splits")


def test_class_folders_that_each_hold_split_folders(tmp_path: Path) -> None:
    for k, c in enumerate(("cats", "dogs")):
        make_class_folder(tmp_path / "d" / c, classes=("train", "test"), per_class=4, seed=k)
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.class_names == ["cats", "dogs"] and ds.layout["kind"] == "class-splits"
    assert {ds.relative(f).split("/")[1] for f in ds.splits["test"].files} == {"test"}
    assert len(ds.splits["test"]) == 8


# ---------------------------------------------------------------- ambiguous layouts


def test_a_lone_test_folder_beside_class_folders(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("cats", "dogs"), per_class=8)
    make_class_folder(root / "test", classes=("cats", "dogs"), per_class=2, seed=4)
    ds = load_dataset(str(root))
    assert ds.class_names == ["cats", "dogs"] and _tops(ds, "test") == {"test"} and len(ds.splits["test"]) == 4
    assert "test" not in _tops(ds, "train")
    question = ds.layout["ambiguous"]
    assert question["sentence"].count(".") == 1  # one sentence
    labels = {c["layout"]: c["label"] for c in question["choices"]}
    assert labels == {"splits": "cats and dogs as classes to train on, test for testing",
                      "classes": "cats, dogs and test as classes"}
    chosen = load_dataset(next(c["source"] for c in question["choices"] if c["layout"] == "classes"))
    assert chosen.class_names == ["cats", "dogs", "test"]


def test_a_split_name_beside_class_folders_without_their_classes_is_a_class(tmp_path: Path) -> None:
    ds = load_dataset(str(make_class_folder(tmp_path / "d", classes=("valid", "invalid"), per_class=5)))
    assert ds.class_names == ["invalid", "valid"]
    assert "valid looks like a validation folder name" in ds.layout["ambiguous"]["sentence"]


def test_class_folders_mixed_with_split_folders(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", classes=("cats", "dogs"), per_split={"train": 6, "test": 2})
    make_class_folder(root, classes=("cats",), per_class=3, seed=7)
    ds = load_dataset(str(root))
    assert ds.class_names == ["cats", "dogs"] and ds.layout["left_out"] == ["cats"]
    assert "a folder that looks like a class (cats), which was left out" in ds.layout["ambiguous"]["sentence"]
    assert any("Left out: cats" in n for n in ds.notes)


def test_a_folder_holding_only_a_test_folder_is_divided(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "d" / "test", classes=("cats", "dogs"), per_class=10)
    ds = load_dataset(str(tmp_path / "d"))
    assert ds.class_names == ["cats", "dogs"] and _sizes(ds) == {"train": 12, "val": 4, "test": 4}
    assert {ds.relative(f).split("/")[0] for s in ds.splits.values() for f in s.files} == {"test"}
    assert ds.layout["folders"] == {"test": "all"} and "The only folder, test" in ds.layout["reason"]


def test_layout_and_root_choices_are_checked(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 4, "test": 2})
    with pytest.raises(UserError, match="not a layout"):
        load_dataset(f"{root}?layout=sideways")
    ds = load_dataset(f"{root}?root=train")
    assert ds.class_names == ["a", "b"] and ds.total_images == 8
    with pytest.raises(UserError, match="has no folder '../..'"):
        load_dataset(f"{root}?root=../..")


def test_a_choice_is_kept_apart_from_what_was_typed() -> None:
    assert split_choice("/data/pets?layout=classes&sep=_") == ("/data/pets?sep=_", {"layout": "classes"})
    assert with_choice("/data/pets?sep=_", {"layout": "classes"}) == "/data/pets?sep=_&layout=classes"
    assert with_choice("/data/pets?layout=classes", {"layout": ""}) == "/data/pets"
    assert describe_source("/data/pets?layout=classes") == "/data/pets (every folder read as a class)"
    assert describe_source("builtin:digits") == "builtin:digits"


# ---------------------------------------------------------------- zips


def test_a_zip_holding_a_zip_names_it(tmp_path: Path, home: Path) -> None:
    inner = make_zip(make_class_folder(tmp_path / "src"), tmp_path / "inner.zip")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "data/inner.zip")
        zf.writestr("data/readme.txt", "hi")
    with pytest.raises(UserError) as err:
        load_dataset(str(outer), home=home)
    assert str(err.value) == "This zip holds another zip (inner.zip): unzip it once, or upload inner.zip."


def test_a_zip_with_pictures_and_a_zip_says_the_zip_was_not_opened(tmp_path: Path, home: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("more.zip", b"PK")
    src = make_class_folder(tmp_path / "src", per_class=4)
    (src / "more.zip").write_bytes(buf.getvalue())
    ds = load_dataset(str(make_zip(src, tmp_path / "pets.zip")), home=home)
    assert ds.class_names == ["a", "b"]
    assert any("another zip (more.zip), which was not opened" in n for n in ds.notes)


def test_a_folder_holding_only_a_zip_says_so(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    make_zip(make_class_folder(tmp_path / "src"), tmp_path / "d" / "pets.zip")
    with pytest.raises(UserError, match=r"This folder holds a zip \(pets.zip\) but no pictures"):
        load_dataset(str(tmp_path / "d"))


# ---------------------------------------------------------------- the report and the command line


def test_inspect_json_names_the_split_each_folder_was_taken_for(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_split_folders(tmp_path / "d", classes=("cats", "dogs"), per_split={"training_set": 6, "test_set": 2})
    assert main(["inspect", str(root), "--json"]) == 0
    layout = json.loads(capsys.readouterr().out)["layout"]
    assert layout["folders"] == {"training_set": "train", "test_set": "test"}
    assert main(["inspect", str(root)]) == 0
    assert "training_set -> train, test_set -> test" in capsys.readouterr().out


def test_inspect_layout_option_is_the_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_split_folders(tmp_path / "d", classes=("cats", "dogs"), per_split={"set_a": 6, "set_b": 2})
    assert main(["inspect", str(root), "--json", "--layout", "classes"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == ["set_a", "set_b"] and report["layout"]["kind"] == "classes"


def test_health_report_of_a_builtin_has_no_layout() -> None:
    assert health_report(load_dataset("builtin:digits")).layout is None



def test_two_folders_named_for_one_split_keep_the_first(tmp_path: Path) -> None:
    root = make_split_folders(tmp_path / "d", per_split={"train": 4, "test": 2, "testing": 2})
    ds = load_dataset(str(root))
    assert ds.layout["folders"] == {"train": "train", "test": "test", "testing": "left out"}
    assert ds.layout["ambiguous"] is None and "Left out: testing (test is already the test folder)." in ds.notes
