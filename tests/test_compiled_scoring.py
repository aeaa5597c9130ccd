"""The compiled scoring path (model/compiled/) computes the TensorFlow model's function: same words after cleaning,
same n-gram counts, scores within 1e-5, on real reviews, hostile text and generated text, whatever the threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import DEFAULT_MODEL
from model.cleaning import words
from model.compiled.kernels import BASIC, TEXT, TOKENS
from model.samples import check_texts, hostile_texts

TOLERANCE = 1e-5


CLEANING_OF_MODE = {TEXT: "full", TOKENS: "tokens", BASIC: "basic"}


def assert_same(fast_scorer, texts: list[str]) -> None:
    ours, theirs = fast_scorer.inspect(texts), fast_scorer.inspect_tensorflow(texts)
    cleaning = CLEANING_OF_MODE[fast_scorer.fast.chars.mode]
    for text, compiled, vectorized in zip(texts, (fast_scorer.fast.words(t) for t in texts), words(texts, cleaning)):
        assert compiled == vectorized, f"cleaning differs on {text[:80]!r}"
    np.testing.assert_array_equal(ours.ngrams, theirs.ngrams)
    np.testing.assert_array_equal(ours.known, theirs.known)
    np.testing.assert_allclose(ours.pooled, theirs.pooled, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=TOLERANCE, rtol=0)


def test_hostile_texts_score_as_tensorflow_does(fast_scorer):
    texts = hostile_texts()
    assert max(len(t) for t in texts) >= 100_000
    assert_same(fast_scorer, texts)


def test_a_nul_ends_the_text_as_in_tensorflow(fast_scorer):
    assert fast_scorer.fast.words("Great\x00 terrible") == ["great"]
    assert_same(fast_scorer, ["Great\x00 terrible", "\x00"])


def test_every_imdb_test_review_scores_as_tensorflow_does(fast_scorer, imdb_test_rows):
    texts = [row.text for row in imdb_test_rows]
    assert len(texts) == 25_000
    worst = 0.0
    for i in range(0, len(texts), 1024):
        batch = texts[i : i + 1024]
        ours, theirs = fast_scorer.inspect(batch), fast_scorer.inspect_tensorflow(batch)
        np.testing.assert_array_equal(ours.ngrams, theirs.ngrams)
        np.testing.assert_array_equal(ours.known, theirs.known)
        worst = max(worst, float(np.abs(ours.scores - theirs.scores).max()))
    assert worst <= TOLERANCE, f"largest score difference {worst:.3g}"


def test_scores_do_not_depend_on_the_threads_nor_on_concurrent_callers(fast_scorer, imdb_test_rows):
    """A batch is spread over threads text by text, so one thread or four give the same bits; two callers at once
    (the worker's thread and the page's, say) take turns and get what each gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [row.text for row in imdb_test_rows[:600]] + hostile_texts()
    fast = fast_scorer.fast
    before = fast.threads
    try:
        by_threads = {}
        for threads in (1, 2, 4):
            fast.threads = threads
            by_threads[threads] = fast.score(texts)
        for threads in (2, 4):
            np.testing.assert_array_equal(by_threads[threads].pooled, by_threads[1].pooled)
            np.testing.assert_array_equal(by_threads[threads].scores, by_threads[1].scores)
        fast.threads = 2
        batches = [texts[i : i + 64] for i in range(0, len(texts), 64)] * 3
        alone = [fast.score(b).scores for b in batches]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda b: fast.score(b).scores, batches))
        for mine, theirs in zip(together, alone):
            np.testing.assert_array_equal(mine, theirs)
    finally:
        fast.threads = before


# characters that exercise each pass: markup, entities, negations, quotes, cp1252 controls, sigma, NUL, whitespace
_TRICKY = list("<>&;#/ brBRnNtTwWoOcCaA'!?`´\u0085\u0091\u0092\u0093\u0096\u2018\u2019Σσİ\x00\t\n\x0b\x0c\r\u00a0")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.text(alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(_TRICKY)), max_size=80),
        min_size=1,
        max_size=6,
    )
)
def test_generated_text_scores_as_tensorflow_does(fast_scorer, texts):
    assert_same(fast_scorer, texts)


