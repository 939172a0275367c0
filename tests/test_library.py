"""The dataset library: stored once, survives a restart, rename, delete (and what runs then read), caches."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import SplitConfig
from core.data.library import DatasetLibrary, display_stem, library_id, library_source
from core.data.sources import load_dataset
from core.errors import UserError
from tests.data_factory import make_class_folder, make_zip


def hands_zip(tmp_path: Path, name: str = "hands.zip", per_class: int = 6, seed: int = 0) -> Path:
    folder = make_class_folder(tmp_path / f"src-{seed}", classes=("rock", "paper"), per_class=per_class, seed=seed)
    return make_zip(folder, tmp_path / name, prefix="hands/")


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_an_added_zip_is_listed_by_a_new_library_object_over_the_same_home(home: Path, tmp_path: Path) -> None:
    entry = DatasetLibrary(home).add_zip(hands_zip(tmp_path))
    assert entry.name == "hands" and entry.kind == "zip"
    assert entry.class_names == ["paper", "rock"] and entry.images == 12
    # A restart: nothing in memory, only the home folder.
    again = DatasetLibrary(home)
    assert [e.id for e in again.list()] == [entry.id]
    listed = again.get(entry.id)
    assert listed is not None and listed.name == "hands" and listed.images == 12 and listed.added == entry.added
    ds = load_dataset(entry.source, SplitConfig(seed=1), home=home)
    assert ds.name == "hands" and ds.class_names == ["paper", "rock"] and ds.total_images == 12


def test_the_same_content_is_stored_once_and_bytes_work_like_a_path(home: Path, tmp_path: Path) -> None:
    library = DatasetLibrary(home)
    path = hands_zip(tmp_path)
    first = library.add_zip(path)
    second = library.add_zip(path.read_bytes(), file_name="copy of hands.zip")
    assert second.id == first.id and second.name == "hands"
    other = library.add_zip(hands_zip(tmp_path, seed=3, name="other.zip"), file_name="hands.zip")
    assert other.id != first.id and other.name == "hands (2)"  # another dataset, a name that tells them apart
    assert len(library.list()) == 2
    assert not list((home / "library").glob(".staging-*")) and not list((home / "library").glob(".incoming-*"))


def test_rename_keeps_the_id_so_runs_keep_their_data(home: Path, tmp_path: Path) -> None:
    library = DatasetLibrary(home)
    entry = library.add_zip(hands_zip(tmp_path))
    before = load_dataset(entry.source, home=home).split_hash
    renamed = library.rename(entry.id, "  Rock  and paper ")
    assert renamed.id == entry.id and renamed.name == "Rock and paper"
    assert DatasetLibrary(home).get(entry.id).name == "Rock and paper"
    ds = load_dataset(entry.source, home=home)
    assert ds.name == "Rock and paper" and ds.split_hash == before
    other = library.add_zip(hands_zip(tmp_path, seed=5, name="x.zip"))
    with pytest.raises(UserError, match="already a dataset called 'Rock and paper'"):
        library.rename(other.id, "rock AND paper")
    with pytest.raises(UserError, match="needs a name"):
        library.rename(other.id, "   ")


def test_a_deleted_dataset_says_plainly_that_it_is_gone(home: Path, tmp_path: Path) -> None:
    library = DatasetLibrary(home)
    entry = library.add_zip(hands_zip(tmp_path))
    folder = entry.folder
    library.delete(entry.id)
    assert not folder.exists() and library.list() == [] and library.get(entry.id) is None
    assert DatasetLibrary(home).name_of(entry.id) == "hands"
    with pytest.raises(UserError, match="The dataset 'hands' was deleted from the library"):
        load_dataset(entry.source, home=home)
    with pytest.raises(UserError, match="no dataset 'nothing-here'"):
        load_dataset(library_source("nothing-here"), home=home)
    # A new dataset never inherits the deleted one's id (old runs must not read other pictures) ...
    fresh = library.add_zip(hands_zip(tmp_path, seed=9, name="hands.zip"))
    assert fresh.id != entry.id and fresh.name == "hands"
    # ... but the same zip again brings the same entry back, and its runs work again.
    back = library.add_zip(hands_zip(tmp_path))
    assert back.id == entry.id and load_dataset(entry.source, home=home).total_images == 12


def test_a_zip_without_pictures_is_refused_and_leaves_nothing(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "notes.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no pictures here")
    library = DatasetLibrary(home)
    with pytest.raises(UserError, match="'notes' holds no pictures"):
        library.add_zip(empty)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("a/x.png", b"not a png")
        zf.writestr("b/y.png", b"not a png either")
    with pytest.raises(UserError, match="None of the pictures in 'broken.zip'"):
        library.add_zip(broken)
    assert library.list() == []
    assert [p.name for p in (home / "library").iterdir() if p.is_dir()] == []  # no folder, no staging left
    assert json.loads((home / "library" / "library.json").read_text())["entries"] == []


def test_recorded_datasets_are_written_class_by_class(home: Path) -> None:
    library = DatasetLibrary(home)
    entry = library.create("my hands")
    assert entry.kind == "recorded" and entry.images == 0 and entry.folder.is_dir()
    files = library.add_images(entry.id, "thumbs up", [jpeg(10), jpeg(60)])
    library.add_images(entry.id, "thumbs down", [jpeg(200), jpeg(250)])
    more = library.add_images(entry.id, "thumbs up", [jpeg(120)])
    assert [p.name for p in files + more] == ["00001.jpg", "00002.jpg", "00003.jpg"]
    assert all(p.parent == entry.folder / "thumbs up" for p in files)
    now = DatasetLibrary(home).get(entry.id)
    assert now.class_names == ["thumbs down", "thumbs up"] and now.images == 5
    ds = load_dataset(entry.source, SplitConfig(val_fraction=0.0, test_fraction=0.0), home=home)
    assert ds.class_names == ["thumbs down", "thumbs up"] and ds.total_images == 5
    with pytest.raises(UserError, match="class needs a name"):
        library.add_images(entry.id, " / ", [jpeg(1)])


def test_cached_blobs_survive_a_restart_and_are_dropped_when_the_images_change(home: Path) -> None:
    library = DatasetLibrary(home)
    entry = library.create("cams")
    library.add_images(entry.id, "a", [jpeg(1)])
    library.cache_put(entry.id, "health:split-1", {"classes": 1, "sizes": [12, 12]})
    assert DatasetLibrary(home).cache_get(entry.id, "health:split-1") == {"classes": 1, "sizes": [12, 12]}
    assert library.cache_get(entry.id, "health:split-2") is None
    calls = []
    assert library.cached(entry.id, "near", lambda: calls.append(1) or [[1, 2]]) == [[1, 2]]
    assert library.cached(entry.id, "near", lambda: calls.append(1) or [[3]]) == [[1, 2]] and calls == [1]
    library.add_images(entry.id, "b", [jpeg(200)])
    assert library.cache_get(entry.id, "health:split-1") is None
    library.delete(entry.id)
    library.cache_put(entry.id, "x", 1)  # a deleted entry keeps nothing
    assert library.cache_get(entry.id, "x") is None


def test_concurrent_writers_lose_no_entry(home: Path) -> None:
    errors: list[BaseException] = []

    def make(n: int) -> None:
        try:
            DatasetLibrary(home).create(f"set {n}")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(e.name for e in DatasetLibrary(home).list()) == [f"set {n}" for n in range(8)]


def test_ids_and_stems() -> None:
    assert library_id("library:hands") == "hands" and library_id("library:hands?sep=_") == "hands"
    assert library_id("builtin:digits") is None and library_id("/data/library:x") is None
    assert display_stem("/tmp/x/uploads/9304047237c6-pets.zip") == "pets"
    assert display_stem("/home/me/pictures/bears/") == "bears"
    assert display_stem("/home/x/datasets/0123456789abcdef") == "an unpacked zip"
    assert display_stem("deadbeef-cats.zip") == "deadbeef-cats"  # a person's own name stays whole


def test_a_library_zip_that_also_holds_a_zip_says_so_and_keeps_its_pictures(tmp_path: Path) -> None:
    z = hands_zip(tmp_path)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("more.zip", b"PK\x05\x06" + b"\0" * 18)  # an empty zip inside
    entry = DatasetLibrary(tmp_path / "home").add_zip(z)
    ds = load_dataset(entry.source, home=tmp_path / "home")
    assert entry.images == 12
    assert any("another zip (more.zip)" in n for n in ds.notes)


def test_a_new_library_object_sees_a_change_made_through_another(tmp_path: Path) -> None:
    first, second = DatasetLibrary(tmp_path / "home"), DatasetLibrary(tmp_path / "home")
    entry = first.add_zip(hands_zip(tmp_path))
    assert second.get(entry.id) is not None  # read, and remembered
    first.rename(entry.id, "signs")
    assert second.get(entry.id).name == "signs"  # the changed manifest is read again
