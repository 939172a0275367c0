"""How a dataset folder is laid out, decided once and said in words.

Class folders; train/val/test folders recognised by name (``training_set``, ``Train``, ``val-images``,
``test2017``) or by structure (folders holding the same class folders are splits, whatever their names);
class folders that each hold split folders; or one flat folder labelled by file names. ``plan_layout``
returns what to collect from where and ``Plan.describe()`` the record the health report shows: which
folder was taken for what, why, and - when a layout can be read two ways - the sentence and the choices.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.images import IMAGE_EXTENSIONS
from core.errors import UserError

LAYOUT_MODES = ("auto", "splits", "classes")
_SPLIT_WORDS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "validate": "val", "dev": "val", "development": "val",
    "test": "test", "tests": "test", "testing": "test", "eval": "test", "evaluation": "test",
    "holdout": "test", "heldout": "test",
}
_FILLER = frozenset({"set", "sets", "data", "dataset", "images", "image", "imgs", "img", "split", "files",
                     "pictures", "photos", "pics", "folder", "dir", "samples", "subset", "part"})
_GLUED = ("set", "data", "images", "imgs", "split")  # trainset, testdata, valimages
_ROLE = {"train": "training", "val": "validation", "test": "testing"}
_SET = {"train": "training", "val": "validation", "test": "test"}
_ORDER = ("train", "val", "test")
SIMILAR_CLASSES = 0.8  # shared class folders / all class folders for folders to count as one dataset's splits


# ---------------------------------------------------------------- names


def _words(name: str) -> list[str]:
    """Lower-case words of a folder name: separators and digits split it, camelCase too."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()
    words = re.findall(r"[a-z]+", text)
    out: list[str] = []
    for w in words:
        if out and out[-1] in ("hold", "held") and w == "out":
            out[-1] += w
            continue
        for glue in _GLUED:
            if w.endswith(glue) and w[: -len(glue)] in _SPLIT_WORDS:
                w = w[: -len(glue)]
                break
        out.append(w)
    return out


def split_of(name: str) -> str | None:
    """'train', 'val' or 'test' when a folder's name says only that (training_set, Train, val-images, test2017)."""
    words = [w for w in _words(name) if w not in _FILLER]
    return _SPLIT_WORDS.get(words[0]) if len(words) == 1 else None


