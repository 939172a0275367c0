"""Dataset names in words: built-in options, library entries (renamed, deleted), folders and zips."""

from __future__ import annotations

import re
from pathlib import Path

from core.data.builtin import list_builtin
from core.data.library import DatasetLibrary
from core.data.naming import source_label
from tests.data_factory import make_class_folder, make_zip


def test_builtin_options_read_as_words() -> None:
    assert source_label("builtin:shapes?per_class=150&size=32") == "shapes, 150 a class, 32 px"
    assert source_label("builtin:shapes?classes=6&seed=3") == "shapes, 6 kinds, seed 3"
    assert source_label("builtin:shapes?classes=circle,star&noise=0.1&rotation=45") == (
        "shapes, circle and star, 10% noise, turned up to 45°")
    assert source_label("builtin:fashion_mnist") == "Fashion-MNIST"


def test_every_builtin_and_every_shapes_option_has_a_name_without_code() -> None:
    names = {b.name: source_label(f"builtin:{b.name}") for b in list_builtin()}
    assert all(label and ":" not in label and "_" not in label for label in names.values()), names
    options = next(b.params for b in list_builtin() if b.name == "shapes")
    label = source_label(f"builtin:shapes?{options}")
    assert "=" not in label and "&" not in label and "_" not in label and "?" not in label, label


def test_paths_read_as_their_names_without_hash_or_query() -> None:
    assert source_label("/tmp/abc/uploads/9304047237c6-x.zip") == "x"
    assert source_label("/home/me/pictures/bears/") == "bears"
    assert source_label("/home/me/flat?sep=_") == "flat"
    assert source_label("") == "no dataset"


def test_library_entries_read_as_their_current_name(home: Path, tmp_path: Path) -> None:
    folder = make_class_folder(tmp_path / "src", classes=("a", "b"), per_class=3)
    library = DatasetLibrary(home)
    entry = library.add_zip(make_zip(folder, tmp_path / "hands.zip"))
    assert source_label(entry.source, library) == "hands"
    library.rename(entry.id, "hand signs")
    assert source_label(entry.source, DatasetLibrary(home)) == "hand signs"
    library.delete(entry.id)
    label = source_label(entry.source, library)
    assert label == "hand signs (deleted from the library)"
    assert not re.search(r"[0-9a-f]{12}", label)
