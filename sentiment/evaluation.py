"""`sentiment evaluate`: a model's metrics on any labelled review file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.scorer import load_scorer
from sentiment.datasets import read_reviews
from training.metrics import classification_metrics


def evaluate_file(model: Path, data: Path, *, split: str = "test", limit: int | None = None) -> dict:
    rows = [r for r in read_reviews(data, split=split) if r.label is not None]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{data} holds no labelled reviews (a label column of 0/1 is needed)")
    scorer = load_scorer(model)
    texts = [r.text for r in rows]
    scores = np.concatenate([scorer.score(texts[i : i + 512]) for i in range(0, len(texts), 512)])
    labels = np.array([r.label for r in rows])
    return {"model_version": scorer.version, "data": str(data), **classification_metrics(labels, scores)}
