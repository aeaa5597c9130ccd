"""Small models anywhere in the config space, and how far the compiled path's scores are from TensorFlow's.

For the property test over the config space (``tests/test_config_space.py``) and its table
(``bench/config_space.py``): a config trained for a moment on a few hundred reviews is a real model of that config
(its vocabulary, its layers, its export), only a weak one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.config import TrainConfig

# sizes that train in a second or two; the keys under test override them
SMALL = {
    "max_tokens": 3000,
    "sequence_length": 300,
    "embedding_dim": 8,
    "hidden_units": 8,
    "max_epochs": 1,
    "batch_size": 64,
    "nb_steps": 20,
}


@dataclass(frozen=True)
class Agreement:
    """The largest |compiled - TensorFlow| on the check texts and on the other texts, and the largest
    |sum of attributions - (score - base)| of the explanations (None when the compiled path refused the model)."""

    check_texts: float | None
    reviews: float | None
    attributions: float | None
    refused: str | None = None  # why the compiled path refused the model

    @property
    def worst(self) -> float:
        values = [v for v in (self.check_texts, self.reviews) if v is not None]
        return max(values) if values else float("inf")


def small_config(**overrides) -> TrainConfig:
    return TrainConfig(name="small", **{**SMALL, **overrides})


def train_small(cfg: TrainConfig, texts: list[str], labels: np.ndarray, validation: int = 64):
    """The exported (end-to-end) Keras model of ``cfg``, trained on ``texts`` (the last ``validation`` of them are
    the validation split, which early stopping and calibration read)."""
    from training.pipeline import train_and_validate

    train = (texts[:-validation], np.asarray(labels[:-validation], dtype=np.float32))
    val = (texts[-validation:], np.asarray(labels[-validation:], dtype=np.float32))
    # the context branch's unlabelled reviews: the training texts again (never the validation split's)
    model, *_ = train_and_validate(cfg, train, val, verbose=0, unlabelled=train[0])
    return model


def agreement(keras_model, reviews: list[str], explained: int = 10) -> Agreement:
    """How the compiled path scores ``keras_model`` against TensorFlow: on the check texts (what the gate reads) and
    on ``reviews``; and whether the explanations of every third check text and the first ``explained`` reviews add
    up (their attributions to the score minus the base value)."""
    from model.compiled.build import from_keras, tensorflow_scores_of
    from model.samples import check_texts
    from model.scorer import Scorer

    scorer = Scorer(keras_model, "probe")
    try:
        fast = from_keras(keras_model)
    except ValueError as exc:
        return Agreement(None, None, None, refused=str(exc))
    scorer.fast = fast
    worst = {}
    for name, texts in (("check", check_texts()), ("reviews", reviews)):
        ours = fast.score(texts).scores
        theirs = tensorflow_scores_of(lambda batch: scorer.inspect_tensorflow(batch).scores, texts)
        worst[name] = float(np.max(np.abs(ours - theirs), initial=0.0))
    from model.explain import Explainer

    explainer = Explainer(scorer)
    gaps = []
    for text in check_texts()[::3] + reviews[:explained]:
        e = explainer.explain(text)
        gaps.append(abs(e.total - (e.score - e.base)))
    return Agreement(worst["check"], worst["reviews"], max(gaps, default=0.0))


def random_model(cfg: TrainConfig, texts: list[str], seed: int = 0):
    """The exported Keras model of ``cfg`` with its vocabulary adapted to ``texts`` and random weights instead of
    fitted ones (the [UNK] row as large as any), the naive-Bayes branch and the calibration too when ``cfg`` has
    them: every layer the config puts in a served model, in a second, without fitting."""
    from training.naive_bayes import NaiveBayesBranch
    from training.pipeline import Branches, build, end_to_end

    rng = np.random.default_rng(seed)
    vectorizer, core = build(cfg, texts)
    for layer in core.layers:
        weights = layer.get_weights()
        if weights:  # embedding rows of size ~1; dense layers that keep the logit in a range where scores differ
            scale = 1.0 if layer.name == "embedding" else 1.0 / np.sqrt(weights[0].shape[0])
            layer.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32) for w in weights])
    size = vectorizer.vocabulary_size()
    naive_bayes = None
    if cfg.nb_branch:
        weights = np.concatenate([[0.0, 0.0], rng.normal(0.0, 0.3, size - 2)])
        naive_bayes = NaiveBayesBranch(weights=weights, bias=0.1, history={})
    context = None
    if cfg.context_branch:  # issue 29: a weight per n-gram, averaged over the known ones
        from training.context import ContextBranch

        weights = np.concatenate([[0.0, 0.0], rng.normal(0.0, 1.0, size - 2)]).astype(np.float32)
        context = ContextBranch(weights=weights, bias=-0.05, record={})
    nb_scores = None
    if cfg.context_branch and cfg.nb_branch and cfg.context_nb_scores:  # folded into the context weights
        from training.context import ContextBranch

        weights = np.concatenate([[0.0, 0.0], rng.normal(0.0, 2.0, size - 2)]).astype(np.float32)
        nb_scores = ContextBranch(weights=weights, bias=0.0, record={})
    calibration = None
    if cfg.calibrate:
        calibration = np.array(
            [0.8] * cfg.pooled_branch + ([1.2] if naive_bayes is not None else [])
            + ([0.9] if context is not None else [])
            + ([0.4] if nb_scores is not None else []) + [-0.1]
        )  # fmt: skip
    branches = Branches(vectorizer, core, naive_bayes, calibration, context, nb_scores, use_pooled=cfg.pooled_branch)
    return end_to_end(cfg, branches)
