"""The compiled scorer against TensorFlow across the training config space: one key changed at a time from a
newcomer's config (every key at its default, sizes small), a small model trained for each value (a few hundred
``imdb_train`` reviews, one epoch), and the largest |compiled - TensorFlow| on the check texts
(``model.samples.check_texts``, what the gate reads) and on 500 ``imdb_test`` reviews.

    .venv/bin/python bench/config_space.py [--reviews 400] [--keys cleaning,mask_unknown]

Prints a table (key, value, largest difference on each set, the explanations' largest gap from completeness,
seconds) and exits 1 when any difference is above 1e-5.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from training.config import KEYS
from training.datasets import imdb_split
from training.space import SMALL, agreement, small_config, train_small

TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=400, help="training reviews per model")
    parser.add_argument("--keys", help="only these keys (comma-separated)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    train_rows = imdb_split("train")
    picked = rng.choice(len(train_rows), size=args.reviews, replace=False)
    texts, labels = [train_rows[i].text for i in picked], np.array([train_rows[i].label for i in picked])
    test_rows = imdb_split("test")
    reviews = [test_rows[i].text for i in rng.choice(len(test_rows), size=500, replace=False)]

    wanted = args.keys.split(",") if args.keys else [k.name for k in KEYS if k.served]
    base = small_config()
    print(f"base: every key at its default but {', '.join(f'{k} = {v}' for k, v in SMALL.items())}")
    print(f"trained on {len(texts)} imdb_train reviews; compared on the check texts and 500 imdb_test reviews\n")
    print("| key | value | check texts | 500 imdb_test | attributions | s |\n|---|---|---:|---:|---:|---:|")
    worst = 0.0
    for key in (k for k in KEYS if k.name in wanted):
        for value in key.probe_values():
            cfg = base.with_overrides(**{key.name: value})
            started = time.perf_counter()
            found = agreement(train_small(cfg, texts, labels), reviews)
            seconds = time.perf_counter() - started
            if found.refused:
                print(f"| {key.name} | {value!r} | refused: {found.refused} | | | {seconds:.0f} |", flush=True)
                worst = float("inf")
                continue
            worst = max(worst, found.worst)
            print(
                f"| {key.name} | {value!r} | {found.check_texts:.2g} | {found.reviews:.2g} | "
                f"{found.attributions:.2g} | {seconds:.0f} |",
                flush=True,
            )
    print(f"\nlargest difference {worst:.3g} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
