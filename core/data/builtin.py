"""Built-in datasets: offline ones (digits, generated shapes) and keras.datasets / TFDS downloads, cached."""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.data.dataset import Pool, array_pool
from core.data.folders import collect, name_rule, verify_pool
from core.data.layouts import descend
from core.data.shapes import load_shapes
from core.data.zips import extract_zip
from core.errors import UserError, short_error

RPS_BASE_URL = "https://storage.googleapis.com/learning-datasets/"
RPS_FILES = {"train": "rps.zip", "test": "rps-test-set.zip"}
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class BuiltinInfo:
    """A built-in source for the dataset picker and ``python -m core datasets``."""

    name: str
    description: str
    classes: int
    images: int
    needs_download: bool
    params: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUILTINS: dict[str, BuiltinInfo] = {
    i.name: i
    for i in (
        BuiltinInfo("digits", "scikit-learn's handwritten digits, 8x8 grayscale (offline)", 10, 1797, False),
        BuiltinInfo(
            "shapes",
            "generated shapes (circle, square, star, triangle; up to 8 kinds), RGB, deterministic (offline)",
            4, 800, False, "classes=4&per_class=200&size=64&seed=0&noise=0.05&rotation=20",
        ),
        BuiltinInfo("mnist", "MNIST handwritten digits, 28x28 grayscale", 10, 70000, True),
        BuiltinInfo("fashion_mnist", "Fashion-MNIST clothing, 28x28 grayscale", 10, 70000, True),
        BuiltinInfo("cifar10", "CIFAR-10 objects and animals, 32x32 colour", 10, 60000, True),
        BuiltinInfo("cifar100", "CIFAR-100 (fine labels), 32x32 colour", 100, 60000, True),
        BuiltinInfo(
            "rock_paper_scissors", "rock-paper-scissors hands, 300x300 colour (CC BY 2.0)", 3, 2892, True
        ),
    )
}


def list_builtin() -> list[BuiltinInfo]:
    """Every built-in source, offline ones first."""
    return list(_BUILTINS.values())



def load_builtin(name: str, params: dict[str, str], home: Path) -> Pool:
    loaders: dict[str, Callable[[], Pool]] = {
        "digits": _load_digits,
        "shapes": lambda: load_shapes(params),
        "mnist": lambda: _load_keras("mnist"),
        "fashion_mnist": lambda: _load_keras("fashion_mnist"),
        "cifar10": lambda: _load_keras("cifar10"),
        "cifar100": lambda: _load_keras("cifar100"),
        "rock_paper_scissors": lambda: _load_rps(home),
    }
    if name not in loaders:
        raise UserError(f"There is no built-in dataset '{name}': choose one of {', '.join(loaders)}.")
    if params and name != "shapes":
        raise UserError(f"builtin:{name} takes no options (only builtin:shapes does).")
    return loaders[name]()


def _load_digits() -> Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return array_pool("digits", [str(i) for i in range(10)], {"all": (images, bunch.target)})


_KERAS_SOURCES: dict[str, dict[str, Any]] = {
    "mnist": {"files": ["mnist.npz"], "folder": "datasets", "url": KERAS_BASE_URL,
              "classes": [str(i) for i in range(10)]},
    "fashion_mnist": {
        "files": ["train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz"],
        "folder": "datasets/fashion-mnist", "url": KERAS_BASE_URL,
        "classes": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                    "ankle_boot"],
    },
    "cifar10": {
        "files": ["cifar-10-batches-py-target_archive"], "folder": "datasets",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
    "cifar100": {
        "files": ["cifar-100-python-target_archive"], "folder": "datasets",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "classes": (
            "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
            "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile "
            "cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp "
            "lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree "
            "orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum "
            "rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider "
            "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
            "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
        ).split(),
    },
}


def keras_home() -> Path:
    """Where Keras caches downloads (``$KERAS_HOME`` or ``~/.keras``), for the offline message."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def _load_keras(name: str) -> Pool:
    """A keras.datasets set: downloaded once by Keras, then read from its cache."""
    import keras

    spec = _KERAS_SOURCES[name]
    loader = getattr(keras.datasets, name).load_data
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints download progress; keep --json clean
            (x_train, y_train), (x_test, y_test) = loader()
    except Exception as err:  # noqa: BLE001 - any download/cache failure becomes one sentence
        folder = keras_home() / spec["folder"]
        files = spec["files"]
        if name.startswith("cifar"):
            how = f"download {spec['url']} and save it as '{folder / files[0]}'"
        else:
            listed = ", ".join(files)
            how = f"download {listed} from {spec['url']} into the folder '{folder}'"
        raise UserError(
            f"builtin:{name} could not be downloaded ({short_error(err, 160)}); to use it offline, {how}."
        ) from None
    return array_pool(name, list(spec["classes"]), {"train": (x_train, y_train), "test": (x_test, y_test)})


def _load_rps(home: Path) -> Pool:
    """Rock-paper-scissors: the two official zips, downloaded once into ``<home>/downloads``."""
    downloads = home / "downloads"
    roots = {}
    for split_name, fname in RPS_FILES.items():
        zip_path = _download(fname, RPS_BASE_URL + fname, downloads, also=list(RPS_FILES.values()))
        roots[split_name] = descend(extract_zip(zip_path, home), keep_splits=False)
    collected = {k: collect(root, name_rule({})) for k, root in roots.items()}
    # Both zips unpack under <home>/datasets/<content hash>/: names relative to it are the same anywhere.
    pool = verify_pool((home / "datasets").resolve(), collected, [])
    pool.name = "rock_paper_scissors"
    return pool


def _download(fname: str, url: str, folder: Path, also: list[str] | None = None) -> Path:
    """Fetch ``url`` into ``folder/fname`` once (keras.utils.get_file), with a one-sentence offline error."""
    import keras

    target = folder / fname
    if target.is_file():
        if zipfile.is_zipfile(target):
            return target
        target.unlink()  # a broken earlier download: get_file would otherwise trust it
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            path = keras.utils.get_file(fname=fname, origin=url, cache_dir=str(folder), cache_subdir="")
    except Exception as err:  # noqa: BLE001
        names = " and ".join(also or [fname])
        base = url[: -len(fname)] if url.endswith(fname) else url
        raise UserError(
            f"'{fname}' could not be downloaded ({short_error(err, 160)}); to use it offline, download {names} "
            f"from {base} and save them in the folder '{folder}'."
        ) from None
    return Path(path)
