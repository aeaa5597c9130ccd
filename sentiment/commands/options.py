"""What several commands share: the setting options (each overrides one SENTIMENT_* variable) and small types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is imported when settings are read, not when --help is shown
    from core.settings import Settings

# Options shared by commands that talk to the broker, the database or the model: each overrides one setting.
SETTING_OPTIONS = {
    "broker": ("--broker", str, "Faust broker URL, e.g. kafka://127.0.0.1:9092"),
    "database_url": ("--database-url", str, "SQLAlchemy database URL"),
    "model": ("--model", Path, "model artifact folder"),
    "batch_size": ("--batch-size", int, "most reviews per micro-batch"),
    "batch_wait": ("--batch-wait", float, "seconds to wait for a micro-batch to fill"),
    "topic_reviews": ("--topic-reviews", str, "input topic"),
    "topic_sentiments": ("--topic-sentiments", str, "output topic"),
    "topic_dlq": ("--topic-dlq", str, "dead-letter topic"),
    "web_port": ("--web-port", int, "port of the scoring page and API (0: off)"),
    "web_host": ("--web-host", str, "address the page and API listen on"),
}


def add_settings(parser: argparse.ArgumentParser, *names: str) -> None:
    group = parser.add_argument_group("settings (override the SENTIMENT_* environment variables)")
    for name in names:
        flag, kind, help_text = SETTING_OPTIONS[name]
        env = f"SENTIMENT_{name.upper()}"
        group.add_argument(flag, dest=name, type=kind, default=None, help=f"{help_text} [{env}]")


def overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k in SETTING_OPTIONS and v is not None}


def settings_from(args: argparse.Namespace) -> Settings:
    from core.settings import load_settings

    return load_settings(overrides(args), {name: flag for name, (flag, _, _) in SETTING_OPTIONS.items()})


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number
