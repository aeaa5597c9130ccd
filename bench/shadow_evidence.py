"""Shadow against live on real models: how soon the paired comparison tells a weaker model from the live one, and
that the same model as its own shadow differs by nothing.

    .venv/bin/sentiment train --config training/weak.toml          # a small model, one epoch: runs/weak-<version>
    .venv/bin/python bench/shadow_evidence.py runs/weak-<version> [--reviews 5000]

Both models score the same shuffled `imdb_test` reviews (TensorFlow, the models' own function); the scores go
through ``LiveAccuracy`` in batches of 256, as the worker would feed it with a shadow set. Prints the comparison
line as rated reviews accumulate, each model's window accuracy against the committed model's alert floor, and the
same model as shadow.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import DEFAULT_MODEL, Settings  # noqa: E402
from model.scorer import ModelArtifact, load_scorer  # noqa: E402
from stream.observe.accuracy import LiveAccuracy, accuracy_floor  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402

BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shadow", type=Path, help="the shadow model's artifact folder")
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500, help="print the comparison every this many reviews")
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(rows)
    rows = rows[: args.reviews]
    texts, ratings = [r.text for r in rows], [r.rating for r in rows]
    live, shadow = load_scorer(DEFAULT_MODEL), load_scorer(args.shadow)
    live_scores, shadow_scores = live.score(texts).tolist(), shadow.score(texts).tolist()
    settings = Settings()
    floor = accuracy_floor(ModelArtifact.at(DEFAULT_MODEL).metrics(), settings.accuracy_margin)
    print(f"live {live.version} (committed), shadow {shadow.version} ({args.shadow}); floor {100 * floor:.1f}%")

    tracker = LiveAccuracy(settings.accuracy_window, settings.accuracy_min_reviews, floor)
    printed = 0
    for start in range(0, len(rows), BATCH):
        cut = slice(start, start + BATCH)
        tracker.add(ratings[cut], live_scores[cut], live.version, shadow_scores[cut], shadow.version)
        if start + BATCH - printed >= args.every or start + BATCH >= len(rows):
            printed = start + BATCH
            compared = tracker.compared()
            line = compared.text() if compared else f"collecting ({tracker.comparison.reviews} rated reviews)"
            print(f"  after {min(printed, len(rows)):>6,} reviews: {line}")
    for v in tracker.versions():
        verdict = "below the floor: SentimentAccuracyLow would fire" if v.accuracy < floor else "above the floor"
        print(
            f"{v.role} {v.version}: accuracy {100 * v.accuracy:.1f}%, calibration error {v.calibration_error:.3f} "
            f"on the last {v.reviews:,} rated reviews, {verdict}"
        )

    same = LiveAccuracy(settings.accuracy_window, settings.accuracy_min_reviews, floor)
    for start in range(0, len(rows), BATCH):
        cut = slice(start, start + BATCH)
        same.add(ratings[cut], live_scores[cut], live.version, live_scores[cut], live.version)
    print(f"the same model as shadow: {same.compared().text()}")


if __name__ == "__main__":
    main()
