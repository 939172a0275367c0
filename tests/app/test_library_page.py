"""The dataset library in the app: an upload outlives its tab and the server, rename, delete, friendly names."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import _clear_streamlit_caches, make_app, texts
from tests.app.test_data_page import class_zip, metric

DATA = "pages/data.py"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def upload(at: Any, name: str = "pets.zip") -> None:
    at.segmented_control(key="data_mode").set_value("Upload a zip").run()
    at.get("file_uploader")[0].upload(name, class_zip(), "application/zip")
    at.run()
    assert not at.exception, at.exception


def open_library() -> Any:
    at = make_app(page=DATA)
    at.run()
    at.segmented_control(key="data_mode").set_value("Your datasets").run()
    assert not at.exception, at.exception
    return at


def library_table(at: Any) -> Any:
    """The library's list (the table with an 'added' column)."""
    return next(d.value for d in at.dataframe if "added" in d.value.columns)


def everything_shown(at: Any) -> str:
    """Texts, widget labels and options, tables and sidebar links: all a person can read on the page."""
    parts = [texts(at)]
    for kind in ("selectbox", "multiselect", "radio"):
        for widget in getattr(at, kind):
            parts += [str(widget.label), *map(str, widget.options)]
    parts += [d.value.to_string() for d in at.dataframe]
    parts += [str(getattr(link, "label", "")) + " " + str(getattr(link, "help", "")) for link in at.get("page_link")]
    return "\n".join(parts)


def test_an_upload_is_listed_in_a_new_tab_and_after_a_restart(app_home: Path) -> None:
    first = make_app(page=DATA)
    first.run()
    upload(first)
    assert first.query_params.get("data") in ("library:pets", ["library:pets"])
    assert "Using **pets** for training" in texts(first)
    # A restart: nothing cached in the process, a new session without the URL.
    _clear_streamlit_caches()
    at = open_library()
    table = library_table(at)
    assert table["name"].tolist() == ["pets"] and table["classes"].tolist() == [2] and table["images"].tolist() == [8]
    assert at.selectbox(key="library_pick").value == "pets"
    assert metric(at, "Classes") == "2" and metric(at, "Skipped files") == "1"
    # The health report was kept with the dataset: the restart did not compute it again.
    assert list((app_home / "library" / "pets" / "cache").glob("*.json"))
    # A shared link opens the library dataset directly.
    linked = make_app(page=DATA, query={"data": "library:pets"})
    linked.run()
    assert linked.segmented_control(key="data_mode").value == "Your datasets"
    assert metric(linked, "Classes") == "2"
    # The Train page offers it by name in every new session, whatever the Data page last chose.
    train = make_app(page="pages/train.py")
    train.run()
    assert "pets - your library" in train.selectbox(key="train_data").options


def test_rename_then_delete_asks_first_and_says_what_runs_keep(app_home: Path) -> None:
    from core.data.library import DatasetLibrary
    from tests.app.conftest import record_run

    at = make_app(page=DATA)
    at.run()
    upload(at)
    record_run(app_home, data="library:pets", name="pets run")
    at.segmented_control(key="data_mode").set_value("Your datasets").run()
    at.text_input(key="library_new_name").set_value("cats and dogs")
    at.button(key="library_rename").click().run()
    assert not at.exception and not at.error
    assert library_table(at)["name"].tolist() == ["cats and dogs"]
    assert "Using **cats and dogs** for training" in texts(at)
    at.button(key="library_delete").click().run()
    warning = " ".join(w.value for w in at.warning)
    assert "Delete 'cats and dogs'" in warning and "1 run(s) trained on it" in warning
    assert DatasetLibrary(app_home).list()  # nothing deleted before the confirmation
    at.button(key="library_delete_no").click().run()
    assert DatasetLibrary(app_home).list() and not any("Delete '" in w.value for w in at.warning)
    at.button(key="library_delete").click().run()
    at.button(key="library_delete_yes").click().run()
    assert not at.exception
    assert DatasetLibrary(app_home).list() == []
    assert "Your library is empty" in texts(at)
    # Evaluate's pictures of that run say why they are missing (its scores come from saved predictions).
    from core.data.library import library_source
    from tests.app.conftest import tiny_config
    from ui.gallery import SplitImages

    images = SplitImages(tiny_config(data=library_source("pets")), "test", ["cat/c0.png"])
    assert not images.available
    assert images.error == ("The images cannot be shown: The dataset 'cats and dogs' was deleted from the library: "
                            "upload the same zip again on the Data page to bring it back.")
    # The run that used it is named plainly, in the sidebar's run list and on the Train page's form.
    train = make_app(page="pages/train.py", query={"data": "library:pets"})
    train.run()
    shown = everything_shown(train)
    assert "cats and dogs (deleted from the library)" in shown
    assert "The dataset 'cats and dogs' was deleted from the library" in " ".join(e.value for e in train.error)


def finished_run(home: Path, data: str, name: str) -> str:
    """A finished run in ``home`` on ``data``: a real tiny run's files under another config."""
    sys.path.insert(0, str(Path(__file__).parent))
    from eval_pages_runs import BASE, copy_run, shared_home

    src_home, (run_a, _) = shared_home()
    return copy_run(src_home, run_a, home, BASE.replace(data=data, name=name), {})


@pytest.mark.slow
def test_no_page_shows_a_temp_path_hash_or_query_string(app_home: Path) -> None:
    upload_path = str(app_home / "uploads" / "9304047237c6-x.zip")
    runs = [finished_run(app_home, upload_path, "old upload"),
            finished_run(app_home, "builtin:shapes?per_class=150&size=32", "shapes run")]
    forbidden = re.compile(r"9304047237c6|per_class|size=|\?\w+=|library:|" + re.escape(str(app_home)))
    for page in ("pages/train.py", "pages/evaluate.py", "pages/compare.py", "pages/classify.py"):
        for run_id in runs:
            at = make_app(page=page, query={"run": run_id})
            at.run()
            assert not at.exception, (page, at.exception)
            shown = everything_shown(at)
            assert "shapes, 150 a class, 32 px" in shown or page == "pages/classify.py", page
            assert forbidden.search(shown) is None, (page, forbidden.search(shown), shown)
