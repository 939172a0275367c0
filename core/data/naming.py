"""A dataset source in words: the one place a ``data.source`` string becomes what a person reads.

``builtin:shapes?per_class=150&size=32`` reads "shapes, 150 a class, 32 px"; ``library:hands`` reads
its friendly name; a folder reads its name and a zip its name without ``.zip`` or a hash prefix. No temp
path, hash or query string ever comes out.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from core.data.library import DatasetLibrary, display_stem, library_id
from core.errors import UserError

BUILTIN_NAMES = {
    "digits": "digits",
    "shapes": "shapes",
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "rock_paper_scissors": "rock-paper-scissors",
}


def source_label(source: str, library: DatasetLibrary | None = None) -> str:
    """Any dataset source as a short name a person reads (never a path, hash or query string).

    ``library`` names library entries; without it the library of the default home is read.
    """
    source = str(source or "").strip()
    if not source:
        return "no dataset"
    if source.startswith("builtin:"):
        return builtin_label(source)
    path, choice = source, ""
    if "?" in source and not source.lower().endswith(".zip"):
        path, _, query = source.rpartition("?")
        choice = _choice_words(dict(parse_qsl(query, keep_blank_values=True)))
    entry_id = library_id(path)
    if entry_id is not None:
        name = library_label(entry_id, library if library is not None else DatasetLibrary())
    else:
        name = display_stem(path or source) or "a folder"
    return f"{name} ({choice})" if choice else name


def _choice_words(params: dict[str, str]) -> str:
    """How a person chose to read a folder's layout, in words."""
    words = {"splits": "folders read as training, validation and test sets", "classes": "every folder read as a class"}
    parts = [words.get(params.get("layout", ""), "")]
    if params.get("root"):
        parts.append(f"only its folder '{params['root']}'")
    return "; ".join(p for p in parts if p)


def builtin_label(source: str) -> str:
    """``builtin:NAME?k=v&...`` in words: the dataset's name, then each generator option."""
    name, _, query = source[len("builtin:"):].partition("?")
    name = name.strip().lower()
    words = [BUILTIN_NAMES.get(name, name.replace("_", " ") or "built-in")]
    words += [_option_words(key, value) for key, value in parse_qsl(query, keep_blank_values=True)]
    return ", ".join(w for w in words if w)


def library_label(entry_id: str, library: DatasetLibrary) -> str:
    """A library entry's friendly name; a deleted one says so."""
    try:
        entry = library.get(entry_id)
        name = entry.name if entry is not None else library.name_of(entry_id)
    except UserError:  # an unreadable manifest: the id is still a readable word
        return entry_id
    if entry is not None:
        return entry.name
    return f"{name} (deleted from the library)" if name else entry_id


def _option_words(key: str, value: str) -> str:
    """One option of ``builtin:shapes`` as words ("per_class=150" -> "150 a class")."""
    value = value.strip()
    if key == "classes":
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        return f"{value} kinds" if value.isdigit() else " and ".join(kinds)
    if key == "per_class":
        return f"{value} a class"
    if key == "size":
        return f"{value} px"
    if key == "seed":
        return f"seed {value}"
    if key == "noise":
        try:
            return f"{float(value):.0%} noise"
        except ValueError:
            return f"noise {value}"
    if key == "rotation":
        return f"turned up to {value}°"
    return f"{key.replace('_', ' ')} {value}".strip()
