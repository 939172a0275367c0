"""The Evaluate page on a real tiny engine: metrics, confusion cell -> images, mistakes, rewind, the table, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))


from core.explain.comparison import load_epoch_predictions, load_predictions  # noqa: E402
from core.explain.confusion import cell_members, cell_options
from core.explain.metrics import classification_metrics  # noqa: E402
from core.plots.evaluation import confusion_matrix_figure, selected_cell  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



def open_evaluate(run_id: str | None = None, tab: str | None = None, teacher: bool = False) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    if run_id:
        at.query_params["run"] = run_id
    if teacher:
        at.query_params["teacher"] = "1"
    at.run()
    at.switch_page("pages/evaluate.py")
    if tab:
        at.session_state["eval_tab"] = tab
    at.run()
    assert not at.exception, at.exception
    return at


def images_shown(at: AppTest) -> int:
    return sum(type(node).__name__ == "Image" for node in at.main)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_finished_run_shows_its_metrics_with_captions(runs) -> None:
    home, (run_a, _) = runs
    from core.store.runs import RunStore

    result = RunStore(home).get(run_a).result
    at = open_evaluate(run_a)
    assert not at.error
    assert metric(at, "Accuracy") == f"{result['accuracy']:.1%}"
    assert metric(at, "F1 (macro)") == f"{result['macro_f1']:.1%}"
    labels = {m.label for m in at.metric}
    assert {"Precision (weighted)", "Recall (weighted)", "F1 (weighted)", "Precision (macro)",
            "Recall (macro)"} <= labels
    captions = [c.value for c in at.caption]
    assert any("never trained on" in c for c in captions)
    assert [t.label for t in at.tabs][:5] == ["Confusion matrix", "Mistakes", "Per class", "Training curves",
                                              "Every prediction"]
    assert at.get("plotly_chart"), "the confusion matrix is drawn"


def test_a_clicked_cell_selects_the_images_in_it(runs) -> None:
    home, (run_a, _) = runs
    from core.store.runs import RunStore

    preds = load_predictions(RunStore(home), run_a)
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (preds.labels, preds.preds), 1)
    cell = cell_options(cm, [str(i) for i in range(10)])[0]  # the biggest mistake
    # What Streamlit reports for a click on that cell of the drawn figure:
    fig = confusion_matrix_figure(cm, [str(i) for i in range(10)])
    cells = next(t for t in fig.data if t.type == "scatter")
    point = cell[0] * 10 + cell[1]
    selection = {"selection": {"points": [{"curve_number": 1, "point_index": point, "x": cells.x[point],
                                           "y": cells.y[point], "customdata": list(cells.customdata[point])}]}}
    assert selected_cell(selection) == cell
    members = cell_members(preds.labels, preds.probs, *cell)
    assert sorted(members.tolist()) == np.flatnonzero((preds.labels == cell[0]) & (preds.preds == cell[1])).tolist()

    at = open_evaluate(run_a)
    assert images_shown(at) == 0
    at.session_state["eval_cell"] = cell  # what the chart's on_select callback stores
    at.run()
    assert not at.exception and not at.error
    assert images_shown(at) == len(members) == cm[cell]
    assert at.selectbox(key="eval_cell").value == cell
    # The fallback picker alone reaches the same images: pick the diagonal cell of class 0.
    at.selectbox(key="eval_cell").set_value((0, 0)).run()
    assert images_shown(at) == cm[0, 0]


def test_mistakes_gallery_sorted_by_loss_with_gradcam(runs) -> None:
    home, (run_a, _) = runs
    from core.store.runs import RunStore

    preds = load_predictions(RunStore(home), run_a)
    wrong = int((~preds.correct).sum())
    at = open_evaluate(run_a, tab="Mistakes")
    assert images_shown(at) == min(wrong, 24)
    at.toggle(key="eval_gradcam").set_value(True).run()
    assert not at.exception and not at.error
    assert images_shown(at) == min(wrong, 24)


def test_rewind_redraws_metrics_at_the_chosen_epoch(runs) -> None:
    home, (run_a, run_b) = runs
    from core.store.runs import RunStore

    store = RunStore(home)
    epochs = load_epoch_predictions(store, run_b)
    names = store.get(run_b).result["classes"]
    at = open_evaluate(run_b)
    at.session_state["eval_view"] = "Rewind training (validation set)"
    at.run()
    for epoch in (1, epochs.epochs):
        at.slider(key="eval_epoch").set_value(epoch).run()
        assert not at.exception
        expected = classification_metrics(epochs.labels, epochs.at(epoch).probs, names)
        assert metric(at, "Accuracy") == f"{expected['accuracy']:.1%}"
        assert any(f"after epoch {epoch} of {epochs.epochs}" in c.value for c in at.caption)
    # Another run with fewer epochs: the slider's remembered epoch is brought into its range.
    shorter = load_epoch_predictions(store, run_a).epochs
    assert shorter < epochs.epochs
    at.selectbox(key="eval_run").set_value(run_a).run()
    assert not at.exception
    assert at.slider(key="eval_epoch").value == shorter


def test_every_prediction_table_filters_and_downloads(runs) -> None:
    home, (run_a, _) = runs
    from core.store.runs import RunStore

    preds = load_predictions(RunStore(home), run_a)
    at = open_evaluate(run_a, tab="Every prediction")
    table = at.dataframe[0].value
    assert len(table) == len(preds)
    assert {"image", "file", "true", "predicted", "confidence", "loss", "correct"} <= set(table.columns)
    assert table["image"].str.startswith("data:image/png;base64,").all()
    assert table["loss"].is_monotonic_decreasing
    at.button_group(key="eval_tbl_which").set_value("Wrong").run()
    assert len(at.dataframe[0].value) == int((~preds.correct).sum())
    assert at.get("download_button")


def test_curves_tab_shows_the_onset_sentence_and_teacher_mode_speaks_plainly(runs) -> None:
    _, (run_a, _) = runs
    at = open_evaluate(run_a, tab="Training curves", teacher=True)
    assert at.get("plotly_chart")
    assert any("Validation loss" in c.value or "overfit" in c.value for c in at.caption)
    assert any(c.value.startswith("Out of 100 new pictures") for c in at.caption)


def test_export_downloads_a_checked_keras_model(runs) -> None:
    _, (run_a, _) = runs
    at = open_evaluate(run_a, tab="Export")
    at.button(key="eval_export_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Reloaded and checked" in c.value for c in at.caption)
    assert at.get("download_button")


def test_user_errors_are_one_sentence(runs, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.store.runs import RunStore

    monkeypatch.setenv("CNNLAB_HOME", str(home))
    store = RunStore(home)
    cfg = __import__("eval_pages_runs").BASE
    empty = store.create_run(cfg, "no artifacts")
    store.set_status(empty, "finished")
    gone = store.create_run(cfg, "folder deleted")
    store.set_status(gone, "finished")
    __import__("shutil").rmtree(store.run_dir(gone))
    for run_id, words in ((empty, "no saved test predictions"), (gone, "is gone")):
        at = open_evaluate(run_id)
        assert [e.value for e in at.error] and words in at.error[0].value
        assert not at.metric


def test_dataset_gone_keeps_the_numbers_and_says_why_no_pictures(runs, home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_pages_runs import BASE, copy_run

    src, (run_a, _) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    moved = copy_run(src, run_a, home, BASE.replace(data=str(home / "deleted-folder"), name="data moved"), {})
    at = open_evaluate(moved, tab="Mistakes")
    assert not at.error and metric(at, "Accuracy")
    assert images_shown(at) == 0
    assert len(at.warning) == 1 and at.warning[0].value.startswith("The images cannot be shown:")


def test_a_run_that_did_not_learn_says_so_above_its_numbers(runs, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_pages_runs import BASE, copy_run

    from core.store.runs import RunStore

    src, (run_a, _) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    collapsed = json.loads((ROOT / "tests/fixtures/histories/signs-collapsed.json").read_text())
    split = {"sizes": collapsed["sizes"], "train_class_counts": collapsed["train_class_counts"]}
    stuck = copy_run(src, run_a, home, BASE.replace(name="stuck"), {"split": split})
    store = RunStore(home)
    for epoch, values in enumerate(zip(*(collapsed["history"][k] for k in ("loss", "accuracy", "val_loss",
                                                                           "val_accuracy"))), 1):
        store.add_epoch(stuck, epoch, dict(zip(("loss", "accuracy", "val_loss", "val_accuracy"), values)))
    at = open_evaluate(stuck)
    warnings = [w.value for w in at.warning]
    assert any("After 10 epochs the model is not learning" in w and "What to try" in w for w in warnings), warnings
    assert metric(at, "Accuracy")  # the numbers are still there
    two_epochs = copy_run(src, run_a, home, BASE.replace(name="two epochs"), {"split": split})
    assert not any("not learning" in w.value for w in open_evaluate(two_epochs).warning)


def test_validation_and_test_that_disagree_are_explained(runs, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_pages_runs import BASE, copy_run

    from core.store.runs import RunStore

    src, (run_a, _) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    test_acc = RunStore(src).get(run_a).result["accuracy"]
    split = {"sizes": {"train": 3000, "val": 1000, "test": 1000}, "test_from_folder": True, "near_copies_in_val": 0}
    gap = copy_run(src, run_a, home, BASE.replace(name="gap"),
                   {"split": split, "val_accuracy": min(test_acc + 0.3, 1.0)})
    at = open_evaluate(gap)
    text = " ".join(w.value.split("What to try")[0] for w in at.warning)  # the sentence, not the advice
    assert "differ by" in text and "own test folder" in text and "near-copies" not in text
    agree = copy_run(src, run_a, home, BASE.replace(name="agree"), {"split": split, "val_accuracy": test_acc})
    assert not any("differ by" in w.value for w in open_evaluate(agree).warning)


def test_no_runs_yet_points_to_train(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    at = open_evaluate()
    assert any("No finished run yet" in i.value for i in at.info)


def test_scores_say_how_many_test_pictures_were_set_aside_as_near_copies(runs, home: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_pages_runs import BASE, copy_run
    from PIL import Image

    from core.config import SplitConfig
    from tests.data_factory import make_scene_splits, save_image

    root = make_scene_splits(home / "scenes", {"train": 6, "val": 2, "test": 2})
    for name in ("a", "b"):
        save_image(np.asarray(Image.open(root / "train" / name / f"{name}_000.png"))[:, ::-1],
                   root / "test" / name / f"{name}_mirror.png")
    src, (run_a, _) = runs
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    sentence = ("2 of the 6 test pictures were copies or near-copies of training or validation pictures and were set aside: "
                "test scores are on the other 4.")
    aside = copy_run(src, run_a, home, BASE.replace(data=str(root), split=SplitConfig(drop_duplicates=True),
                                                    name="set aside"), {})
    assert sentence in [c.value for c in open_evaluate(aside).caption]
    kept = copy_run(src, run_a, home, BASE.replace(data=str(root), split=SplitConfig(), name="kept"), {})
    assert not [c.value for c in open_evaluate(kept).caption if "were set aside" in c.value]
