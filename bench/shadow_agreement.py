"""What the shadow metrics say for two versions: agreement, mean score difference and each one's accuracy.

    .venv/bin/python bench/shadow_agreement.py SHADOW_FOLDER [--live model/default] [--reviews 5000]

Scores real ``imdb_test`` reviews in batches of 256 through the worker's own ``BatchScorer`` with the live version
and the shadow one set, and computes what ``sentiment_shadow_agreement`` and
``sentiment_shadow_mean_abs_difference`` would show, plus each version's accuracy on the labels (which the stream
does not have).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import DEFAULT_MODEL, Settings  # noqa: E402
from model.scorer import ModelArtifact, load_configured_scorer  # noqa: E402
from stream.ingest.batch import BatchScorer, Incoming  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shadow", type=Path)
    parser.add_argument("--live", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--reviews", type=int, default=5000)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = random.Random(0).sample(list(read_reviews(data / "imdb_test.csv.gz")), args.reviews)
    settings = Settings()
    live = load_configured_scorer(ModelArtifact.at(args.live), settings)
    shadow = load_configured_scorer(ModelArtifact.at(args.shadow), settings)
    batch_scorer = BatchScorer(live, max_text_chars=50_000, max_message_bytes=1_000_000)
    batch_scorer.shadow = shadow
    ours, theirs, labels = [], [], []
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        messages = [
            Incoming(json.dumps({"review_id": r.review_id, "movie_id": r.movie_id, "text": r.text}).encode())
            for r in chunk
        ]
        result = batch_scorer.process(messages)
        ours += [s.score for s in result.sentiments]
        theirs += result.shadow.scores.tolist()
        labels += [r.label for r in chunk]
    ours, theirs, labels = np.asarray(ours), np.asarray(theirs), np.asarray(labels)
    agreement = float(np.mean((ours >= 0.5) == (theirs >= 0.5)))
    difference = float(np.mean(np.abs(ours - theirs)))
    print(
        f"{len(rows):,} imdb_test reviews; live {live.version} ({live.scoring}) accuracy "
        f"{np.mean((ours >= 0.5) == labels):.4f}, shadow {shadow.version} ({shadow.scoring}) accuracy "
        f"{np.mean((theirs >= 0.5) == labels):.4f}; agreement {agreement:.4f}, mean |score difference| "
        f"{difference:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
