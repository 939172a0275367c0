"""The predictor: loads a run's model safely, matches channels and size, is safe across threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from core.config import ModelSpec, TrainConfig
from core.errors import UserError
from core.models.registry import build_model
from core.models.runtime import load_model_file
from core.serving.predictor import Predictor
from core.store.runs import RunStore

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str, keras.Model]:
    """A run folder holding an (untrained) tiny gray model, as training leaves it."""
    store = RunStore(tmp_path_factory.mktemp("home"))
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(name="tiny"), (16, 16, 1), len(CLASSES))
    run_id = store.create_run(TrainConfig(image_size=16))
    model.save(store.run_dir(run_id) / "model.keras")
    (store.run_dir(run_id) / "labels.json").write_text(json.dumps(CLASSES))
    return store, run_id, model


def _images(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),  # RGB, other size
        rng.integers(0, 256, (16, 16), dtype=np.uint8),  # 2-D gray
        rng.integers(0, 256, (8, 8, 4), dtype=np.uint8),  # RGBA, smaller
    ]


def test_from_run_reads_model_labels_size_and_channels(saved_run) -> None:
    store, run_id, model = saved_run
    p = Predictor.from_run(store, run_id)
    assert (p.class_names, p.image_size, p.channels) == (CLASSES, 16, 1)
    images = _images(np.random.default_rng(0))
    probs = p.predict(images)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    direct = model(np.stack([p.preprocess(im) for im in images]).astype("float32"), training=False)
    assert np.allclose(probs, np.asarray(direct), atol=1e-6)
    assert p.predict([]).shape == (0, 3)


def test_preprocess_matches_channels_and_size(saved_run) -> None:
    store, run_id, _ = saved_run
    p = Predictor.from_run(store, run_id)
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red -> luma 0.299 * 200
    out = p.preprocess(rgb)
    assert out.shape == (16, 16, 1) and out.dtype == np.uint8
    assert int(out[8, 8, 0]) == round(0.299 * 200)
    with pytest.raises(UserError):
        p.preprocess(np.zeros((4, 4, 2), dtype=np.uint8))


def test_top_k_is_sorted_and_capped(saved_run) -> None:
    store, run_id, _ = saved_run
    p = Predictor.from_run(store, run_id)
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    top = p.top_k(img, k=2)
    probs = p.predict([img])[0]
    assert [lab for lab, _ in top] == [CLASSES[i] for i in np.argsort(-probs)[:2]]
    assert top[0][1] >= top[1][1]
    assert len(p.top_k(img, k=10)) == 3


def test_concurrent_predictions_equal_serial_ones(saved_run) -> None:
    store, run_id, _ = saved_run
    p = Predictor.from_run(store, run_id)
    rng = np.random.default_rng(2)
    batches = [[rng.integers(0, 256, (16, 16, 1), dtype=np.uint8) for _ in range(5)] for _ in range(6)]
    serial = [p.predict(b) for b in batches]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = p.predict(batches[i])
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(np.allclose(results[i], serial[i], atol=1e-6) for i in range(len(batches)))


def test_missing_pieces_are_sentences(saved_run, tmp_path: Path) -> None:
    store, _, _ = saved_run
    with pytest.raises(UserError, match="no run"):
        Predictor.from_run(store, "20990101-000000-0000")
    empty = store.create_run(TrainConfig())
    with pytest.raises(UserError, match="no saved model"):
        Predictor.from_run(store, empty)


def test_unsafe_or_damaged_files_are_refused(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="custom code"):
        load_model_file(tmp_path / "lambda.keras")

    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(UserError, match=r"only loads \.keras"):
        Predictor.from_file(tmp_path / "model.h5", ["a", "b"])

    (tmp_path / "broken.keras").write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="damaged"):
        Predictor.from_file(tmp_path / "broken.keras", ["a", "b"])


def test_class_names_must_match_the_model(saved_run) -> None:
    store, run_id, _ = saved_run
    with pytest.raises(UserError, match="3 classes"):
        Predictor.from_file(store.run_dir(run_id) / "model.keras", ["only", "two"])
