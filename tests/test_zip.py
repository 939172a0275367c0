"""Zip sources: extracted safely under the home folder, reused, and refused when malicious."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest
from data_factory import make_array, make_class_folder, make_split_folders, make_zip, png_bytes

from core.data import zips
from core.data.sources import load_dataset
from core.data.zips import extract_zip
from core.errors import UserError


def _extracted(home: Path) -> list[Path]:
    base = home / "datasets"
    return sorted(base.iterdir()) if base.is_dir() else []


def test_zip_of_class_folders_loads_and_is_reused(tmp_path: Path, home: Path) -> None:
    folder = make_class_folder(tmp_path / "src", classes=("cat", "dog"), per_class=5)
    zpath = make_zip(folder, tmp_path / "pets.zip", prefix="pets/")
    ds = load_dataset(str(zpath), home=home)
    assert ds.name == "pets" and ds.class_names == ["cat", "dog"] and ds.total_images == 10
    (target,) = _extracted(home)
    assert Path(ds.root).is_relative_to(target)
    marker = target / ".complete"
    stamp = marker.stat().st_mtime_ns
    again = load_dataset(str(zpath), home=home)
    assert marker.stat().st_mtime_ns == stamp and _extracted(home) == [target]
    assert again.split_hash == ds.split_hash
    # the same images unzipped by hand give the same split
    assert load_dataset(str(folder), home=home).split_hash == ds.split_hash


def test_zip_of_split_folders(tmp_path: Path, home: Path) -> None:
    folder = make_split_folders(tmp_path / "src", per_split={"train": 4, "val": 2, "test": 2})
    ds = load_dataset(str(make_zip(folder, tmp_path / "s.zip")), home=home)
    assert {s: len(p) for s, p in ds.splits.items()} == {"train": 8, "val": 4, "test": 4}


def test_macosx_hidden_and_non_image_entries_are_not_extracted(tmp_path: Path, home: Path) -> None:
    zpath = tmp_path / "mac.zip"
    png = png_bytes(make_array(0, 8))
    with zipfile.ZipFile(zpath, "w") as zf:
        for c, k in (("a", 0), ("b", 1)):
            for i in range(3):
                zf.writestr(f"set/{c}/{i}.png", png_bytes(make_array(k, 8)) if i else png_bytes(make_array(k, 9)))
        zf.writestr("__MACOSX/set/a/._0.png", b"resource fork")
        zf.writestr("set/.DS_Store", b"finder")
        zf.writestr("set/a/.hidden.png", png)
        zf.writestr("set/a/readme.txt", b"text")
    target = extract_zip(zpath, home)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == [".complete"] + [f"set/{c}/{i}.png" for c in "ab" for i in range(3)]
    ds = load_dataset(str(zpath), home=home)
    assert ds.total_images == 6 and ds.skipped == []


def _assert_refused(zpath: Path, home: Path, match: str) -> None:
    with pytest.raises(UserError, match=match):
        load_dataset(str(zpath), home=home)
    assert _extracted(home) == []


def test_parent_traversal_is_refused_and_nothing_is_written(tmp_path: Path, home: Path) -> None:
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for c in ("a", "b"):
            zf.writestr(f"{c}/1.png", png_bytes(make_array(0, 8)))
        zf.writestr("../evil.png", png_bytes(make_array(1, 8)))
        zf.writestr("a/../../evil2.png", png_bytes(make_array(1, 8)))
    _assert_refused(zpath, home, r"refused because its entry '\.\./evil\.png' points outside")
    assert not (home / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert not (home.parent / "evil2.png").exists() and not (home / "datasets" / "evil.png").exists()


def test_absolute_entry_is_refused(tmp_path: Path, home: Path) -> None:
    zpath = tmp_path / "abs.zip"
    outside = tmp_path / "abs_target.png"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a/1.png", png_bytes(make_array(0, 8)))
        info = zipfile.ZipInfo(str(outside))  # ZipInfo keeps the leading slash as given
        zf.writestr(info, png_bytes(make_array(1, 8)))
    assert any(n.startswith("/") for n in zipfile.ZipFile(zpath).namelist())
    _assert_refused(zpath, home, "absolute path")
    assert not outside.exists()


def test_symlink_entry_is_refused(tmp_path: Path, home: Path) -> None:
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a/1.png", png_bytes(make_array(0, 8)))
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    _assert_refused(zpath, home, "symbolic link")


def test_size_count_and_ratio_limits(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_class_folder(tmp_path / "src", per_class=4)
    zpath = make_zip(folder, tmp_path / "many.zip")
    monkeypatch.setattr(zips, "ZIP_MAX_FILES", 5)
    _assert_refused(zpath, home, "more than the limit of 5")
    monkeypatch.setattr(zips, "ZIP_MAX_FILES", 1000)
    monkeypatch.setattr(zips, "ZIP_MAX_BYTES", 1000)
    _assert_refused(zpath, home, "would unpack to")
    monkeypatch.setattr(zips, "ZIP_MAX_BYTES", 1 << 30)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/1.png", png_bytes(make_array(0, 8)))
        zf.writestr("b/zeros.png", b"\0" * (8 << 20))  # 8 MB of zeros compress ~1000 times
    _assert_refused(bomb, home, "zip bombs")


def test_not_a_zip_and_damaged_zip(tmp_path: Path, home: Path) -> None:
    folder = make_class_folder(tmp_path / "src", per_class=3)
    good = make_zip(folder, tmp_path / "good.zip").read_bytes()
    broken = tmp_path / "broken.zip"
    # keep the directory at the end (still recognised as a zip) but scramble the first entry's data
    broken.write_bytes(good[:40] + bytes(b ^ 0xFF for b in good[40:200]) + good[200:])
    with pytest.raises(UserError, match="'broken.zip' is not a readable zip file"):
        load_dataset(str(broken), home=home)
    base = home / "datasets"
    assert not base.exists() or list(base.iterdir()) == []  # no half-extracted folder left behind
