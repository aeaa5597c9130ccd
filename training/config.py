"""Training configuration: every hyperparameter, read from one TOML file, checked against one schema.

The schema is :class:`TrainConfig` itself: each field carries its :class:`Key` (type, allowed values or range, default,
what it changes). :func:`config_from_dict` validates against it (an unknown key is an error that names the closest
valid one), ``sentiment train --list-keys`` prints it and ``docs/training-config.md`` is generated from it
(:func:`reference_markdown`; ``python -m training.config --write`` writes the page, a test checks it is current).
"""

from __future__ import annotations

import difflib
import re
import sys
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CLEANING_CHOICES = ("full", "tokens", "basic")
QUANTIZE_CHOICES = ("none", "int8")
MONITOR_CHOICES = ("val_loss", "val_accuracy")
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "training-config.md"


class ConfigError(ValueError):
    """A config the trainer refuses, before training: the message names the key."""


@dataclass(frozen=True)
class Key:
    """One config key as the schema describes it."""

    name: str
    type: type
    default: Any
    description: str  # one line: what it changes
    choices: tuple | None = None
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound (a rate, a fraction: more than 0)
    below: float | None = None  # exclusive upper bound
    pattern: str | None = None  # for a string without choices
    group: str = ""
    served: bool = False  # it changes the function the exported model computes (not only how it is fitted)
    # the values the config-space checks train (tests/test_config_space.py, bench/config_space.py): small, and the
    # edges of the range where they matter to the served model
    probes: tuple = ()

    def allowed(self) -> str:
        """The allowed values, as the reference shows them."""
        if self.choices is not None:
            return ", ".join(_show(c) for c in self.choices)
        if self.type is bool:
            return "true, false"
        low = f"> {_show(self.above)}" if self.above is not None else (
            f">= {_show(self.minimum)}" if self.minimum is not None else "")  # fmt: skip
        high = f"< {_show(self.below)}" if self.below is not None else (
            f"<= {_show(self.maximum)}" if self.maximum is not None else "")  # fmt: skip
        if self.pattern:
            return f"a string matching `{self.pattern}`"
        return " and ".join(part for part in (low, high) if part) or "any"

    def check(self, value: Any, source: str) -> Any:
        """``value`` as this key's type (an int is accepted for a float), or a :class:`ConfigError` naming the key."""
        expected = self.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(
                f"{source}: {self.name} must be {expected.__name__}, not {type(value).__name__} ({value!r})"
            )
        wrong = (
            (self.choices is not None and value not in self.choices)
            or (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
            or (self.pattern is not None and not re.fullmatch(self.pattern, value))
        )
        if wrong:
            raise ConfigError(f"{source}: {self.name} must be {self.allowed()}, not {_show(value)}")
        return value

    def probe_values(self) -> tuple:
        return self.probes or (self.choices if self.choices is not None else (self.default,))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:_}"
    return repr(value)


def key(default: Any, description: str, **schema: Any) -> Any:
    """A dataclass field whose metadata is the key's schema (the name and type are filled in from the field)."""
    return field(default=default, metadata={"key": (description, schema)})


