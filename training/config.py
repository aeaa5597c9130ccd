"""Training configuration: every hyperparameter, read from one TOML file. Unknown keys are errors."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    name: str = "seed"
    # data
    validation_fraction: float = 0.1
    split_seed: int = 1337
    # vectorization
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
    max_epochs: int = 20
    patience: int = 2
    seed: int = 42

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return replace(self, **overrides)


def load_config(path: Path | str) -> TrainConfig:
    """Read a config file; an unknown key or a value of the wrong type is an error that names it."""
    path = Path(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    defaults = TrainConfig()
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            raw[key] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ValueError(f"{path}: {key} must be {expected.__name__}, not {type(value).__name__} ({value!r})")
    return TrainConfig(**raw)
