"""`sentiment evaluate`: a model's metrics on any labelled review file."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from model.scorer import load_scorer
from training.datasets import read_reviews
from training.metrics import classification_metrics


def evaluate_file(model: Path, data: Path, *, split: str = "test", limit: int | None = None, seed: int = 0) -> dict:
    """Metrics on the labelled rows of ``data``; ``limit`` takes a seeded random sample (files are often sorted by
    label, so their first rows would be one class). ``warnings`` in the result says what makes a figure unreliable."""
    rows = [r for r in read_reviews(data, split=split) if r.label is not None]
    if not rows:
        raise ValueError(f"{data} holds no labelled reviews (a label column of 0/1 is needed)")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    scorer = load_scorer(model)
    texts = [r.text for r in rows]
    scores = np.concatenate([scorer.score(texts[i : i + 512]) for i in range(0, len(texts), 512)])
    labels = np.array([r.label for r in rows])
    warnings = []
    if len(set(labels.tolist())) < 2:
        only = "positive" if labels[0] == 1 else "negative"
        warnings.append(f"every review evaluated is {only}: precision, recall and ROC AUC say nothing here")
    return {
        "model_version": scorer.version,
        "data": str(data),
        "sample": f"random {len(rows)} (seed {seed})" if limit is not None else "all",
        **classification_metrics(labels, scores),
        "warnings": warnings,
    }
