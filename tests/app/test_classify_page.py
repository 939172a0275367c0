"""Classify: photo decoding and verdicts (core.serving.classify) and the page with real uploads (AppTest file_uploader)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))


from core.serving.classify import KEEP_SIDE, PhotoResult, classify_photos, results_csv, results_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



@pytest.fixture(scope="module")
def predictor(runs):
    from core.serving.predictor import Predictor
    from core.store.runs import RunStore

    home, (run_a, _) = runs
    return Predictor.from_run(RunStore(home), run_a)


def digit_png(index: int = 3, side: int = 64, mode: str = "L") -> bytes:
    """A scikit-learn digit drawn big, as a user's PNG."""
    from sklearn.datasets import load_digits

    img = (load_digits().images[index] / 16 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).resize((side, side), Image.NEAREST).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def rotated_jpeg() -> bytes:
    """A 40x20 JPEG whose EXIF says 'rotate 90 degrees', like a phone photo taken upright."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 30, 30)).save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


# ---------------------------------------------------------------- core.serving.classify with a real predictor


@pytest.mark.slow
def test_photos_of_every_kind_are_classified(predictor) -> None:
    big = io.BytesIO()
    Image.new("RGB", (3000, 1500), (10, 200, 10)).save(big, format="JPEG")
    photos = [
        ("gray.png", digit_png(mode="L")),
        ("rgba.png", digit_png(mode="RGBA")),
        ("rotated.jpg", rotated_jpeg()),
        ("big.jpg", big.getvalue()),
        ("broken.jpg", b"\xff\xd8\xff not really a jpeg"),
        ("empty.png", b""),
    ]
    results = classify_photos(predictor, photos, batch_size=2)
    assert [r.name for r in results] == [p[0] for p in photos]
    ok = {r.name: r for r in results if r.ok}
    assert set(ok) == {"gray.png", "rgba.png", "rotated.jpg", "big.jpg"}
    for r in ok.values():
        assert r.probs.shape == (10,) and r.probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert r.model_input.shape == (12, 12, predictor.channels)
    assert ok["rotated.jpg"].image.shape[:2] == (40, 20)  # EXIF rotation applied: taller than wide
    assert max(ok["big.jpg"].image.shape[:2]) == KEEP_SIDE and ok["big.jpg"].original_size == (1500, 3000)
    errors = {r.name: r.error for r in results if not r.ok}
    assert "could not be read" in errors["broken.jpg"] and "empty" in errors["empty.png"]
    # Same pixels, same answer, whether they come one by one or in a batch.
    single = classify_photos(predictor, [photos[0]])[0]
    assert np.allclose(single.probs, ok["gray.png"].probs, atol=1e-5)


def test_verdict_threshold_none_class_and_table() -> None:
    r = PhotoResult("a.png", ["cat", "dog", "background"], np.array([0.7, 0.2, 0.1]))
    assert r.top(2) == [("cat", pytest.approx(0.7)), ("dog", pytest.approx(0.2))]
    assert r.verdict(0.5) == "cat" and r.sure(0.5)
    assert r.verdict(0.8) == "not sure (maybe cat)" and not r.sure(0.8)
    bg = PhotoResult("b.png", ["cat", "dog", "background"], np.array([0.1, 0.1, 0.8]))
    assert bg.verdict(0.5) == "none of these"
    bad = PhotoResult("c.png", ["cat"], error="'c.png' could not be read as an image: truncated file.")
    assert bad.verdict(0.5) == bad.error and bad.top() == [] and not bad.sure(0.0)
    rows = results_rows([r, bad], 0.5, k=2)
    assert rows[0]["class 1"] == "cat" and rows[0]["probability 2"] == pytest.approx(0.2)
    assert rows[1]["error"] and rows[1]["class 1"] is None
    csv_text = results_csv([r, bad], 0.5, k=2).decode()
    assert csv_text.splitlines()[0].startswith("file,verdict,class 1,probability 1")
    assert len(csv_text.strip().splitlines()) == 3


# ---------------------------------------------------------------- the page


def open_classify(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    at.switch_page("pages/classify.py")
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_upload_one_photo_shows_verdict_top_k_and_what_the_model_saw(runs, predictor) -> None:
    _, (run_a, _) = runs
    at = open_classify(run_a)
    assert at.slider(key="cls_threshold").value == pytest.approx(0.6)
    expected = classify_photos(predictor, [("three.png", digit_png())])[0]
    at.file_uploader(key="cls_upload").set_value(("three.png", digit_png(), "image/png")).run()
    assert not at.exception and not at.error
    boxes = [b.value for b in (*at.success, *at.warning)]
    assert len(boxes) == 1 and expected.label in boxes[0]
    assert ("Not sure" in boxes[0]) == (expected.confidence < 0.6)
    assert any(c.key == "cls_single_topk" for c in at.get("plotly_chart"))
    assert any("squeezed to 12×12 pixels" in c.value for c in at.caption)
    # Threshold 0 makes every answer sure, 1 makes it 'not sure'.
    at.slider(key="cls_threshold").set_value(0.0).run()
    assert len(at.success) == 1 and expected.label in at.success[0].value
    at.slider(key="cls_threshold").set_value(1.0).run()
    assert len(at.warning) == 1 and "Not sure" in at.warning[0].value


def test_many_photos_give_a_table_and_a_csv(runs) -> None:
    _, (run_a, _) = runs
    at = open_classify(run_a)
    at.file_uploader(key="cls_upload").set_value([
        ("one.png", digit_png(1), "image/png"),
        ("two.png", digit_png(2, mode="RGB"), "image/png"),
        ("bad.jpg", b"definitely not a photo", "image/jpeg"),
    ]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["file"].tolist() == ["one.png", "two.png", "bad.jpg"]
    assert table["error"].notna().tolist() == [False, False, True]
    assert any(d.key == "cls_batch_csv" for d in at.get("download_button"))


def test_unreadable_single_photo_is_an_error_sentence(runs) -> None:
    _, (run_a, _) = runs
    at = open_classify(run_a)
    at.file_uploader(key="cls_upload").set_value(("photo.heic", b"\x00\x01garbage", "image/heic")).run()
    assert not at.exception
    assert len(at.error) == 1 and "photo.heic" in at.error[0].value


def test_snapshot_from_the_camera_is_classified(runs) -> None:
    _, (run_a, _) = runs
    at = open_classify(run_a)
    at.session_state["cls_tab"] = "Take a snapshot"
    at.run()
    at.camera_input(key="cls_camera").set_value(("snap.jpg", digit_png(7, mode="RGB"), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert len([*at.success, *at.warning]) == 1


def test_a_corrupt_model_file_is_refused_with_a_sentence(runs) -> None:
    at = open_classify()
    at.button_group(key="cls_source").set_value("A model file").run()
    at.file_uploader(key="cls_model_file").set_value(("model.keras", b"PK\x03\x04 broken zip", "application/zip")).run()
    assert not at.exception
    assert len(at.error) == 1 and "model.keras" in at.error[0].value


def test_an_uploaded_keras_model_classifies_photos(runs, predictor) -> None:
    home, (run_a, _) = runs
    from core.store.runs import RunStore

    model_bytes = (RunStore(home).run_dir(run_a) / "model.keras").read_bytes()
    labels = "\n".join(predictor.class_names).encode()
    at = open_classify()
    at.button_group(key="cls_source").set_value("A model file").run()
    at.file_uploader(key="cls_model_file").set_value(("digits.keras", model_bytes, "application/zip"))
    at.file_uploader(key="cls_labels_file").set_value(("labels.txt", labels, "text/plain")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.slider(key="cls_threshold").set_value(0.0)
    at.file_uploader(key="cls_upload").set_value(("three.png", digit_png(), "image/png")).run()
    assert not at.exception and not at.error
    expected = classify_photos(predictor, [("three.png", digit_png())])[0]
    assert len(at.success) == 1 and expected.label in at.success[0].value


def test_a_run_without_a_model_is_an_error_not_a_crash(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_pages_runs import BASE

    from core.store.runs import RunStore

    monkeypatch.setenv("CNNLAB_HOME", str(home))
    store = RunStore(home)
    run_id = store.create_run(BASE, "no model")
    store.set_status(run_id, "stopped", "Stopped before the first epoch finished.")
    at = open_classify(run_id)
    assert len(at.error) == 1 and "no saved model" in at.error[0].value