def _hinted_split(name: str) -> str | None:
    """The one split a name mentions among other words (seg_train, cats_test), if it mentions exactly one."""
    found = {_SPLIT_WORDS[w] for w in _words(name) if w in _SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- walking folders


def visible(p: Path) -> bool:
    """Not hidden and not a Mac resource-fork folder."""
    return not p.name.startswith(".") and p.name != "__MACOSX"


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted (scandir: no stat call per file in big class folders)."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and visible(Path(e.name)))


def direct_images(folder: Path) -> list[Path]:
    """Visible image files directly in ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if e.is_file() and visible(Path(e.name)) and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS)


def _walk_images(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if visible(Path(d)))
        for fname in filenames:
            if not fname.startswith(".") and Path(fname).suffix.lower() in IMAGE_EXTENSIONS:
                yield fname


def _has_image(folder: Path) -> bool:
    return next(_walk_images(folder), None) is not None


def _count_images(folder: Path) -> int:
    return sum(1 for _ in _walk_images(folder))


def descend(root: Path, keep_splits: bool = True) -> Path:
    """Skip wrapper folders (a zip's single top folder): descend while there is one folder and no images.

    With ``keep_splits`` a lone split folder (``train/``) is not a wrapper: its name says what it is.
    """
    for _ in range(8):
        subs = subdirs(root)
        if len(subs) != 1 or direct_images(root) or (keep_splits and split_of(subs[0].name)):
            return root
        if not subdirs(subs[0]) and direct_images(subs[0]):
            return root  # a single class folder: let the one-class check speak
        root = subs[0]
    return root


@dataclass
class _Top:
    """One top-level folder: what it holds once wrappers inside it are skipped, and what its name says."""

    path: Path
    inner: Path
    classes: list[str]   # sub-folders (of ``inner``) that hold images
    flat: bool           # images directly in ``inner``
    split: str | None    # the split its name alone says
    hint: str | None     # a split its name mentions among other words

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def holds_splits(self) -> bool:
        return any(split_of(c) for c in self.classes)


def _profile(folder: Path) -> _Top:
    inner = descend(folder, keep_splits=False)
    classes = [d.name for d in subdirs(inner) if _has_image(d)]
    return _Top(folder, inner, classes, bool(direct_images(inner)), split_of(folder.name), _hinted_split(folder.name))


# ---------------------------------------------------------------- the plan


@dataclass
class Part:
    """Where one split's (or the whole pool's, 'all') pictures come from."""

    folder: Path
    exclude: frozenset[str] = frozenset()    # sub-folders of ``folder`` that are not classes
    classes: dict[str, Path] | None = None   # class -> folder, when classes are spread (class/split layout)


@dataclass
class Plan:
    """What to collect from where, and the words for it."""

    root: Path
    kind: str                          # "splits" | "classes" | "flat-names" | "class-splits"
    parts: dict[str, Part]
    reason: str
    folders: dict[str, str]            # top-level folder -> "train" | "val" | "test" | "all" | "class" | "left out"
    splits: dict[str, str] = field(default_factory=dict)   # split -> the folder it was read from
    notes: list[str] = field(default_factory=list)
    question: str | None = None        # set when the layout can be read two ways
    opened: list[str] = field(default_factory=list)
    ambiguous: dict[str, Any] | None = None

    @property
    def reading(self) -> str:
        return "splits" if self.kind in ("splits", "class-splits") else self.kind

    def summary(self) -> str:
        """A choice's label: each folder and what it is taken for."""
        roles: dict[str, list[str]] = {}
        for name, role in self.folders.items():
            roles.setdefault(role, []).append(name)
        words = {**{s: f"for {_ROLE[s]}" for s in _ORDER}, "all": "divided into training, validation and test",
                 "class": ("as the class" if len(roles.get("class", [])) == 1 else "as classes")
                 + (" to train on" if self.kind == "splits" else ""), "left out": "left out"}
        order = ["class", *_ORDER, "all", "left out"]
        return ", ".join(f"{_list(roles[r])} {words[r]}" for r in sorted(roles, key=order.index))

    def describe(self) -> dict[str, Any]:
        """The record that flows into the health report (plain JSON)."""
        order = [*_ORDER, "all", "class", "left out"]
        folders = dict(sorted(self.folders.items(), key=lambda kv: (order.index(kv[1]), kv[0])))
        return {"kind": self.kind, "folder": self.root.name, "opened": list(self.opened),
                "splits": dict(self.splits), "folders": folders,
                "left_out": [n for n, r in self.folders.items() if r == "left out"],
                "reason": self.reason, "ambiguous": self.ambiguous}


def plan_layout(given: Path, mode: str = "auto") -> Plan:
    """Read ``given``'s layout; ``mode`` 'splits' or 'classes' is a person's choice for a layout read two ways."""
    if mode not in LAYOUT_MODES:
        raise UserError(f"'layout={mode}' is not a layout CNN Lab knows: use layout=splits or layout=classes.")
    root = descend(given)
    tops = [t for t in (_profile(d) for d in subdirs(root)) if t.classes or t.flat]
    auto = _read(root, tops, None)
    plan = auto if mode == "auto" else _read(root, tops, mode)
    if root != given:
        plan.opened = list(root.relative_to(given).parts)
        plan.notes.insert(0, f"Everything is inside the folder '{'/'.join(plan.opened)}', so it was opened.")
    plan.ambiguous = _choices(auto, plan, root, tops, mode)
    return plan


def _choices(auto: Plan, plan: Plan, root: Path, tops: list[_Top], mode: str) -> dict[str, Any] | None:
    """The sentence and the readings a person can pick, when the layout can be read two ways or was picked."""
    if auto.question is None and mode == "auto":
        return None
    options = []
    for reading in ("splits", "classes"):
        try:
            p = auto if auto.reading == reading else _read(root, tops, reading)
        except UserError:
            continue
        if p.reading == reading:
            options.append({"label": p.summary(), "layout": reading,
                            "params": {"layout": "" if reading == auto.reading else reading},
                            "current": reading == plan.reading})
    if len(options) < 2:
        return None
    sentence = auto.question if mode == "auto" else "These folders can be read two ways; they are read as chosen below."
    return {"sentence": sentence, "choices": options}


def _read(root: Path, tops: list[_Top], force: str | None) -> Plan:
    if force == "classes":
        return _as_classes(root, tops, "Every folder was read as a class, as chosen.")
    if not tops:
        return _flat_or_empty(root)
    named: dict[str, _Top] = {}
    for t in tops:
        if t.split and t.split not in named:
            named[t.split] = t
    if named:
        twins = [t for t in tops if t.split and t is not named[t.split]]
        plan = _named(root, tops, dict(named), force)
        for t in twins if plan.reading == "splits" else []:
            plan.folders[t.name] = "left out"
            plan.notes.append(f"Left out: {t.name} ({named[t.split].name} is already the {_SET[t.split]} folder).")
        return plan
    return _unnamed(root, tops, force)


def _flat_or_empty(root: Path) -> Plan:
    if direct_images(root):
        return Plan(root, "flat-names", {"all": Part(root)},
                    "The pictures are not in class folders, so each one's class was read from its file name.", {})
    zips = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".zip" and visible(p))
    if zips:
        raise UserError(f"This folder holds a zip ({zips[0]}) but no pictures: give the zip itself, or unzip it here.")
    return Plan(root, "classes", {"all": Part(root)}, "The folder holds no pictures.", {})


