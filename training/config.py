"""Training configuration: every hyperparameter, read from one TOML file. Unknown keys are errors."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    name: str = "seed"
    # data
    validation_fraction: float = 0.1
    split_seed: int = 1337
    # vectorization; cleaning: "full" (model.cleaning.clean_text) or "basic" (lowercase, strip punctuation)
    cleaning: str = "full"
    max_tokens: int = 20_000
    ngrams: int = 1
    sequence_length: int = 500
    # model
    embedding_dim: int = 32
    hidden_units: int = 32
    dropout: float = 0.0
    # fitting
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # AdamW's decoupled weight decay; 0 is plain Adam
    max_epochs: int = 20
    patience: int = 2
    seed: int = 42

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return replace(self, **overrides)


def load_config(path: Path | str) -> TrainConfig:
    """Read a config file; an unknown key or a value of the wrong type is an error that names it."""
    path = Path(path)
    return config_from_dict(tomllib.loads(path.read_text(encoding="utf-8")), str(path))


def load_search(path: Path | str) -> tuple[TrainConfig, dict[str, list[Any]]]:
    """A config file with a ``[search]`` table (key = list of values to try) for ``sentiment tune``."""
    path = Path(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    search = raw.pop("search", None)
    if not isinstance(search, dict) or not search:
        raise ValueError(f"{path}: a [search] table is needed, e.g. [search] ngrams = [1, 2]")
    base = config_from_dict(raw, str(path))
    for key, values in search.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: search.{key} must be a non-empty list of values")
        for value in values:
            config_from_dict({**asdict(base), key: value}, f"{path} [search]")
    return base, search


def config_from_dict(raw: dict[str, Any], source: str) -> TrainConfig:
    raw = dict(raw)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"{source}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    defaults = TrainConfig()
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            raw[key] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ValueError(f"{source}: {key} must be {expected.__name__}, not {type(value).__name__} ({value!r})")
    config = TrainConfig(**raw)
    if config.cleaning not in CLEANING_CHOICES:
        raise ValueError(f"{source}: cleaning must be one of {', '.join(CLEANING_CHOICES)}, not {config.cleaning!r}")
    return config


CLEANING_CHOICES = ("full", "basic")
