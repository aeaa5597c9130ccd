"""Batch-scoring throughput of the exported model through the loader (``model.Scorer``) against a bare
``tf.function`` of the model's own layers, on real test reviews.

    .venv/bin/python bench/scoring_throughput.py [--model model/default] [--seconds 3]

Prints reviews/s at batch sizes 1, 32 and 256 and the ratio loader / bare; exits 1 when the loader is
more than 10% slower than the bare call at batch 256.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from core.settings import DEFAULT_MODEL
from model.scorer import load_scorer
from training.datasets import read_reviews, shared_data_dir

SAMPLE = Path(__file__).resolve().parent.parent / "model" / "sample_reviews.jsonl"


def texts() -> list[str]:
    data = shared_data_dir()
    source = data / "imdb_test.csv.gz" if data else SAMPLE
    rows = list(itertools.islice(read_reviews(source), 5000))
    return [r.text for r in rows]


def throughput(call, batches: list[list[str]], seconds: float) -> float:
    for batch in batches[:3]:  # warm up: trace and build
        call(batch)
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        batch = batches[i % len(batches)]
        call(batch)
        done += len(batch)
        i += 1
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size and path")
    args = parser.parse_args()

    scorer = load_scorer(args.model)
    model = scorer.keras_model
    layers = [layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    bare_fn = tf.function(lambda t: _apply(layers, t), input_signature=[tf.TensorSpec([None], tf.string)])

    def bare(batch: list[str]) -> np.ndarray:
        return bare_fn(tf.constant(batch)).numpy()

    reviews = texts()
    print(f"model {scorer.version} from {args.model}; {len(reviews):,} real reviews; {args.seconds:.0f} s per figure")
    print(f"{'batch':>6} {'loader reviews/s':>17} {'bare reviews/s':>15} {'loader/bare':>12}")
    ratios = {}
    for size in (1, 32, 256):
        batches = [reviews[i : i + size] for i in range(0, len(reviews) - size + 1, size)]
        # alternate the two paths to share any drift of the machine's speed between them
        loader_rates, bare_rates = [], []
        for _ in range(2):
            loader_rates.append(throughput(scorer.score, batches, args.seconds / 2))
            bare_rates.append(throughput(bare, batches, args.seconds / 2))
        loader_rate, bare_rate = max(loader_rates), max(bare_rates)
        ratios[size] = loader_rate / bare_rate
        print(f"{size:>6} {loader_rate:>17,.0f} {bare_rate:>15,.0f} {ratios[size]:>12.3f}")
    if ratios[256] < 0.9:
        print(f"FAIL: the loader is {1 - ratios[256]:.0%} slower than the bare call at batch 256 (limit 10%)")
        return 1
    print("ok: the loader is within 10% of the bare call at batch 256")
    return 0


def _apply(layers, t):
    x = t
    for layer in layers:
        x = layer(x, training=False)
    return tf.reshape(x, [-1])


if __name__ == "__main__":
    sys.exit(main())
