"""Every model `sentiment train` accepts is served as trained: configs drawn from every key's allowed values
(training/config.py), each a small model trained a few steps on a few hundred reviews, scored by the compiled path
within 1e-5 of TensorFlow on the check texts (what the gate reads) and on 500 imdb_test reviews, and explained
exactly (the attributions add up to the score minus the base value). ``bench/config_space.py`` prints each key's
largest difference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from training.config import KEYS, TrainConfig
from training.space import SMALL, agreement, train_small

pytestmark = pytest.mark.integration  # trains with TensorFlow

TOLERANCE = 1e-5
# the largest sizes drawn: a model a few hundred reviews train in seconds (the edges of the ranges are the schema's)
SIZE_CAPS = {"max_tokens": 60_000, "sequence_length": 10_000, "embedding_dim": 96, "hidden_units": 128}


def allowed(key) -> st.SearchStrategy:
    """Values of ``key`` that its schema allows: every choice; for a size that changes the served model, its probes
    (small, the edges) or any number up to a cap; for the rest, their probes (a few fitting steps)."""
    if key.name == "name":
        return st.just("space")
    if key.choices is not None or key.type is bool:
        return st.sampled_from(key.probe_values())
    probes = st.sampled_from(key.probe_values())
    if key.served and key.type is int:
        return st.one_of(probes, st.integers(int(key.minimum), min(int(key.maximum), SIZE_CAPS[key.name])))
    if key.served and key.type is float:
        return st.one_of(probes, st.floats(key.minimum, 0.9))
    return probes


# a model needs one fitted branch at least (config_from_dict refuses pooled_branch = false alone)
configs = (
    st.fixed_dictionaries({k.name: allowed(k) for k in KEYS})
    .map(lambda raw: TrainConfig(**raw))
    .filter(lambda cfg: cfg.pooled_branch or cfg.nb_branch or cfg.context_branch)
)


@pytest.fixture(scope="module")
def corpus(data_dir):
    from training.datasets import read_reviews

    rng = np.random.default_rng(26)
    train = list(read_reviews(data_dir / "imdb_train.csv.gz"))
    test = list(read_reviews(data_dir / "imdb_test.csv.gz"))
    picked = rng.choice(len(train), size=300, replace=False)
    texts, labels = [train[i].text for i in picked], np.array([train[i].label for i in picked])
    reviews = [test[i].text for i in rng.choice(len(test), size=500, replace=False)]
    return texts, labels, reviews


# every branch at once (issue 29: the naive-Bayes branch self-trained on the unlabelled reviews, the context branch
# with its second view and the nb_scores table folded into its weights), and the same without the pooled branch,
# drawn or not
EVERY_BRANCH = TrainConfig(
    name="space", **{**SMALL, "nb_branch": True, "calibrate": True, "context_branch": True, "context_dims": 8,
                     "context_bigram_dims": 4, "context_min_reviews": 2, "nb_self_training": 0.5,
                     "context_nb_scores": True, "mask_unknown": True, "ngrams": 3, "cleaning": "tokens",
                     "quantize": "int8"},
)  # fmt: skip


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@given(cfg=configs)
@example(cfg=EVERY_BRANCH)
@example(cfg=EVERY_BRANCH.with_overrides(pooled_branch=False, embedding_dim=1, hidden_units=1))
def test_every_config_is_served_compiled_as_tensorflow_scores_it(corpus, cfg):
    texts, labels, reviews = corpus
    found = agreement(train_small(cfg, texts, labels), reviews)
    assert found.refused is None, f"the compiled path refused the model: {found.refused}"
    assert found.check_texts <= TOLERANCE, f"{found.check_texts:.3g} from TensorFlow on the check texts"
    assert found.reviews <= TOLERANCE, f"{found.reviews:.3g} from TensorFlow on 500 imdb_test reviews"
    assert found.attributions <= TOLERANCE, f"attributions {found.attributions:.3g} from the score minus the base"


def test_the_small_sizes_are_allowed_by_the_schema():
    from dataclasses import asdict

    from training.config import config_from_dict

    config_from_dict({**asdict(TrainConfig()), **SMALL}, "SMALL")
