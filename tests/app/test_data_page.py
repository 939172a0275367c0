"""The Data page: built-in picker, zip upload, folder path, split settings and the health report."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.app.conftest import make_app, texts
from tests.data_factory import make_scene_splits, save_image

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
    from core.data.library import DatasetLibrary

    assert [e.name for e in DatasetLibrary(app_home).list()] == ["pets"]  # kept in the library, by its name


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


def near_copy_folder(root: Path) -> Path:
    """Own train / val / test folders; two test pictures are mirror images of training ones (near-copies)."""
    make_scene_splits(root, {"train": 6, "val": 2, "test": 2})
    for name in ("a", "b"):
        mirror = np.asarray(Image.open(root / "train" / name / f"{name}_000.png"))[:, ::-1]
        save_image(mirror, root / "test" / name / f"{name}_mirror.png")
    return root


def near_copy_table(at):
    """The table of every near-copy group (one row per picture)."""
    return next(d.value for d in at.dataframe if list(d.value.columns) == ["group", "split", "file", "label"])


def open_folder(path: Path):
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Folder or zip on this computer").run()
    at.text_input(key="data_path").set_value(str(path)).run()
    assert not at.exception and not at.error
    return at


def test_near_copies_across_splits_are_shown_and_one_click_sets_them_aside(app_home: Path) -> None:
    at = open_folder(near_copy_folder(app_home / "scenes"))
    assert metric(at, "Copies across splits") == "2"
    assert "Near-copies" in [s.value for s in at.subheader]
    (warning,) = [w.value for w in at.warning if "group(s) of near-copies" in w.value]
    assert "2 of the 6 test pictures are copies or near-copies of pictures the model" in warning
    table = near_copy_table(at)
    assert set(table["split"]) == {"training", "test"} and table["group"].nunique() == 2
    assert {"test/a/a_mirror.png", "train/a/a_000.png"} <= set(table["file"])
    shown = texts(at)
    assert "**Group 1** · training + test · class a" in shown and "**Group 3**" not in shown
    assert len(at.get("image")) == 2 + 2  # a row of samples per class, a row of thumbnails per group

    at.button(key="data_set_aside_button").click().run()
    assert not at.exception
    assert metric(at, "Copies across splits") == "0"
    assert at.success[-1].value.startswith("2 of the 6 test pictures were copies or near-copies of training "
                                            "or validation pictures and were set aside: test scores are on the other 4.")
    assert not [w for w in at.warning if "near-copies" in w.value]  # neither the report's nor the check's
    assert "data_set_aside_button" not in [b.key for b in at.button]
    at.switch_page("pages/train.py").run()  # the Train page trains on this split
    assert not at.exception and "near-copies of training pictures set aside" in texts(at)
    at.switch_page(DATA).run()
    assert metric(at, "Copies across splits") == "0"

    at.button(key="data_put_back").click().run()
    assert metric(at, "Copies across splits") == "2"
    assert '"drop_duplicates": false' in at.session_state["cnnlab_split_json"]


def test_a_folder_whose_copies_stay_inside_one_split_says_so(app_home: Path) -> None:
    root = make_scene_splits(app_home / "scenes", {"train": 6, "val": 2, "test": 2})
    mirror = np.asarray(Image.open(root / "train" / "a" / "a_000.png"))[:, ::-1]
    save_image(mirror, root / "train" / "a" / "a_mirror.png")
    at = open_folder(root)
    assert metric(at, "Copies across splits") == "0"
    assert any("Each group is kept inside one split" in i.value for i in at.info)
    assert "data_set_aside_button" not in [b.key for b in at.button]
    assert set(near_copy_table(at)["split"]) == {"training"}


def test_built_in_datasets_say_only_identical_pictures_were_compared(app_home: Path) -> None:
    at = make_app(page=DATA, query={"data": "builtin:digits"})
    at.run()
    assert "only identical pictures were compared" in texts(at)


def test_a_real_export_split_by_hand_shows_its_near_copies_and_sets_them_aside(app_home: Path, shared_dir: Path,
                                                                                tmp_path: Path) -> None:
    from tests.variant_factory import make_variant_export, split_export

    variants = make_variant_export(shared_dir / "datasets" / "sign-language-digits", tmp_path, per_class=3)
    root = split_export(variants, app_home / "hands")
    at = open_folder(root)
    crossing = int(metric(at, "Copies across splits"))
    assert crossing >= 1
    table = near_copy_table(at)
    assert {"training", "test"} <= set(table[table["group"] == 1]["split"])  # groups that cross come first
    at.button(key="data_set_aside_button").click().run()
    assert not at.exception
    assert metric(at, "Copies across splits") == "0"
    after = near_copy_table(at).groupby("group")["split"].agg(set)
    assert not [g for g in after if "training" in g and len(g) > 1]  # no group crosses out of training any more
    assert "pictures were copies or near-copies of training" in at.success[-1].value
