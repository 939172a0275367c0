"""The Compare page on a real tiny engine: default pair, scores/size/speed table, matrices, disagreements, warnings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))
from eval_pages_runs import BASE, copy_run  # noqa: E402

from core.explain.comparison import disagreements, load_predictions  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



def open_compare() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_two_runs_side_by_side(runs) -> None:
    home, (run_a, run_b) = runs
    from core.store.runs import RunStore

    store = RunStore(home)
    at = open_compare()
    assert not at.error and not at.warning  # same data, same split: no warning
    assert set(at.multiselect(key="cmp_runs").value) == {run_a, run_b}
    table = at.dataframe[0].value
    assert len(table) == 2
    for _, row in table.iterrows():
        result = store.get(row["run_id"]).result
        assert row["accuracy"] == pytest.approx(result["accuracy"])
        assert row["params"] == result["params"]["total"]
        assert row["latency_ms"] > 0 and row["predict_images_per_second"] > 0
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"cmp_bars", "cmp_curves_acc", "cmp_curves_loss", f"cmp_cm_{run_a}", f"cmp_cm_{run_b}"} <= charts
    found = disagreements([load_predictions(store, run_a), load_predictions(store, run_b)])
    if found:
        assert any(f"disagree on {len(found)}" in c.value for c in at.caption)
        assert sum(type(n).__name__ == "Image" for n in at.main) == min(len(found), 36)
        # With Grad-CAM: each image, then each run's heat map for its own answer.
        at.toggle(key="cmp_gradcam").set_value(True).run()
        assert not at.exception and not at.error
        assert sum(type(n).__name__ == "Image" for n in at.main) == 3 * min(len(found), 36)
    else:
        assert any("same answer" in s.value for s in at.success)


@pytest.mark.slow
def test_warns_when_runs_used_different_data_or_splits(runs, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, (run_a, run_b) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    copy_run(src, run_a, home, BASE.replace(name="digits"), {})
    other = copy_run(src, run_b, home, BASE.replace(name="other split", split=BASE.split.replace(seed=5)),
                     {"split_hash": "another-split"})
    at = open_compare()
    assert any("split the dataset differently" in w.value for w in at.warning)
    at.multiselect(key="cmp_runs").unselect(other).run()
    assert any("at least two" in i.value for i in at.info)
    third = copy_run(src, run_b, home, BASE.replace(name="shapes", data="builtin:shapes"), {})
    at.multiselect(key="cmp_runs").select(other).select(third).run()
    assert not at.exception
    assert any("different datasets" in w.value for w in at.warning)


def test_fewer_than_two_runs_says_what_to_do(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    at = open_compare()
    assert any("at least two finished runs" in i.value for i in at.info)


def test_a_run_with_missing_files_is_reported_not_crashed(runs, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, (run_a, run_b) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    copy_run(src, run_a, home, BASE.replace(name="a"), {})
    copy_run(src, run_b, home, BASE.replace(name="b"), {})
    broken = copy_run(src, run_b, home, BASE.replace(name="broken"), {})
    from core.store.runs import RunStore

    (RunStore(home).run_dir(broken) / "predictions.npz").unlink()
    at = open_compare()  # the newest two are 'broken' and 'b'
    assert any("no saved test predictions" in e.value for e in at.error)
    assert not at.exception
