"""Drift from a cold start: how high PSI goes on in-domain traffic while the window fills, for several minimum
window sizes, over repeated cold starts (random orders of imdb_test), and after how many Amazon reviews it crosses.

    .venv/bin/python bench/drift_warmup.py [--starts 20] [--json runs/drift_warmup.json]

The worker exports PSI only once the window holds ``SENTIMENT_DRIFT_MIN_SCORES`` scores; this is how that default
was chosen. Batches of 256, as the worker takes them; window and threshold from the settings.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from core.settings import DEFAULT_MODEL, Settings
from model.scorer import ModelArtifact, load_scorer
from stream.observe.drift import DriftMonitor
from training.datasets import read_reviews, shared_data_dir

BATCH = 256


def psi_per_batch(scores: np.ndarray, monitor: DriftMonitor) -> list[float]:
    out = []
    for i in range(0, len(scores), BATCH):
        monitor.add(scores[i : i + BATCH])
        out.append(monitor.psi())  # NaN until the window holds min_scores
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="cold starts per minimum (default 20)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    settings = Settings()
    artifact = ModelArtifact.at(DEFAULT_MODEL)
    scorer = load_scorer(artifact)
    reference = artifact.reference_scores()

    def score(texts: list[str]) -> np.ndarray:
        return np.concatenate([scorer.score(texts[i : i + 1024]) for i in range(0, len(texts), 1024)])

    imdb = score([r.text for r in read_reviews(data / "imdb_test.csv.gz")])
    shift_rows = [
        r.text
        for r in read_reviews(data / "shift_amazon_mds.csv.gz")
        if r.review_id.startswith(("mds_electronics", "mds_kitchen"))
    ]
    shift = score(shift_rows)
    rows = []
    print(f"window {settings.drift_window}, threshold {settings.psi_threshold}, {args.starts} cold starts each")
    print(
        f"{'min scores':>10} {'max PSI, first 3,000 imdb':>26} {'alarms':>7} {'max PSI, all imdb':>18} {'shift crosses after':>20}"
    )
    for min_scores in (200, 500, 768, 1000):
        warm_max, full_max, alarms, crossings = [], [], 0, []
        for start in range(args.starts):
            rng = np.random.default_rng(start)
            order = rng.permutation(len(imdb))
            monitor = DriftMonitor(reference, window=settings.drift_window, min_scores=min_scores)
            psi = psi_per_batch(imdb[order[:3000]], monitor)
            warm_max.append(np.nanmax(psi))
            alarms += int(np.nanmax(psi) > settings.psi_threshold)
            # cold start straight into shifted traffic
            cold = DriftMonitor(reference, window=settings.drift_window, min_scores=min_scores)
            shifted = shift[rng.permutation(len(shift))]
            cross = next((i for i, p in enumerate(psi_per_batch(shifted, cold)) if p > settings.psi_threshold), None)
            crossings.append(None if cross is None else (cross + 1) * BATCH)
            if start == 0:
                full = DriftMonitor(reference, window=settings.drift_window, min_scores=min_scores)
                full_max.append(np.nanmax(psi_per_batch(imdb[order], full)))
        crossed = [c for c in crossings if c is not None]
        row = {
            "min_scores": min_scores,
            "warmup_max_psi": float(np.max(warm_max)),
            "warmup_median_max_psi": float(np.median(warm_max)),
            "false_alarms": alarms,
            "starts": args.starts,
            "all_imdb_max_psi": float(full_max[0]),
            "shift_crossed_after_median": float(np.median(crossed)) if crossed else None,
            "shift_never_crossed": len(crossings) - len(crossed),
        }
        rows.append(row)
        print(
            f"{min_scores:>10} {row['warmup_max_psi']:>20.3f} (med {row['warmup_median_max_psi']:.3f})"
            f" {alarms:>3}/{args.starts} {row['all_imdb_max_psi']:>18.3f} {str(row['shift_crossed_after_median']):>20}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    random.seed(0)
    main()
