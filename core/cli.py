"""The headless command line over the same engine the dashboard uses.

Every subcommand has ``--help`` and ``--json``; a user error prints one sentence and exits 2.
Heavy modules (TensorFlow) are imported inside the handlers so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from core.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else the human-readable ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        print(text)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _store(args: argparse.Namespace):
    from core.store.runs import RunStore

    return RunStore(args.home)


# ---------------------------------------------------------------- data


def cmd_datasets(args: argparse.Namespace) -> int:
    from core.data.builtin import list_builtin
    from core.data.library import DatasetLibrary

    infos = list_builtin()
    entries = DatasetLibrary(args.home).list()
    rows = [
        f"builtin:{i.name:<22} {i.description}" + ("  (downloads once)" if i.needs_download else "")
        for i in infos
    ] + [f"{e.source:<30} {e.name}: your library, {e.classes} classes, {e.images:,} images" for e in entries]
    data = [{**i.to_dict(), "source": f"builtin:{i.name}"} for i in infos] + [
        {"name": e.name, "source": e.source, "description": "your library", "classes": e.classes,
         "images": e.images, "needs_download": False, "params": ""} for e in entries]
    _print(args, data, "\n".join(rows))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from core.data.health import health_report
    from core.data.sources import load_dataset, with_choice

    source = with_choice(args.source, {"layout": "" if args.layout == "auto" else args.layout}) if args.layout \
        else args.source
    report = health_report(load_dataset(source, _split_config(args), home=args.home))
    _print(args, report.to_dict(), report.to_text())
    return 0


# ---------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from core.models.registry import list_models

    infos = list_models()
    text = "\n".join(f"{m.name:<28} {m.kind:<9} {m.description}" for m in infos)
    _print(args, [m.to_dict() for m in infos], text)
    return 0


# ---------------------------------------------------------------- runs


def _split_config(args: argparse.Namespace):
    from core.config import SplitConfig

    return SplitConfig(
        val_fraction=args.val_split,
        test_fraction=args.test_split,
        seed=args.seed,
        limit_per_class=args.limit_per_class,
        drop_duplicates=args.set_aside_copies,
        group_near_copies=not args.random_split,
    )


# Flags whose value the recommendation may choose, and the config path each one fixes when given.
RECOMMENDABLE = {
    "model": "model.name", "alpha": "model.alpha", "fine_tune_layers": "model.fine_tune_layers",
    "fine_tune_epochs": "model.fine_tune_epochs", "image_size": "image_size", "epochs": "epochs",
    "augment": "augment", "early_stopping": "early_stopping_patience", "class_weights": "class_weights",
    "no_feature_cache": "use_feature_cache",
}
TRAIN_DEFAULTS = {"model": "tiny", "alpha": 0.35, "fine_tune_layers": 0, "fine_tune_epochs": 0, "image_size": 32,
                  "epochs": 10, "augment": "none", "early_stopping": 0, "class_weights": False,
                  "no_feature_cache": False}


def _given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name) is not None


def _arg(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    return TRAIN_DEFAULTS[name] if value is None else value


def _train_config(args: argparse.Namespace):
    from core.config import AugmentConfig, ModelSpec, TrainConfig

    return TrainConfig(
        data=args.data,
        split=_split_config(args),
        model=ModelSpec(name=_arg(args, "model"), alpha=_arg(args, "alpha"),
                        fine_tune_layers=_arg(args, "fine_tune_layers"),
                        fine_tune_epochs=_arg(args, "fine_tune_epochs")),
        image_size=_arg(args, "image_size"),
        batch_size=args.batch_size,
        epochs=_arg(args, "epochs"),
        optimizer=args.optimizer,
        learning_rate=args.lr,
        augment=AugmentConfig.preset(_arg(args, "augment")),
        early_stopping_patience=_arg(args, "early_stopping"),
        class_weights=_arg(args, "class_weights"),
        seed=args.seed,
        deterministic=args.deterministic,
        use_feature_cache=not _arg(args, "no_feature_cache"),
        name=args.name or "",
    )


def _wants_recommendation(args: argparse.Namespace) -> bool:
    """--recommended, or neither a model nor an image size given (the old fixed defaults suit few datasets)."""
    return bool(args.recommended) or not (_given(args, "model") or _given(args, "image_size"))


def _recommended(args: argparse.Namespace, config: Any) -> tuple[Any, dict[str, Any] | None]:
    """The config with the dataset's recommendation applied under the user's own flags, and what was chosen.

    When the data cannot be read the config is returned as it is: the run then fails with the data's sentence.
    """
    from core.training.recommend import recommend_for

    try:
        rec = recommend_for(config, model=args.model, home=args.home)
    except UserError:
        return config, None
    kept = [name for name in RECOMMENDABLE if _given(args, name)]
    config = rec.apply(config, keep=[RECOMMENDABLE[name] for name in kept])
    info = {**rec.to_dict(), "kept_from_flags": ["--" + name.replace("_", "-") for name in kept]}
    if not args.json:
        lines = ["Recommended for this dataset" + (f" (your flags win: {', '.join(info['kept_from_flags'])})"
                                                   if kept else "") + ":"]
        lines += [f"  {c.label}: {c.value}. {c.sentence}" for c in rec.choices]
        lines += [f"  Note: {n}" for n in rec.notes]
        print("\n".join(lines), file=sys.stderr, flush=True)
    return config, info


def cmd_train(args: argparse.Namespace) -> int:
    from core.training.manager import train_to_completion

    store = _store(args)
    config, recommendation = _train_config(args), None
    if _wants_recommendation(args):
        config, recommendation = _recommended(args, config)
    progress = None if args.json or args.quiet else _print_progress
    summary = {**train_to_completion(config, store, on_progress=progress), "recommendation": recommendation}
    return _report_run(args, summary, f"run {summary['run_id']}: {summary['status']}")


def cmd_resume(args: argparse.Namespace) -> int:
    from core.training.manager import resume_to_completion

    progress = None if args.json or args.quiet else _print_progress
    summary = resume_to_completion(args.run_id, _store(args), on_progress=progress)
    epochs = len(summary["history"].get("loss", []))
    return _report_run(args, summary, f"run {summary['run_id']} resumed: {summary['status']} after {epochs} epochs")


def _report_run(args: argparse.Namespace, summary: dict[str, Any], headline: str) -> int:
    """Print a run's summary (JSON, or one line: headline, test scores, message); exit 0 only if it finished."""
    if args.json:
        _print(args, summary, "")
    else:
        test = summary.get("test") or {}
        print(
            headline
            + (f" - test accuracy {test['accuracy']:.3f}, macro F1 {test['macro_f1']:.3f}" if test else "")
            + (f" ({summary['message']})" if summary.get("message") else "")
        )
        for verdict in summary.get("verdicts") or []:
            if verdict["kind"] != "learning":
                print(f"  {verdict['sentence']} {verdict['advice']}".rstrip())
    return 0 if summary["status"] == "finished" else 1