@dataclass(frozen=True)
class TrainConfig:
    name: str = key("seed", "the run's name: its folder is NAME-VERSION", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                    group="run")  # fmt: skip
    # data
    validation_fraction: float = key(
        0.1, "share of imdb_train held out (by film) for early stopping and calibration", above=0.0, maximum=0.5,
        group="data",
    )  # fmt: skip
    split_seed: int = key(1337, "which films go to the validation split", minimum=0, maximum=2**32 - 1, group="data")
    # vectorization
    cleaning: str = key(
        "full",
        "full: markup, entities, negations cleaned, ! and ? words, other punctuation dropped; tokens: the same, "
        "every punctuation character a word; basic: Keras' lower_and_strip_punctuation",
        choices=CLEANING_CHOICES, group="vectorization", served=True,
    )  # fmt: skip
    max_tokens: int = key(
        20_000, "vocabulary size, padding and [UNK] included (the most frequent n-grams of the training texts)",
        minimum=10, maximum=1_000_000, group="vectorization", served=True, probes=(10, 3000, 60_000),
    )  # fmt: skip
    ngrams: int = key(
        1, "n-grams in the vocabulary: 1 (words), 2 (and pairs of words), 3 (and triples)",
        choices=(1, 2, 3), group="vectorization", served=True,
    )  # fmt: skip
    # at most 10,000: TensorFlow sums the pooled vectors in float32, and its rounding error grows with the length (2e-5
    # at 50,000 n-grams of unit-scale vectors, 8e-6 at 10,000); the compiled path would differ from it by that much
    sequence_length: int = key(
        500, "n-grams read per review (all words, then pairs, then triples); the rest of a longer review is cut",
        minimum=1, maximum=10_000, group="vectorization", served=True, probes=(1, 12, 300, 10_000),
    )  # fmt: skip
    mask_unknown: bool = key(
        False, "average over known n-grams only; false pools every unknown n-gram as one learned [UNK] vector",
        group="vectorization", served=True, probes=(False, True),
    )  # fmt: skip
    # model
    embedding_dim: int = key(32, "size of each n-gram's vector", minimum=1, maximum=512, group="model", served=True,
                             probes=(1, 8, 96))  # fmt: skip
    hidden_units: int = key(32, "units of the hidden relu layer", minimum=1, maximum=1024, group="model", served=True,
                            probes=(1, 8, 128))  # fmt: skip
    dropout: float = key(0.0, "dropout after the pooling, while fitting (none when serving)", minimum=0.0, below=1.0,
                         group="model", served=True, probes=(0.0, 0.5))  # fmt: skip
    pooled_branch: bool = key(
        True, "fit the pooled branch (the embedding average -> Dense -> Dense(1) above); false: it is not fitted and "
        "is served with weight 0 (its layers stay in the model; make them small), and no epochs are run (needs "
        "nb_branch or context_branch)", group="model", served=True, probes=(True, False),
    )  # fmt: skip
    # the naive-Bayes branch (training.naive_bayes)
    nb_branch: bool = key(
        False, "add the naive-Bayes branch: a weight per distinct known n-gram, summed into the logit",
        group="naive-Bayes branch", served=True, probes=(False, True),
    )  # fmt: skip
    nb_l2: float = key(3e-4, "the naive-Bayes branch's L2 penalty", minimum=0.0, maximum=1.0,
                       group="naive-Bayes branch", probes=(0.0, 3e-4))  # fmt: skip
    nb_learning_rate: float = key(3e-3, "the naive-Bayes branch's full-batch Adam learning rate", above=0.0,
                                  maximum=1.0, group="naive-Bayes branch", probes=(3e-3, 0.1))  # fmt: skip
    nb_steps: int = key(250, "full-batch Adam steps of the naive-Bayes branch", minimum=1, maximum=100_000,
                        group="naive-Bayes branch", probes=(1, 20))  # fmt: skip
    nb_smoothing: float = key(1.0, "the naive-Bayes log-count ratios' additive smoothing", above=0.0, maximum=100.0,
                              group="naive-Bayes branch", probes=(0.5, 1.0))  # fmt: skip
    # issue 29, round 6: self-training on the unlabelled reviews (training/TUNING.md, rounds 5 and 6)
    nb_self_training: float = key(
        0.0, "share of the unlabelled reviews the naive-Bayes branch labels itself: it scores them, the ones it is "
        "surest of (largest |logit|) join the training reviews with its labels, and it is fitted again; 0 is off "
        "(needs nb_branch and the unlabelled reviews)", minimum=0.0, maximum=1.0, group="naive-Bayes branch",
        probes=(0.0, 0.5),
    )  # fmt: skip
    # the context branch (training.context, issue 29): a weight per n-gram from the unlabelled reviews (imdb_unsup:
    # train/unsup/ of an aclImdb folder or tarball), averaged over the review's known n-grams and added to the logit
    context_branch: bool = key(
        False, "add the context branch: a weight per n-gram learned from the unlabelled reviews' words, averaged over "
        "the review's known n-grams, added to the logit", group="context branch", served=True, probes=(False, True),
    )  # fmt: skip
    context_dims: int = key(200, "dimensions of the SVD of the reviews' idf-weighted binary unigrams", minimum=1,
                            maximum=1000, group="context branch")  # fmt: skip
    # issue 29, round 8: a second view of the reviews' words beside the unigram SVD (training/TUNING.md)
    context_bigram_dims: int = key(
        0, "dimensions of a second SVD, of the reviews' idf-weighted binary bigrams; its n-gram means sit beside the "
        "unigram SVD's in the context branch's one logistic regression (0: none)", minimum=0,
        maximum=1000, group="context branch", probes=(0, 4),
    )  # fmt: skip
    context_min_reviews: int = key(5, "an n-gram gets a context vector when at least this many training and "
                                   "unlabelled reviews hold it", minimum=1, maximum=1_000_000,
                                   group="context branch")  # fmt: skip
    context_l2: float = key(1e-3, "the L2 penalty of the logistic regression on a review's mean n-gram vector",
                            minimum=0.0, maximum=100.0, group="context branch")  # fmt: skip
    context_nb_scores: bool = key(
        False, "with the context branch, a second per-n-gram table: the mean naive-Bayes logit of the unlabelled "
        "reviews holding the n-gram (at least context_min_reviews of them), averaged over the review's known n-grams "
        "and weighed by the calibration as a branch of its own, then folded into the context branch's weights (needs "
        "nb_branch)", group="context branch", served=True, probes=(False, True),
    )  # fmt: skip
    calibrate: bool = key(
        False, "weigh the branches and calibrate by logistic regression on the validation split (in the weights)",
        group="calibration", served=True, probes=(False, True),
    )  # fmt: skip
    # fitting
    batch_size: int = key(64, "reviews per gradient step", minimum=1, maximum=65_536, group="fitting",
                          probes=(16, 64))  # fmt: skip
    learning_rate: float = key(1e-3, "Adam's learning rate", above=0.0, maximum=1.0, group="fitting",
                               probes=(1e-3, 0.05))  # fmt: skip
    weight_decay: float = key(0.0, "AdamW's decoupled weight decay; 0 is plain Adam", minimum=0.0, maximum=1.0,
                              group="fitting", probes=(0.0, 0.01))  # fmt: skip
    max_epochs: int = key(20, "epochs at most (early stopping may end sooner)", minimum=1, maximum=1000,
                          group="fitting", probes=(1,))  # fmt: skip
    patience: int = key(2, "epochs without improvement before early stopping", minimum=0, maximum=1000,
                        group="fitting", probes=(0, 2))  # fmt: skip
    monitor: str = key("val_loss", "what early stopping watches: val_loss (lowest) or val_accuracy (highest)",
                       choices=MONITOR_CHOICES, group="fitting")  # fmt: skip
    refit_on_all: bool = key(
        False, "after early stopping, fit again on all of imdb_train for the epochs validation chose",
        group="fitting", probes=(False, True),
    )  # fmt: skip
    seed: int = key(42, "the fit's random seed (initial weights, shuffling)", minimum=0, maximum=2**32 - 1,
                    group="fitting", probes=(0, 42))  # fmt: skip
    # export
    quantize: str = key(
        "none", "the exported embedding: none (float32) or int8 (a scale per row: a quarter of the size)",
        choices=QUANTIZE_CHOICES, group="export", served=True,
    )  # fmt: skip

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return replace(self, **overrides)


