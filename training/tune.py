"""`sentiment tune`: a small grid search on the validation split of imdb_train (never on imdb_test).

The config file is a training config plus a ``[search]`` table; each key there lists the values to try,
one key at a time around the base config (not the full product: a handful of runs, not hundreds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from training.config import TrainConfig
from training.metrics import classification_metrics
from training.pipeline import load, split, train_and_validate


def trials(base: TrainConfig, search: dict[str, list]) -> list[tuple[str, TrainConfig]]:
    """The base config, then each searched key varied alone."""
    out = [("base", base)]
    for key, values in search.items():
        for value in values:
            if value != getattr(base, key):
                out.append((f"{key}={value}", base.with_overrides(**{key: value})))
    return out


def tune(base: TrainConfig, search: dict[str, list], data=None, out: Path | str = "runs/tune") -> Path:
    train_rows, _ = load(data)
    train, val = split(train_rows, base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, cfg in trials(base, search):
        started = time.perf_counter()
        _, fitted, scores, _ = train_and_validate(cfg, train, val, verbose=0)
        metrics = classification_metrics(val[1], scores)
        results.append(
            {
                "trial": name,
                "val_accuracy": metrics["accuracy"],
                "val_roc_auc": metrics["roc_auc"],
                "best_epoch": fitted["best_epoch"],
                "parameters": fitted["parameters"],
                "seconds": time.perf_counter() - started,
                "config": asdict(cfg),
            }
        )
        print(
            f"{name:<28} validation accuracy {metrics['accuracy']:.4f}  AUC {metrics['roc_auc']:.4f}  "
            f"epoch {fitted['best_epoch']}  {results[-1]['seconds']:.0f} s",
            flush=True,
        )
    (out / "tune.json").write_text(json.dumps(results, indent=2) + "\n")
    table = out / "tune.md"
    lines = [
        f"# Tuning `{base.name}` on the validation split ({len(val[0]):,} reviews of imdb_train)",
        "",
        "| trial | validation accuracy | ROC AUC | best epoch | parameters | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: -r["val_accuracy"]):
        lines.append(
            f"| {r['trial']} | {r['val_accuracy']:.4f} | {r['val_roc_auc']:.4f} | {r['best_epoch']} | "
            f"{r['parameters']:,} | {r['seconds']:.0f} |"
        )
    table.write_text("\n".join(lines) + "\n")
    print(f"wrote {table}")
    return table