def test_concurrent_callers_are_safe_on_numbas_own_threading_layer(compiled_cache):
    """Without OpenMP or TBB installed, numba falls back to its "workqueue" layer, which aborts the whole process
    when two threads start a parallel loop at once; the scorer lets one in at a time."""
    code = (
        "import numba; from concurrent.futures import ThreadPoolExecutor; from pathlib import Path; "
        "from model.scorer import load_scorer; "
        f"s = load_scorer({str(DEFAULT_MODEL)!r}, scoring='compiled', cache_dir=Path({str(compiled_cache)!r}), "
        "threads=2); texts = ['a wonderful film ' * 50, 'dull and long ' * 80] * 64; "
        "pool = ThreadPoolExecutor(4); results = list(pool.map(lambda _: s.score(texts), range(40))); "
        "print(numba.threading_layer(), len(results))"
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["workqueue", "40"]


# Every cleaning, with and without [UNK] pooled: models of those configs with random weights (every layer a served
# model has; the [UNK] row as large as any other), built without fitting.
SPACE = [(c, m) for c in ("full", "tokens", "basic") for m in (False, True)]


@pytest.fixture(scope="module")
def space_scorers(imdb_test_rows):
    from model.compiled.build import from_keras
    from model.samples import sample_texts
    from model.scorer import Scorer
    from training.space import random_model, small_config

    texts = sample_texts() + [row.text for row in imdb_test_rows[:300]]
    scorers = {}
    for cleaning, mask_unknown in SPACE:
        cfg = small_config(
            cleaning=cleaning, mask_unknown=mask_unknown, ngrams=3, sequence_length=700, nb_branch=True,
            calibrate=True, quantize="int8" if mask_unknown else "none",
        )  # fmt: skip
        model = random_model(cfg, texts)
        scorers[cleaning, mask_unknown] = Scorer(model, f"{cleaning}-{mask_unknown}", fast=from_keras(model))
    return scorers


@pytest.mark.integration  # loads models into TensorFlow
@pytest.mark.parametrize(("cleaning", "mask_unknown"), SPACE)
def test_every_cleaning_with_and_without_unknown_scores_as_tensorflow_does(
    space_scorers, imdb_test_rows, cleaning, mask_unknown
):
    scorer = space_scorers[cleaning, mask_unknown]
    assert scorer.fast.pool_unknown == (not mask_unknown)  # read from the model: ForgetUnknown or not
    assert_same(scorer, check_texts() + [row.text for row in imdb_test_rows[-300:]])


@pytest.mark.integration  # loads models into TensorFlow
@pytest.mark.parametrize("cleaning", ["full", "basic"])
def test_the_check_texts_catch_a_scorer_that_drops_unknown_ngrams(space_scorers, cleaning):
    """The defect of issue 26: a model trained with ``mask_unknown = false`` pools [UNK], and tables that leave it
    out must fail the gate on the check texts (unknown words in every share, texts past the sequence length)."""
    from model.compiled.build import agreement

    scorer = space_scorers[cleaning, False]
    texts = check_texts()
    scorer.fast.pool_unknown = False
    try:
        assert agreement(scorer.fast, scorer.inspect_tensorflow(texts).scores, texts) > 100 * TOLERANCE
    finally:
        scorer.fast.pool_unknown = True
    assert agreement(scorer.fast, scorer.inspect_tensorflow(texts).scores, texts) <= TOLERANCE


@pytest.mark.integration  # loads models into TensorFlow
def test_basic_cleaning_is_keras_lower_and_strip_punctuation(space_scorers):
    """Keras' own cleaning lowercases ASCII only, removes ASCII punctuation (joining its neighbours), reads past a NUL
    and splits on ASCII whitespace only."""
    fast = space_scorers["basic", False].fast
    assert fast.words("Don't STOP.me ÉCOLE a_b\x00c\u00a0d\x1ce\vf") == [
        "dont",
        "stopme",
        "École",
        "ab\x00c\u00a0d\x1ce",
        "f",
    ]


@pytest.mark.integration  # loads models into TensorFlow
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.text(alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(_TRICKY)), max_size=60),
        min_size=1,
        max_size=4,
    )
)
def test_generated_text_scores_as_tensorflow_does_in_every_cleaning(space_scorers, texts):
    for cleaning in ("tokens", "basic"):
        assert_same(space_scorers[cleaning, False], texts)
