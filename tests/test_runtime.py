"""core.models.runtime: one lock for building/loading/clearing models, one cache of what is compiled for a model."""

from __future__ import annotations

import threading

import numpy as np

from core.config import ModelSpec
from core.explain.gradcam import gradcam_for
from core.models.registry import build_model
from core.models.runtime import compiled, keras_lock, load_model_file, predict_function
from core.serving.live import FrameClassifier
from core.serving.predictor import Predictor


def _tiny(channels: int = 1):
    return build_model(ModelSpec(name="tiny"), (16, 16, channels), 3)


def test_builds_from_many_threads_at_once_give_whole_models() -> None:
    models, errors = [], []

    def build() -> None:
        try:
            for _ in range(3):
                models.append(_tiny())
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(models) == 12
    for model in models:
        names = [layer.name for layer in model.layers]
        assert len(names) == len(set(names))


def test_the_lock_is_reentrant_so_a_build_inside_a_load_does_not_deadlock(tmp_path) -> None:
    path = tmp_path / "m.keras"
    _tiny().save(path)
    done = threading.Event()

    def nested() -> None:
        with keras_lock():
            load_model_file(path)
            _tiny()
        done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(60)


def test_one_predict_function_and_one_gradcam_engine_per_model() -> None:
    model = _tiny()
    first = predict_function(model)
    assert predict_function(model) is first
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    a, b = Predictor(model, ["a", "b", "c"]), Predictor(model, ["a", "b", "c"])
    np.testing.assert_allclose(a.predict([image]), first(image[None].astype(np.float32)), atol=1e-6)
    np.testing.assert_allclose(b.predict([image]), a.predict([image]), atol=0)
    assert predict_function(model) is first  # the predictors used (and kept) the model's one function
    engine = gradcam_for(model)
    assert gradcam_for(model) is engine
    with FrameClassifier(a, gradcam=True, background=False) as live:
        live.classify(np.repeat(image, 3, axis=2))
        assert live._gradcam_engine is engine  # the live stream explains with the same engine as the pages
    other = _tiny()
    assert predict_function(other) is not first and gradcam_for(other) is not engine


def test_compiled_makes_each_thing_once_per_model_and_name() -> None:
    model = _tiny()
    made = []
    for _ in range(3):
        compiled(model, "probe", lambda: made.append(1) or len(made))
    assert made == [1] and compiled(model, "probe", lambda: 99) == 1
    assert compiled(model, "other", lambda: 7) == 7