def _as_classes(root: Path, tops: list[_Top], reason: str) -> Plan:
    names = [t.name for t in tops]
    shown = names if len(names) <= 8 else [*names[:7], f"{len(names) - 7} more"]
    return Plan(root, "classes", {"all": Part(root)},
                reason or f"Each folder was read as one class ({_list(shown)}).", {n: "class" for n in names})


def _unnamed(root: Path, tops: list[_Top], force: str | None) -> Plan:
    """No folder is named like a split: classes, class folders holding split folders, or splits by structure."""
    if all(t.classes and all(split_of(c) for c in t.classes) for t in tops) and any(len(t.classes) > 1 for t in tops):
        return _class_splits(root, tops)
    group = [t for t in tops if len(t.classes) >= 2]
    hinted = any(t.hint for t in group)
    if force == "splits":
        if not 2 <= len(tops) <= 3:
            raise UserError(f"Only two or three folders can be read as training, validation and test sets; "
                            f"'{root.name}' has {len(tops)}.")
        group = tops
    elif not (2 <= len(group) <= 3 and (len(group) == len(tops) or hinted) and _similar(group)):
        return _as_classes(root, tops, "")
    assigned, how = _assign(group)
    plan = _split_plan(root, tops, assigned)
    shared = set.intersection(*(set(t.classes) for t in group))
    plan.reason = (f"{_list([t.name for t in group])} hold the same {len(shared)} class folders, so they were read "
                   f"as one dataset's {_list([_SET[s] for s in _sorted(assigned)])} sets: {how}.")
    left = [t.name for t in tops if t not in group]
    if left:
        plan.notes.append(f"Left out: {_list(left)} (not holding the same class folders).")
    if not hinted:
        plan.question = (f"{_list([t.name for t in group])} were taken for training and test sets because they hold "
                         "the same class folders; if they are classes themselves, choose that below.")
    return plan


