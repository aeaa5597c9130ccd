"""Runs side by side: ``sentiment train --config A.toml --config B.toml`` trains each and prints this table.

Accuracy and calibration come from each run's ``metrics.json`` (validation: the held-out fit's by-film split;
test: ``imdb_test``, scored once at the end of each run); scoring speed is measured here, the compiled path at
batch 256 on the same ``imdb_test`` reviews, the runs alternated so that the machine's drift weighs on all alike.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

BATCH = 256


def scoring_rate(scorer, texts: list[str]) -> float:
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    scorer.score(batches[0])  # warm up
    started = time.perf_counter()
    for batch in batches:
        scorer.score(batch)
    return len(texts) / (time.perf_counter() - started)


def compare(folders: list[Path], texts: list[str], rounds: int = 3) -> str:
    """A Markdown table of the runs in ``folders``."""
    from model.scorer import load_scorer

    cache = Path(tempfile.mkdtemp(prefix="sentiment-compare-"))
    scorers = [load_scorer(folder, scoring="compiled", cache_dir=cache) for folder in folders]
    rates: list[list[float]] = [[] for _ in folders]
    for _ in range(rounds):
        for i, scorer in enumerate(scorers):
            rates[i].append(scoring_rate(scorer, texts))
    lines = [
        "| config | version | validation accuracy | test accuracy | test calibration error | training s "
        f"| artifact MB | reviews/s (compiled, batch {BATCH}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for folder, scorer, rate in zip(folders, scorers, rates):
        m = json.loads((folder / "metrics.json").read_text())
        path = "compiled" if scorer.scoring == "compiled" else "TensorFlow (compiled path refused)"
        lines.append(
            f"| {m['config']['name']} | {m['model_version']} | {m['validation']['accuracy']:.4f} "
            f"| {m['test']['accuracy']:.4f} | {m['test']['calibration_error']:.4f} | {m['training_seconds']:.0f} "
            f"| {m['artifact_bytes'] / 1e6:.1f} | {max(rate):,.0f}{'' if path == 'compiled' else ' ' + path} |"
        )
    return "\n".join(lines) + "\n"
