"""The frame (app.py): navigation, the shared sidebar (runs, rename, delete), teacher mode, deep links."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import make_app, record_run, texts

PAGE_TITLES = ["Data", "Train", "Evaluate", "Compare", "Classify"]


def link_labels(at) -> list[str]:
    return [link.proto.label for link in at.sidebar.get("page_link")]


def test_frame_draws_navigation_and_teacher_toggle(app_home: Path) -> None:
    at = make_app()
    at.run()
    assert not at.exception
    assert link_labels(at)[:5] == PAGE_TITLES
    assert at.title[0].value == "Data"  # the default page
    assert [t.label for t in at.sidebar.toggle] == ["Teacher mode"]
    assert "No run is training" in texts(at)


@pytest.mark.slow
def test_teacher_mode_persists_in_the_url(app_home: Path) -> None:
    at = make_app()
    at.run()
    at.sidebar.toggle[0].set_value(True).run()
    assert not at.exception
    assert at.query_params.get("teacher") in ("1", ["1"])
    # A fresh session opened with ?teacher=1 starts in teacher mode.
    fresh = make_app(query={"teacher": "1"})
    fresh.run()
    assert fresh.sidebar.toggle[0].value is True
    # ... and its first run already carries the projector CSS in the sidebar (not in the event container).
    assert any("font-size: 20px" in m.value for m in fresh.sidebar.markdown)
    plain = make_app()
    plain.run()
    assert not any("font-size: 20px" in m.value for m in plain.sidebar.markdown)


@pytest.mark.slow
def test_sidebar_lists_runs_and_renames_and_deletes(app_home: Path) -> None:
    run_id = record_run(app_home, "finished")
    at = make_app()
    at.run()
    assert not at.exception
    labels = link_labels(at)
    assert any("tiny test run" in label and "finished" in label for label in labels), labels
    assert ":blue[●]" in [m.value for m in at.sidebar.markdown]  # the finished run's status dot
    at.sidebar.text_input(key="sidebar_new_name").set_value("renamed run")
    at.sidebar.button(key="sidebar_rename").click().run()  # the form submit button
    assert not at.exception
    from ui.engine import get_store

    assert get_store().get(run_id).name == "renamed run"
    assert any("renamed run" in label for label in link_labels(at))
    at.sidebar.checkbox(key="sidebar_delete_sure").check().run()
    at.sidebar.button(key="sidebar_delete").click().run()
    assert not at.exception
    assert get_store().get(run_id) is None
    assert not any("renamed run" in label for label in link_labels(at))


def test_sidebar_shows_active_runs_with_a_link_to_train(app_home: Path) -> None:
    running = record_run(app_home, "running", name="training now")
    record_run(app_home, "queued", name="waiting")
    at = make_app()
    at.run()
    assert not at.exception
    links = {link.proto.label: link.proto for link in at.sidebar.get("page_link")}
    label = next(label for label in links if "training now" in label)
    assert "running" in label and running in links[label].query_string
    assert any("waiting" in lab and "queued" in lab for lab in links)
    dots = [m.value for m in at.sidebar.markdown]
    assert ":green[●]" in dots and ":gray[●]" in dots  # running and queued status dots


def test_deep_link_reattaches_to_the_run(app_home: Path) -> None:
    run_id = record_run(app_home, "finished")
    at = make_app(page="pages/train.py", query={"run": run_id})
    at.run()
    assert not at.exception
    assert "tiny test run" in texts(at)
    assert at.query_params.get("run") in (run_id, [run_id])


def test_unknown_run_in_the_url_is_a_sentence_not_a_crash(app_home: Path) -> None:
    at = make_app(page="pages/train.py", query={"run": "no-such-run"})
    at.run()
    assert not at.exception
    assert any("no-such-run" in w.value for w in at.warning)