def _keys() -> tuple[Key, ...]:
    out = []
    for f in fields(TrainConfig):
        description, schema = f.metadata["key"]
        assert f.default is not MISSING
        out.append(Key(f.name, type(f.default), f.default, description, **schema))
    return tuple(out)


KEYS: tuple[Key, ...] = _keys()
KEY = {k.name: k for k in KEYS}


def load_config(path: Path | str) -> TrainConfig:
    """Read a config file; an unknown key or a value the schema does not allow is an error that names it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML ({exc})") from exc
    return config_from_dict(raw, str(path))


def load_search(path: Path | str) -> tuple[TrainConfig, dict[str, list[Any]]]:
    """A config file with a ``[search]`` table (key = list of values to try) for ``sentiment tune``."""
    path = Path(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    search = raw.pop("search", None)
    if not isinstance(search, dict) or not search:
        raise ValueError(f"{path}: a [search] table is needed, e.g. [search] ngrams = [1, 2]")
    base = config_from_dict(raw, str(path))
    for name, values in search.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: search.{name} must be a non-empty list of values")
        for value in values:
            config_from_dict({**asdict(base), name: value}, f"{path} [search]")
    return base, search


def config_from_dict(raw: dict[str, Any], source: str) -> TrainConfig:
    """The config of ``raw`` (keys not given take their defaults), each value checked against the schema."""
    values = {}
    for name, value in raw.items():
        if name not in KEY:
            raise ConfigError(f"{source}: unknown config key {name!r}{_closest(name)}")
        values[name] = KEY[name].check(value, source)
    cfg = TrainConfig(**values)
    if not cfg.pooled_branch and not (cfg.nb_branch or cfg.context_branch):
        raise ConfigError(f"{source}: pooled_branch = false needs another branch: nb_branch or context_branch = true")
    needs = (
        ("nb_self_training", cfg.nb_self_training > 0, ("nb_branch",)),
        ("context_nb_scores", cfg.context_nb_scores, ("nb_branch", "context_branch")),
        ("context_bigram_dims", cfg.context_bigram_dims > 0, ("context_branch",)),
    )
    for name, on, branches in needs:
        off = [b for b in branches if not getattr(cfg, b)]
        if on and off:
            raise ConfigError(f"{source}: {name} needs {' and '.join(f'{b} = true' for b in off)}")
    return cfg


def _closest(name: str) -> str:
    """``; did you mean 'x'?`` for the valid key closest to ``name`` (or the list of keys when none is close)."""
    close = difflib.get_close_matches(name, list(KEY), n=1, cutoff=0.6)
    if not close:  # a key written in another case, or with dashes
        close = difflib.get_close_matches(name.lower().replace("-", "_"), list(KEY), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; the keys are {', '.join(KEY)} (sentiment train --list-keys)"


def reference_text() -> str:
    """The keys as ``sentiment train --list-keys`` prints them: name, type, allowed values, default, description."""
    lines = []
    group = None
    width = max(len(k.name) for k in KEYS)
    for k in KEYS:
        if k.group != group:
            group = k.group
            lines.append(f"{'' if not lines else chr(10)}[{group}]")
        lines.append(f"  {k.name:<{width}}  {k.type.__name__:<5}  default {_show(k.default)}; allowed: {k.allowed()}")
        lines.append(f"  {'':<{width}}  {k.description}")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """``docs/training-config.md``, generated from the schema."""
    rows = "\n".join(
        f"| `{k.name}` | {k.group} | {k.type.__name__} | {_md(k.allowed())} | `{_show(k.default)}` | "
        f"{'yes' if k.served else ''} | {_md(k.description)} |"
        for k in KEYS
    )
    return f"""# Training config reference

<!-- generated from training/config.py by `python -m training.config --write`; tests/test_training_config.py checks
it is current: edit the schema, not this page -->

`sentiment train --config FILE.toml` reads one TOML file of the keys below; a key not given takes its default. A
key that is not in this table, or a value outside its allowed values, is refused before training, in one line that
names the key (exit 2); a misspelt key is answered with the closest valid one. `sentiment train --list-keys` prints
the same reference.

"Served" marks the keys that change the function the exported model computes (the others change only how it is
fitted). Every combination of their allowed values is served by the compiled scorer (`model/compiled/`) within 1e-5
of TensorFlow and explained exactly; `tests/test_config_space.py` draws configs from the whole table to check it, and
`bench/config_space.py` prints each key's largest difference. `sentiment train` ends by saying how its model will be
served.

| key | group | type | allowed | default | served | what it changes |
|---|---|---|---|---|---|---|
{rows}
"""


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        DOCS_PAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_PAGE.write_text(reference_markdown())
        print(f"wrote {DOCS_PAGE}")
        return 0
    print(reference_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
