"""Making and rolling out models: train, model add|list|promote|rollback|shadow."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import UserError
from sentiment.commands.options import add_settings, settings_from

TITLE = "make and roll out models"


def register(sub) -> None:
    add_train(sub)
    add_model(sub)


def add_train(sub) -> None:
    """``sentiment train --config FILE``: a run folder from a config."""
    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument(
        "--config", type=Path, action="append",
        help="TOML file with every hyperparameter; give several to train each and compare them in one table",
    )  # fmt: skip
    p.add_argument("--list-keys", action="store_true", help="print every config key (type, allowed, default) and exit")
    p.add_argument("--data", type=Path, help="folder of imdb_*.csv.gz, an aclImdb folder, or aclImdb_v1.tar.gz")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    p.add_argument("--download", action="store_true", help="fetch the original aclImdb_v1.tar.gz first")
    p.add_argument("--download-dir", default="data", help="where --download puts the tarball (default data/)")
    p.add_argument(
        "--promote",
        action="store_true",
        help="also add the run to the model store and make it the live version (workers switch without a restart)",
    )
    p.add_argument("--seed", type=int, help="train with this seed instead of the config's (another draw of the model)")
    add_settings(p, "database_url")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_config, reference_text

    if args.list_keys:
        print(reference_text(), end="")
        return 0
    if not args.config:
        raise UserError("say which config to train: sentiment train --config FILE.toml (keys: --list-keys)")
    try:  # before minutes of training, and before TensorFlow is imported
        configs = [load_config(path) for path in args.config]
    except ConfigError as exc:
        raise UserError(str(exc), exit_code=2) from exc
    from training.pipeline import run

    if args.promote and len(configs) > 1:
        raise UserError("--promote takes one --config: which of the runs should be the live version?")
    if args.seed is not None:  # another draw: its runs are named apart from the config's own seed's
        configs = [
            cfg if cfg.seed == args.seed else cfg.with_overrides(seed=args.seed, name=f"{cfg.name}-seed{args.seed}")
            for cfg in configs
        ]
    if args.promote:  # the store must be there before minutes of training, not after
        from stream.sql.db import database_engine

        database_engine(settings_from(args)).dispose()
    data = args.data
    if args.download:
        from training.pipeline import download

        data = download(Path(args.download_dir))
    folders = [run(cfg, data=data, out_dir=args.out) for cfg in configs]
    if len(folders) > 1:
        from training.compare import compare
        from training.pipeline import load

        test_texts = [row.text for row in load(data)[1][:5120]]
        table = compare(folders, test_texts)
        (Path(args.out) / "comparison.md").write_text(table)
        print(f"\n{table}\n(also in {Path(args.out) / 'comparison.md'})")
    if args.promote:
        from sentiment.models import add_and_promote

        add_and_promote(settings_from(args), folders[0])
    return 0


def add_model(sub) -> None:
    """``sentiment model ACTION``: the model store."""
    p = sub.add_parser(
        "model",
        help="the model store: add a trained version, list, promote, shadow, roll back",
        description="Versions live in the database (SENTIMENT_DATABASE_URL), named by the hash of their model.keras. "
        "Running workers follow the live and shadow versions within seconds, switching between two batches after "
        "checking the new version; one that fails its check is refused and the old one kept.",
    )
    modelsub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    m = modelsub.add_parser("add", help="add a run folder (model.keras, metrics.json, ...) to the store")
    m.add_argument("folder", type=Path, help="the run folder, e.g. runs/trigram-31150f1a2929/")
    m.add_argument(
        "--allow-tensorflow",
        action="store_true",
        help="add a version the compiled scorer cannot score exactly: workers then score it with TensorFlow "
        "(several times slower, about 530 MB more per worker); without it such a version is refused, as workers "
        "would refuse it",
    )
    m.add_argument(
        "--without-metrics",
        action="store_true",
        help="add a run whose metrics.json does not name its model.keras (written before issue 26, or copied from "
        "another run): the file is left out and the store shows no accuracy for it",
    )
    add_settings(m, "database_url", "model")
    m.set_defaults(func=cmd_model)
    m = modelsub.add_parser("list", help="versions, which is live and shadow, the history, the running workers")
    m.add_argument("--json", action="store_true", help="print JSON")
    add_settings(m, "database_url")
    m.set_defaults(func=cmd_model)
    for name, text in (
        ("promote", "make a stored version live on every worker"),
        ("rollback", "make the live version before the current one live again"),
    ):
        m = modelsub.add_parser(name, help=text)
        if name == "promote":
            m.add_argument("version", help="a stored version (or its first characters, if unambiguous)")
        m.add_argument(
            "--offline", action="store_true", help="set it even when no worker is running (they load it at start)"
        )
        m.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="seconds to wait for every running worker to switch (0: do not); a worker builds a version's compiled "
            "tables the first time it loads it (about 15 s)",
        )
        add_settings(m, "database_url", "model")
        m.set_defaults(func=cmd_model)
    m = modelsub.add_parser("shadow", help="score every batch with a second version too, results kept out")
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("version", nargs="?", help="a stored version (or its first characters)")
    which.add_argument("--off", action="store_true", help="turn the shadow off")
    m.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for every running worker to follow (0: do not)"
    )
    add_settings(m, "database_url")
    m.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from sentiment import models

    settings = settings_from(args)
    action = args.model_command
    if action == "add":
        models.add(settings, args.folder, allow_tensorflow=args.allow_tensorflow, without_metrics=args.without_metrics)
        return 0
    if action == "list":
        models.list_store(settings, args.json)
        return 0
    if action == "promote":
        return models.promote(settings, args.version, offline=args.offline, wait=args.wait)
    if action == "rollback":
        return models.rollback(settings, offline=args.offline, wait=args.wait)
    return models.shadow(settings, None if args.off else args.version, wait=args.wait)