def _class_splits(root: Path, tops: list[_Top]) -> Plan:
    """``cats/train``, ``cats/test``, ``dogs/train``...: class folders that each hold their split folders."""
    by_split: dict[str, dict[str, Path]] = {}
    inner_names: dict[str, str] = {}
    for t in tops:
        for c in t.classes:
            s = split_of(c)
            assert s is not None
            by_split.setdefault(s, {}).setdefault(t.name, t.inner / c)
            inner_names.setdefault(s, c)
    names = [t.name for t in tops]
    words = _list([inner_names[s] for s in _sorted(by_split)])
    return Plan(root, "class-splits", {s: Part(root, classes=d) for s, d in by_split.items()},
                f"Each class folder ({_list(names)}) holds its own {words} folders, so they were read as the "
                f"classes' {_list([_SET[s] for s in _sorted(by_split)])} pictures.",
                {n: "class" for n in names}, splits={s: inner_names[s] for s in _sorted(by_split)})


def _named(root: Path, tops: list[_Top], named: dict[str, _Top], force: str | None) -> Plan:
    """Some folders are named like splits; the others are left out, or are the classes to train on."""
    others = [t for t in tops if t not in named.values() and not t.split]
    nested = [t for t in named.values() if t.classes]
    extended = []
    for o in list(others):  # a folder holding the same classes as the split folders is a split too
        free = [s for s in (o.hint, "train", "test", "val") if s and s not in named]
        if nested and free and len(o.classes) >= 2 and _similar([*nested, o]):
            named[free[0]] = o
            others.remove(o)
            extended.append(o)
    classlike = [o for o in others if not o.holds_splits]
    if "train" in named:
        plan = _split_plan(root, tops, named)
        plan.reason = _named_reason(named, extended)
        if others:
            plan.notes.append(f"Left out: {_list([o.name for o in others])} (not a training, validation or test folder).")
        if classlike:
            one = len(classlike) == 1
            plan.question = (f"Besides the split folders {_list([t.name for t in _by_split(named)])} there "
                             f"{'is a folder that looks like a class' if one else 'are folders that look like classes'}"
                             f" ({_list([o.name for o in classlike])}), which {'was' if one else 'were'} left out; "
                             "choose below to read every folder as a class instead.")
        return plan
    if classlike:
        return _classes_beside_splits(root, tops, named, classlike, force)
    if len(named) == 1:
        (s, only), = named.items()
        return Plan(root, "splits", {"all": Part(only.inner)},
                    f"The only folder, {only.name}, holds every picture, so they are divided into training, "
                    "validation and test sets by the percentages chosen.", {only.name: "all"})
    sizes = {s: _count_images(t.inner) for s, t in named.items()}
    big = max(_sorted(named), key=lambda s: sizes[s])
    moved = {"train": named[big], **{s: t for s, t in named.items() if s != big}}
    plan = _split_plan(root, tops, moved)
    plan.reason = (f"There is no training folder, so {named[big].name}, the largest ({sizes[big]:,} pictures), "
                   "is used for training.")
    return plan


def _classes_beside_splits(root: Path, tops: list[_Top], named: dict[str, _Top], classlike: list[_Top],
                           force: str | None) -> Plan:
    """A lone ``test`` folder beside class folders: the class folders are what training uses."""
    splits_in = _by_split(named)
    split_names = _list([t.name for t in splits_in])
    roles = _list([_ROLE[s] for s in _sorted(named)])
    class_names = _list([o.name for o in classlike])
    one = len(splits_in) == 1
    if force != "splits" and not any(_fits(t, classlike) for t in named.values()):
        plan = _as_classes(root, tops, "")
        plan.question = (f"{split_names} {'looks like a' if one else 'look like'} {roles} folder "
                         f"{'name' if one else 'names'} but "
                         f"{'holds' if one else 'hold'} none of the other folders' classes, so "
                         f"{'it was read as a class' if one else 'they were read as classes'}; choose below to use "
                         f"{'it' if one else 'them'} for {roles} instead.")
        return plan
    skip = frozenset(t.name for t in tops if t not in classlike)
    parts = {"train": Part(root, exclude=skip), **{s: Part(t.inner) for s, t in named.items()}}
    folders = {t.name: ("class" if t in classlike else "left out") for t in tops}
    folders.update({t.name: s for s, t in named.items()})
    plan = Plan(root, "splits", parts,
                f"{class_names} were read as the classes to train on and {split_names} for {roles}, because there "
                "is no training folder.", folders, splits={s: t.name for s, t in named.items()})
    plan.question = (f"{split_names} {'was' if one else 'were'} taken for {roles} and {class_names} as the classes to "
                     f"train on; if {split_names} {'is a class' if one else 'are classes'} too, choose that below.")
    return plan


