"""The Data page: built-in picker, zip upload, folder path, split settings and the health report."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.app.conftest import make_app, texts

DATA = "pages/data.py"


def png(color: tuple[int, int, int], size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def class_zip() -> bytes:
    """Two classes of four distinct small PNGs, plus a corrupt 'image' that must be skipped."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            zf.writestr(f"pets/cat/c{i}.png", png((200, 40 * i, 10)))
            zf.writestr(f"pets/dog/d{i}.png", png((10, 40 * i, 200)))
        zf.writestr("pets/dog/broken.png", b"this is not a png")
    return buf.getvalue()


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_builtin_dataset_shows_the_health_report(app_home: Path) -> None:
    at = make_app(page=DATA, query={"data": "builtin:digits"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="data_builtin").value == "builtin:digits"
    assert metric(at, "Classes") == "10"
    assert metric(at, "Images") == "1,797"
    shown = texts(at)
    assert "Health report" in shown and "Sample images" in shown
    assert len(at.get("plotly_chart")) >= 3  # counts per class and split, sizes, channels (+ brightness)
    assert len(at.get("image")) == 10  # one row of samples per class
    # Every headline number is explained right under it.
    assert "Different labels the model will learn" in shown
    # The choice travels to the Train page in the URL.
    assert at.query_params.get("data") in ("builtin:digits", ["builtin:digits"])


def test_uploaded_zip_is_checked_and_skipped_files_listed(app_home: Path) -> None:
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Upload a zip").run()
    assert not at.exception
    at.get("file_uploader")[0].upload("pets.zip", class_zip(), "application/zip")
    at.run()
    assert not at.exception
    assert metric(at, "Classes") == "2"
    assert metric(at, "Skipped files") == "1"
    skipped = next(d for d in at.dataframe if "broken.png" in d.value.to_string())
    assert "broken.png" in skipped.value["path"].iloc[0]
    assert skipped.value["reason"].iloc[0]  # every skipped file says why
    assert list((app_home / "uploads").glob("*-pets.zip"))  # saved under the CNN Lab home


def test_missing_folder_is_a_sentence_not_a_traceback(app_home: Path) -> None:
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Folder or zip on this computer").run()
    at.text_input(key="data_path").set_value(str(app_home / "no-such-folder")).run()
    assert not at.exception
    assert len(at.error) == 1 and "no-such-folder" in at.error[0].value


def test_impossible_split_is_a_sentence(app_home: Path) -> None:
    at = make_app(page=DATA, query={"data": "builtin:digits"})
    at.run()
    at.slider(key="data_val").set_value(50)
    at.slider(key="data_test").set_value(50).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Validation and test together must leave at least 10 % of the images for training."
    ]


def test_split_settings_are_used_for_the_report_and_the_train_page(app_home: Path) -> None:
    at = make_app(page=DATA, query={"data": "builtin:digits"})
    at.run()
    at.number_input(key="data_limit").set_value(20).run()
    assert not at.exception
    assert metric(at, "Images") == "200"  # 10 classes x at most 20 images
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.selectbox(key="train_data").value == "builtin:digits"
    assert "at most 20 images a class" in texts(at)


def split_folders(root: Path, names: tuple[str, str]) -> Path:
    """Two folders holding the same cat/dog class folders (the first one larger)."""
    for n, (name, count) in enumerate(zip(names, (6, 3))):
        for i in range(count):
            for c, base in (("cat", (200, 40, 10)), ("dog", (10, 40, 200))):
                folder = root / name / c
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{c}{n}{i}.png").write_bytes(png((base[0], 30 * i + n, base[2])))
    return root


def test_split_folders_with_any_names_are_read_as_splits_and_the_choice_is_offered(app_home: Path) -> None:
    root = split_folders(app_home / "pets", ("set_a", "set_b"))
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Folder or zip on this computer").run()
    at.text_input(key="data_path").set_value(str(root)).run()
    assert not at.exception and not at.error
    assert metric(at, "Classes") == "2"
    shown = texts(at)
    assert "**cat**" in shown and "**set_a**" not in shown  # sample rows: one per class
    assert "set_a for training (the largest" in shown and "set_a: training · set_b: test" in shown
    assert "set_a and set_b were taken for training and test sets" in at.warning[0].value
    (radio,) = at.radio
    assert list(radio.options) == ["set_a for training, set_b for testing", "set_a and set_b as classes"]
    radio.set_value(1).run()
    assert not at.exception
    assert at.text_input(key="data_path").value == str(root)  # the typed path, never a query string
    assert metric(at, "Classes") == "2" and "**set_a**" in texts(at) and "layout=" not in texts(at)
    assert at.query_params.get("data") in (f"{root}?layout=classes", [f"{root}?layout=classes"])
    assert "every folder read as a class" in at.success[0].value
    # back to the automatic reading
    at.radio[0].set_value(0).run()
    assert metric(at, "Classes") == "2"
    assert at.query_params.get("data") in (str(root), [str(root)])


def test_a_zip_holding_a_zip_is_one_sentence(app_home: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner.zip", class_zip())
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Upload a zip").run()
    at.get("file_uploader")[0].upload("outer.zip", buf.getvalue(), "application/zip")
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["This zip holds another zip (inner.zip): unzip it once, or upload inner.zip."]
