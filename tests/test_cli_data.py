"""The data commands of ``python -m core``: datasets and inspect, text and JSON, user errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from data_factory import make_array, make_class_folder, plant_bad_files, png_bytes

from core.cli import main


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_datasets_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, ["datasets", "--json"])
    by_name = {r["name"]: r for r in rows}
    assert by_name["digits"]["images"] == 1797 and by_name["cifar10"]["needs_download"] is True
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    assert "builtin:shapes" in text and "(downloads once)" in text


def test_inspect_digits_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, ["inspect", "builtin:digits", "--json"])
    assert report["num_classes"] == 10 and report["total_images"] == 1797 and report["num_skipped"] == 0
    assert sum(report["split_sizes"].values()) == 1797


def test_inspect_folder_text_lists_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_class_folder(tmp_path / "d", classes=("left", "right"), per_class=6)
    planted = plant_bad_files(root / "right")
    assert main(["inspect", str(root), "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "2 classes, 12 images" in text and "left" in text and "right" in text
    for name in planted:
        assert f"right/{name}:" in text


def test_inspect_limit_per_class_and_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_class_folder(tmp_path / "d", per_class=20)
    report = _json(capsys, ["inspect", str(root), "--json", "--limit-per-class", "10", "--val-split", "0.2",
                            "--test-split", "0.2"])
    assert report["split_sizes"] == {"train": 12, "val": 4, "test": 4}


def test_user_errors_exit_2_with_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("a/1.png", png_bytes(make_array(0, 8)))
        zf.writestr("../escape.png", png_bytes(make_array(1, 8)))
    assert main(["inspect", str(evil), "--home", str(tmp_path / "home")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "escape.png").exists()
    assert main(["inspect", "builtin:shapes?classes=1"]) == 2


def test_inspect_sign_language_digits(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_dir / "datasets" / "sign-language-digits"
    if not folder.is_dir():
        pytest.skip("../shared/datasets/sign-language-digits is absent")
    report = _json(capsys, ["inspect", str(folder), "--json"])
    assert report["num_classes"] == 10 and report["total_images"] == 2062 and report["num_skipped"] == 0
    assert {"size": "3024x3024", "count": 3} in report["sizes"]["top"]


def test_datasets_and_runs_name_library_datasets_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.config import TrainConfig
    from core.data.library import DatasetLibrary
    from core.store.runs import RunStore
    from data_factory import make_zip

    home = tmp_path / "home"
    entry = DatasetLibrary(home).add_zip(make_zip(make_class_folder(tmp_path / "d"), tmp_path / "hands.zip"))
    rows = _json(capsys, ["datasets", "--json", "--home", str(home)])
    mine = next(r for r in rows if r["source"] == entry.source)
    assert mine["name"] == "hands" and mine["classes"] == 2 and mine["images"] == 12
    store = RunStore(home)
    store.create_run(TrainConfig(data=entry.source), name="on the library")
    store.create_run(TrainConfig(data="builtin:shapes?per_class=150&size=32"), name="on shapes")
    store.create_run(TrainConfig(data=str(home / "uploads" / "9304047237c6-x.zip")), name="an old upload")
    assert main(["runs", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert "hands" in text and "shapes, 150 a class, 32 px" in text and " x " in text
    assert "library:" not in text and "?" not in text and "9304047237c6" not in text and str(home) not in text
