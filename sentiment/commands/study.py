"""Studying data, models and settings: tune, explore, evaluate, settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.messages import redact
from sentiment.commands.options import positive_int, settings_from

TITLE = "study data, models and settings"


def register(sub) -> None:
    for add in (add_tune, add_explore, add_evaluate, add_settings_command):
        add(sub)


def add_tune(sub) -> None:
    """``sentiment tune --config FILE``: a small search."""
    p = sub.add_parser("tune", help="small hyperparameter search on the validation split; writes a table")
    p.add_argument("--config", type=Path, required=True, help="a training config with a [search] table")
    p.add_argument("--data", type=Path, help="as for train")
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="where the table goes (default runs/tune)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from training.config import load_search
    from training.tune import tune

    base, search = load_search(args.config)
    tune(base, search, data=args.data, out=args.out)
    return 0


def add_explore(sub) -> None:
    """``sentiment explore``: a data report."""
    p = sub.add_parser("explore", help="write a data report (Markdown and PNG plots) of the IMDB splits")
    p.add_argument("--data", type=Path, help="as for train")
    p.add_argument(
        "--out", type=Path, default=Path("runs/data-report"), help="report folder (default runs/data-report)"
    )
    p.set_defaults(func=cmd_explore)


def cmd_explore(args: argparse.Namespace) -> int:
    from training.explore import report

    report(args.data, args.out)
    return 0


def add_evaluate(sub) -> None:
    """``sentiment evaluate [MODEL] --data FILE``: a model's metrics."""
    p = sub.add_parser("evaluate", help="metrics of a model on a labelled file")
    p.add_argument("model_path", nargs="?", type=Path, metavar="MODEL", help="model folder (default: SENTIMENT_MODEL)")
    p.add_argument("--data", type=Path, required=True, help="labelled CSV/JSON Lines, or an aclImdb folder/tarball")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of an aclImdb tree")
    p.add_argument("--limit", type=positive_int, help="evaluate a random sample of N reviews (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # the older spelling, --model MODEL, still works; --help names the model once
    p.add_argument("--model", dest="model", type=str, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sentiment.evaluation import evaluate_file

    model = args.model_path or settings_from(args).model
    metrics = evaluate_file(model, args.data, split=args.split, limit=args.limit, seed=args.seed)
    for warning in metrics["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(
            f"model {metrics['model_version']} on {metrics['data']} ({metrics['examples']:,} labelled reviews, "
            f"{metrics['sample']})"
        )
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "calibration_error"):
            print(f"  {key:<18} {metrics[key]:.4f}")
        cm = metrics["confusion_matrix"]
        print(
            f"  confusion matrix   TN {cm['true_negative']:,}  FP {cm['false_positive']:,}  "
            f"FN {cm['false_negative']:,}  TP {cm['true_positive']:,}"
        )
    return 0


def add_settings_command(sub) -> None:
    """``sentiment settings``: every setting in effect."""
    p = sub.add_parser("settings", help="every SENTIMENT_* setting: the value in effect and where it came from")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_settings)


def cmd_settings(args: argparse.Namespace) -> int:
    from core.settings import settings_in_effect

    settings = settings_from(args)
    rows = [(env, redact(value), source, text) for env, value, source, text in settings_in_effect(settings)]
    if args.json:
        print(json.dumps([dict(zip(("variable", "value", "source", "description"), r)) for r in rows], indent=2))
        return 0
    width = max(len(r[1]) for r in rows)
    print(f"{'variable':<31} {'value in effect':<{width}}  {'from':<11}  meaning")
    for env, value, source, description in rows:
        print(f"{env:<31} {value:<{width}}  {source:<11}  {description}")
    return 0
