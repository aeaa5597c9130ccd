"""What a live model swap costs a worker: resident memory over 10 swaps, and batch scoring with and without a shadow.

    .venv/bin/python bench/model_swaps.py [--swaps 10] [--batches 40] [--json runs/model_swaps.json]

A child process prepares a SQLite model store with two versions (the default model and a copy whose last bias is
moved: same size, other bytes), with TensorFlow, so that this process never imports it, as a worker with its
compiled tables never does. This process then runs the worker's own parts (``ModelSwitch``, ``ModelWatcher``,
``BatchScorer``, the store) on real ``imdb_test`` reviews: it starts on the live version, scores batches of 256,
and 10 times promotes the other version, lets the watcher fetch, unpack, load and check it and the switch apply it,
then scores again. Resident memory (``/proc/self/status``: VmRSS, and VmHWM reset before each swap for its peak) is
printed after each swap against the single-model figure (after the first batches, before any swap). Then the same
batches are scored by ``BatchScorer.process`` without and with a shadow version, alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prepare(folder: Path, url: str) -> None:
    """(child) The store: the default model, live, and a variant of it."""
    from core.settings import Settings
    from sentiment import models
    from tests.model_variants import variant

    settings = Settings(database_url=url, cache_dir=folder / "cache")
    from stream.sql.db import upgrade

    upgrade(settings.database_url)
    other = variant(folder / "variant", bias_shift=0.05)
    models.add(settings, other)


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux 4.0+)
    except OSError:
        pass


def messages(texts: list[str]):
    from stream.ingest.batch import Incoming

    return [
        Incoming(json.dumps({"review_id": f"r{i}", "movie_id": "tt1", "text": t}).encode(), timestamp=time.time())
        for i, t in enumerate(texts)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--batches", type=int, default=40, help="batches of 256 scored between two swaps")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--database-url", help="the store's database (default: a new SQLite file)")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.database_url)
        return 0

    folder = Path(tempfile.mkdtemp(prefix="bench-swaps-"))
    url = args.database_url or f"sqlite:///{folder / 'store.db'}"
    print(f"preparing a model store in {folder} (a child process, with TensorFlow) ...", flush=True)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, __file__, "--prepare", str(folder), "--database-url", url], check=True, env=env,
        capture_output=True,
    )  # fmt: skip

    from core.settings import Settings
    from stream.ingest.batch import BatchScorer
    from stream.lifecycle import model_store
    from stream.lifecycle.model_gate import starting_model
    from stream.lifecycle.model_swap import ModelSwitch, ModelWatcher, release_memory
    from stream.sql.db import make_engine
    from training.datasets import read_reviews, shared_data_dir

    settings = Settings(database_url=url, cache_dir=folder / "cache")
    engine = make_engine(settings.database_url)
    data = shared_data_dir()
    texts = [r.text for r in read_reviews(data / "imdb_test.csv.gz")] if data else []
    texts = random.Random(0).sample(texts, 256 * 8) if texts else ["a fine film"] * 2048
    batches = [messages(texts[i : i + 256]) for i in range(0, len(texts), 256)]

    batch_scorer = BatchScorer(None, max_text_chars=50_000, max_message_bytes=1_000_000)
    switch = ModelSwitch(starting_model(engine, settings).live, batch_scorer)
    batch_scorer.scorer = switch.live.scorer
    watcher = ModelWatcher(engine, settings, switch)
    versions = [v.version for v in model_store.versions(engine)]

    async def score_some() -> None:  # as the worker does: in a thread, under the switch's lock
        for i in range(args.batches):
            async with switch.scoring:
                switch.apply()
                await asyncio.to_thread(batch_scorer.process, batches[i % len(batches)])

    async def swaps() -> tuple[float, list[dict]]:
        await score_some()
        await asyncio.to_thread(release_memory)
        single, _ = rss_mb()
        print(f"one model loaded, {args.batches} batches scored: RSS {single:.0f} MB (the single-model figure)")
        curve = []
        for swap in range(1, args.swaps + 1):
            target = next(v for v in versions if v != switch.live.version)
            model_store.assign(engine, "live", target, "bench", "promote")
            reset_peak()
            started = time.perf_counter()
            await watcher.poll()  # fetch, unpack, load, check, switch (idle stream), free the old one
            took = time.perf_counter() - started
            assert switch.live.version == target, watcher.refused
            _, peak = rss_mb()
            await score_some()
            _, peak_after = rss_mb()
            await asyncio.to_thread(release_memory)  # measured as the single-model figure was
            settled, _ = rss_mb()
            peak = max(peak, peak_after)
            curve.append({"swap": swap, "version": target, "seconds": round(took, 2), "peak_mb": round(peak, 1),
                          "settled_mb": round(settled, 1)})  # fmt: skip
            print(
                f"swap {swap:2d} -> {target}: {took:.2f} s; peak {peak:.0f} MB ({peak / single:.2f}x), "
                f"settled {settled:.0f} MB ({settled / single:.3f}x)",
                flush=True,
            )
        return single, curve

    single, curve = asyncio.run(swaps())
    worst_peak = max(c["peak_mb"] for c in curve)
    last = curve[-1]["settled_mb"]
    print(
        f"over {args.swaps} swaps: peak {worst_peak:.0f} MB = {worst_peak / single:.2f}x the single model "
        f"({single:.0f} MB); settled after the last {last:.0f} MB = {last / single:.3f}x"
    )

    # scoring with and without a shadow, alternated
    other = next(v for v in versions if v != switch.live.version)
    from stream.lifecycle.model_gate import load_checked

    shadow = load_checked(engine, other, settings).scorer
    rates = {"without": [], "with": []}
    for _ in range(3):
        for kind in ("without", "with"):
            batch_scorer.shadow = shadow if kind == "with" else None
            started = time.perf_counter()
            for b in batches:
                batch_scorer.process(b)
            rates[kind].append(len(texts) / (time.perf_counter() - started))
    best = {k: max(v) for k, v in rates.items()}
    print(
        f"BatchScorer.process, batches of 256 imdb_test reviews (decode, validate, score): without a shadow "
        f"{best['without']:,.0f} reviews/s, with one {best['with']:,.0f} reviews/s "
        f"({best['with'] / best['without']:.2f}x; best of 3 alternated runs)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"single_mb": single, "curve": curve, "scoring_reviews_per_second": rates}, indent=2)
        )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
