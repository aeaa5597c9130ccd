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
    # vectorization; cleaning: "full" (model.cleaning.clean_text), "tokens" (clean_tokens: punctuation characters
    # as tokens of their own) or "basic" (lowercase, strip punctuation)
    cleaning: str = "full"
    max_tokens: int = 20_000
    ngrams: int = 1
    sequence_length: int = 500
    # average over known n-grams only (out-of-vocabulary ones are dropped, not pooled as one "[UNK]")
    mask_unknown: bool = False
    # model
    embedding_dim: int = 32
    hidden_units: int = 32
    dropout: float = 0.0
    # the naive-Bayes branch (training.naive_bayes): a weight per distinct known n-gram, summed into the logit beside
    # the pooled branch's; fitted by full-batch Adam with an L2 penalty for a fixed number of steps
    nb_branch: bool = False
    nb_l2: float = 3e-4
    nb_learning_rate: float = 3e-3
    nb_steps: int = 250
    nb_smoothing: float = 1.0
    # the context branch (training.context, issue 29): a weight per n-gram from the unlabelled reviews (imdb_unsup:
    # train/unsup/ of an aclImdb folder or tarball), averaged over the review's known n-grams and added to the logit:
    # reviews -> context_dims-dimension SVD of idf-weighted binary unigrams; an n-gram in at least
    # context_min_reviews of the training and unlabelled reviews -> the mean vector of those reviews; a logistic
    # regression (L2 context_l2) on a review's mean n-gram vector, folded into one weight per n-gram
    context_branch: bool = False
    context_dims: int = 200
    context_min_reviews: int = 5
    context_l2: float = 1e-3
    # weigh the branches and calibrate (Platt scaling with one branch) by logistic regression on the validation
    # split's logits of the held-out fit; the exported model carries the result in its weights
    calibrate: bool = False
    # fitting
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # AdamW's decoupled weight decay; 0 is plain Adam
    max_epochs: int = 20
    patience: int = 2
    # what early stopping watches on the validation split: "val_loss" (lowest) or "val_accuracy" (highest)
    monitor: str = "val_loss"
    # after early stopping, fit once more on all of imdb_train (validation split included) for the
    # number of epochs validation chose; the validation figures stay those of the held-out fit
    refit_on_all: bool = False
    seed: int = 42
    # export: "int8" stores the embedding as int8 with a scale per row (a quarter of the size); "none" float32
    quantize: str = "none"

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
    if config.monitor not in MONITOR_CHOICES:
        raise ValueError(f"{source}: monitor must be one of {', '.join(MONITOR_CHOICES)}, not {config.monitor!r}")
    if config.quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"{source}: quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {config.quantize!r}")
    return config


CLEANING_CHOICES = ("full", "tokens", "basic")
QUANTIZE_CHOICES = ("none", "int8")
MONITOR_CHOICES = ("val_loss", "val_accuracy")