def _print_progress(snapshot: Any) -> None:
    h = snapshot.history
    if h.get("loss"):
        line = f"epoch {snapshot.epoch}/{snapshot.epochs_total}  loss {h['loss'][-1]:.4f}"
        if h.get("accuracy"):
            line += f"  acc {h['accuracy'][-1]:.3f}"
        if h.get("val_loss"):
            line += f"  val_loss {h['val_loss'][-1]:.4f}  val_acc {h['val_accuracy'][-1]:.3f}"
        print(line, file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    store = _store(args)
    record = store.get(args.run_id)
    if record is None:
        raise UserError(f"There is no run '{args.run_id}': `python -m core runs` lists them.")
    r = record.result
    if not r and record.status in ("interrupted", "failed", "stopped"):
        from core.training.results import evaluate_unfinished

        r = evaluate_unfinished(store, args.run_id)  # from the model its checkpoint keeps
    if not r:
        raise UserError(f"Run {args.run_id} has no test results (its status is {record.status}).")
    text = [f"run {record.run_id} ({record.name}) - {record.status}"]
    for key in ("accuracy", "precision", "recall", "f1", "macro_f1"):
        if key in r:
            text.append(f"  {key:<10} {r[key]:.4f}")
    for row in r.get("per_class", []):
        text.append(
            f"  {row['label']:<16} precision {row['precision']:.3f}  recall {row['recall']:.3f}"
            f"  f1 {row['f1']:.3f}  n={row['support']}"
        )
    _print(args, {"run_id": record.run_id, "status": record.status, **r}, "\n".join(text))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from core.data.images import decode_image
    from core.serving.predictor import Predictor

    predictor = Predictor.from_run(_store(args), args.run_id)
    out = []
    for name in args.images:
        try:
            img = decode_image(Path(name), channels=None)
        except UserError as err:
            out.append({"file": name, "error": str(err)})
            continue
        top = predictor.top_k(img, k=args.top)
        out.append({"file": name, "top": [{"label": lab, "probability": p} for lab, p in top]})
    text = "\n".join(
        f"{o['file']}: " + (o["error"] if "error" in o else ", ".join(f"{t['label']} {t['probability']:.3f}" for t in o["top"]))
        for o in out
    )
    _print(args, out, text)
    return 0 if all("error" not in o for o in out) else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from core.data.library import DatasetLibrary
    from core.data.naming import source_label

    store = _store(args)
    library = DatasetLibrary(store.home)
    records = store.list()
    rows = []
    for r in records:
        acc = (r.result or {}).get("accuracy")
        rows.append(
            f"{r.run_id}  {r.status:<11} {r.config.model.name:<26} {source_label(r.config.data, library):<30} "
            + (f"acc {acc:.3f}" if acc is not None else "")
        )
    _print(args, [r.to_dict() for r in records], "\n".join(rows) or "no runs yet")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.serving.export import export_run

    report = export_run(_store(args), args.run_id, args.format, Path(args.out))
    _print(
        args,
        report,
        f"wrote {report['path']} ({report['format']}); reloaded and checked: max abs difference "
        f"{report['max_abs_diff']:.2e} on {report['checked_images']} images",
    )
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="CNN Lab from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.add_argument("--home", default=None, help="CNN Lab's data folder (default $CNNLAB_HOME or ~/.cnnlab)")
        p.set_defaults(handler=handler)
        return p

    def add_split(p: argparse.ArgumentParser) -> None:
        p.add_argument("--val-split", type=float, default=0.15, help="share of images for validation")
        p.add_argument("--test-split", type=float, default=0.15, help="share of images for the test")
        p.add_argument("--limit-per-class", type=int, default=None, help="use at most N images a class")
        p.add_argument("--seed", type=int, default=0, help="seed for the split and training")
        p.add_argument("--set-aside-copies", action="store_true",
                       help="leave out of validation and test every copy or near-copy of a training picture")
        p.add_argument("--random-split", action="store_true",
                       help="split picture by picture, even near-copies of one photo (shows how they flatter scores)")

    add(sub_name := "datasets", cmd_datasets, "List the built-in datasets and those of your library.")
    p = add("inspect", cmd_inspect, "Print the health report of a dataset (builtin:NAME, library:ID, a folder or a zip).")
    p.add_argument("source")
    p.add_argument("--layout", choices=["auto", "splits", "classes"], default=None,
                   help="how to read a folder that reads two ways: top folders as train/val/test sets or as classes "
                        "(the same as SOURCE?layout=...)")
    add_split(p)

    add("models", cmd_models, "List the architectures (scratch presets, custom, transfer backbones).")

    p = add("train", cmd_train, "Train a model and evaluate it on the test split.")
    p.add_argument("--data", required=True, help="builtin:NAME, library:ID (see datasets), a folder or a zip")
    p.add_argument("--recommended", action="store_true",
                   help="pick the model, image size, epochs, early stopping and augmentation for this dataset "
                        "(printed with the reason for each; --json: under 'recommendation'). This is also what "
                        "happens when neither --model nor --image-size is given. Flags you give still win")
    p.add_argument("--model", default=None, help="a name from `python -m core models` (without a recommendation: tiny)")
    p.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width (0.35, 0.5, 1.0; default 0.35)")
    p.add_argument("--fine-tune-layers", type=int, default=None, help="transfer: unfreeze the top N backbone layers")
    p.add_argument("--fine-tune-epochs", type=int, default=None, help="transfer: epochs of the fine-tuning phase")
    p.add_argument("--epochs", type=int, default=None, help="without a recommendation: 10")
    p.add_argument("--image-size", type=int, default=None, help="without a recommendation: 32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adam", choices=["adam", "nadam", "rmsprop", "sgd"])
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--augment", default=None, help="none, gentle, light, standard or strong (default none)")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE", help="0 = off (the default)")
    p.add_argument("--class-weights", action="store_true", default=None, help="weight classes by their counts")
    p.add_argument("--deterministic", action="store_true", help="deterministic ops (repeatable histories)")
    p.add_argument("--no-feature-cache", action="store_true", default=None,
                   help="transfer: run the backbone every epoch")
    p.add_argument("--name", default=None, help="a name for the run")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    add_split(p)

    p = add("resume", cmd_resume, "Continue an interrupted or stopped run from its last checkpoint (same run id).")
    p.add_argument("run_id")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")

    p = add("evaluate", cmd_evaluate, "Show a run's test metrics.")
    p.add_argument("run_id")
    p = add("predict", cmd_predict, "Classify image files with a run's model.")
    p.add_argument("run_id")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=3)
    add("runs", cmd_runs, "List the runs in the store.")
    p = add("export", cmd_export, "Export a run's model and check the export reloads with equal predictions.")
    p.add_argument("run_id")
    p.add_argument("--format", required=True, choices=["keras", "savedmodel", "tflite", "tflite-int8"])
    p.add_argument("--out", required=True)
    del sub_name
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