def _fits(split: _Top, classlike: list[_Top]) -> bool:
    """Does a split folder hold the classes of the folders beside it (class folders or file names)?"""
    names = {o.name.lower() for o in classlike}
    if names & {c.lower() for c in split.classes}:
        return True
    stems = [p.stem.lower() for p in direct_images(split.inner)[:200]] if split.flat else []
    return any(s.startswith(n) for s in stems for n in names)


def _split_plan(root: Path, tops: list[_Top], assigned: dict[str, _Top]) -> Plan:
    folders = {t.name: "left out" for t in tops}
    folders.update({t.name: s for s, t in assigned.items()})
    return Plan(root, "splits", {s: Part(t.inner) for s, t in assigned.items()}, "", folders,
                splits={s: t.inner.relative_to(root).as_posix() for s, t in sorted(assigned.items(), key=_rank)})


def _assign(group: list[_Top]) -> tuple[dict[str, _Top], str]:
    """Splits for folders that hold the same classes: by the split their names mention, else by size."""
    out: dict[str, _Top] = {}
    for t in group:
        if t.hint and t.hint not in out:
            out[t.hint] = t
    rest = [t for t in group if t not in out.values()]
    parts = [f"{t.name} for {_ROLE[s]} (its name says so)" for s, t in sorted(out.items(), key=_rank)]
    if rest:
        sizes = {t.name: _count_images(t.inner) for t in rest}
        rest.sort(key=lambda t: (-sizes[t.name], t.name))
        free = [s for s in ("train", "test", "val") if s not in out]
        for i, (t, s) in enumerate(zip(rest, free)):
            out[s] = t
            largest = "the largest, " if i == 0 and s == "train" and len(rest) > 1 else ""
            parts.append(f"{t.name} for {_ROLE[s]} ({largest}{sizes[t.name]:,} pictures)")
    return out, "; ".join(parts)


def _named_reason(named: dict[str, _Top], extended: list[_Top]) -> str:
    parts = [f"{t.name} for {_ROLE[s]}" + (" (it holds the same classes)" if t in extended else "")
             for s, t in sorted(named.items(), key=_rank)]
    return f"The folders were read by their names: {', '.join(parts)}."


def _similar(group: list[_Top]) -> bool:
    sets = [set(t.classes) for t in group]
    shared, every = set.intersection(*sets), set.union(*sets)
    return len(group) >= 2 and len(shared) >= 2 and len(shared) / len(every) >= SIMILAR_CLASSES


def _rank(item: tuple[str, Any]) -> int:
    return _ORDER.index(item[0])


def _sorted(splits: Any) -> list[str]:
    return [s for s in _ORDER if s in splits]


def _by_split(named: dict[str, _Top]) -> list[_Top]:
    return [named[s] for s in _sorted(named)]


def _list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def layout_lines(layout: dict[str, Any] | None) -> list[str]:
    """The command line's lines for a layout record: the reason, each folder's role, the choices."""
    if not layout:
        return []
    lines = [f"layout: {layout['reason']}"] if layout.get("reason") else []
    if layout.get("folders") and layout.get("kind") != "classes":  # the reason already names the classes
        lines.append("  " + ", ".join(f"{name} -> {role}" for name, role in layout["folders"].items()))
    question = layout.get("ambiguous")
    if question:
        lines.append(f"choice: {question['sentence']}")
        lines += [f"  {'*' if c['current'] else ' '} {c['label']}: {c.get('source', '')}" for c in question["choices"]]
    return lines
