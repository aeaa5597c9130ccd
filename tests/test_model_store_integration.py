"""The model store on real parts: Tansu, PostgreSQL, real worker processes. A promote reaches a running worker
within 10 s and switches it between two batches; rollback returns it; a corrupt or below-floor version is refused
with the stream unaffected; a worker killed in the middle of a swap starts with the store's live version."""

from __future__ import annotations

import io
import json
import random
import shutil
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from sentiment import models
from sentiment.local import free_port
from sentiment.producing import produce_reviews
from stream.lifecycle import model_store
from stream.sql.db import make_engine
from tests.conftest import collect_values, probe, stored_count, wait_until
from tests.model_variants import variant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def variants(workdir: Path) -> dict[str, Path]:
    """Two other versions of the default model: ``shifted`` (last bias +0.05: scores move, labels mostly stay) and
    ``flipped`` (labels inverted: far below the canary floor), and ``weaker`` (last bias +2)."""
    root = workdir / "variants"
    shutil.rmtree(root, ignore_errors=True)
    return {
        "shifted": variant(root / "shifted", bias_shift=0.05),
        "flipped": variant(root / "flipped", flip=True),
        # every logit +2: about 5 points less accurate on imdb_test, still above the canary floor
        "weaker": variant(root / "weaker", bias_shift=2.0),
    }


def events_of(settings, count: int, worker, timeout: float = 120) -> list[dict]:
    """The ``sentiments`` events, each with the ``partition`` it is on (one worker's, as reviews and results of a
    film share a partition number)."""
    distinct = lambda records: len({json.loads(r.value)["review_id"] for r in records})  # noqa: E731
    records = collect_values(settings, settings.topic_sentiments, lambda rs: distinct(rs) >= count, timeout, worker)
    return [json.loads(r.value) | {"partition": r.partition} for r in records]


def versions_by_batch(events: list[dict]) -> dict[str, set[str]]:
    """The versions in each batch: a batch's results share their ``scored_at``."""
    batches: dict[str, set[str]] = defaultdict(set)
    for e in events:
        batches[e["scored_at"]].add(e["model_version"])
    return batches


def worker_reports(settings, version: str) -> bool:
    engine = make_engine(settings.database_url)
    try:
        return any(w.live == version for w in model_store.running_workers(engine))
    finally:
        engine.dispose()


def metric_value(port: int, name: str, **labels) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            found = ",".join(sorted(series[series.find("{") + 1 : -1].split(","))) if "{" in series else ""
            if found == wanted:
                total += float(value)
    return total


def score_via_api(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/score",
        data=json.dumps({"texts": ["A wonderful film."]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


class Stream:
    """Reviews sent in small chunks, evenly over time, from a thread: a live stream while the test acts."""

    def __init__(self, settings, rows, per_second: float, chunk: int = 50) -> None:
        self.thread = threading.Thread(target=self.run, args=(settings, rows, per_second, chunk), daemon=True)
        self.sent = 0

    def run(self, settings, rows, per_second, chunk) -> None:
        for start in range(0, len(rows), chunk):
            began = time.monotonic()
            self.sent += produce_reviews(settings, rows[start : start + chunk], progress=False).sent
            time.sleep(max(0.0, chunk / per_second - (time.monotonic() - began)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(300)


def workers_report(settings, version: str, count: int) -> bool:
    engine = make_engine(settings.database_url)
    try:
        return sum(w.live == version for w in model_store.running_workers(engine)) >= count
    finally:
        engine.dispose()


def test_promote_and_rollback_reach_every_running_worker_between_batches_with_nothing_lost(
    stream_settings, start_worker, imdb_test_rows, variants
):
    settings = stream_settings
    default = models.add(settings, settings.model)
    shifted = models.add(settings, variants["shifted"])
    web_port = free_port()
    worker = start_worker(extra_env={"SENTIMENT_WEB_PORT": str(web_port)})
    second = start_worker()
    assert wait_until(lambda: workers_report(settings, default, 2), 90, on_poll=worker.assert_alive), worker.tail()
    assert probe(web_port, "/api/live")[1]["model_version"] == default
    rows = random.Random(20).sample(imdb_test_rows, 4500)  # 30 s: the three steps fit on a busy machine
    timeline = []
    with Stream(settings, rows, per_second=150):
        time.sleep(4)
        for action, version in (("promote", shifted), ("rollback", default)):
            started = time.monotonic()
            said = io.StringIO()
            if action == "promote":
                assert models.promote(settings, shifted, offline=False, wait=30, out=said) == 0, worker.tail()
            else:
                assert models.rollback(settings, offline=False, wait=30, out=said) == 0, worker.tail()
            timeline.append((action, time.monotonic() - started))
            assert f"2 of 2 workers run {version}" in said.getvalue(), said.getvalue()
            # the page and its API use the live version
            assert probe(web_port, "/api/live")[1]["model_version"] == version
            assert score_via_api(web_port)["model_version"] == version
            time.sleep(5)
    print(f"confirmed by both workers after: {timeline}")
    assert all(seconds < 10 for _, seconds in timeline)
    events = events_of(settings, len(rows), worker)
    by_id = {e["review_id"]: e for e in events}
    assert set(by_id) == {r.review_id for r in rows}
    batches = versions_by_batch(events)
    assert all(len(versions) == 1 for versions in batches.values()), "a batch scored by two versions"
    # each partition is one worker's: in the order it scored them, its batches went default, new, default
    for partition in sorted({e["partition"] for e in events}):
        ours = versions_by_batch([e for e in events if e["partition"] == partition])
        in_order = [next(iter(ours[at])) for at in sorted(ours)]
        switches = [v for i, v in enumerate(in_order) if i == 0 or v != in_order[i - 1]]
        assert switches == [default, shifted, default], (partition, switches)
    assert stored_count(settings.database_url) == len(rows)
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT model_version, count(*) FROM review_scores GROUP BY 1")).all())
    engine.dispose()
    scored = defaultdict(int)
    for e in by_id.values():
        scored[e["model_version"]] += 1
    assert stored == dict(scored)  # each row carries the version its event carries
    for w in (worker, second):
        assert f"live model {default} -> {shifted}, switched between two batches" in w.log.read_text(), w.tail()
        assert w.stop() == 0, w.tail()


def test_a_corrupt_or_below_floor_version_is_refused_and_the_stream_goes_on(
    stream_settings, start_worker, imdb_test_rows, variants
):
    settings = stream_settings
    default = models.add(settings, settings.model)
    flipped = models.add(settings.model_copy(update={"canary_min_accuracy": 0.0}), variants["flipped"])
    shifted = models.add(settings, variants["shifted"])
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:  # the stored bytes cut short, as a failed write or a damaged disk would leave them
        conn.execute(
            text("UPDATE model_versions SET content = substring(content from 1 for 1000) WHERE version = :v"),
            {"v": shifted},
        )
    port = free_port()
    worker = start_worker(extra_env={"SENTIMENT_METRICS_PORT": str(port)})
    assert wait_until(lambda: worker_reports(settings, default), 90, on_poll=worker.assert_alive), worker.tail()
    rows = random.Random(21).sample(imdb_test_rows, 1000)
    with Stream(settings, rows, per_second=200):
        for version, reason in ((flipped, "below_floor"), (shifted, "corrupt")):
            assert models.promote(settings, version, offline=False, wait=30) == 1
            assert metric_value(port, "sentiment_model_swap_failures_total", version=version, reason=reason) == 1
            assert model_store.wanted(engine).live_version == default  # put back: what the worker runs
    events = events_of(settings, len(rows), worker)
    assert {e["review_id"] for e in events} == {r.review_id for r in rows}
    assert {e["model_version"] for e in events} == {default}
    assert stored_count(settings.database_url) == len(rows)
    log = worker.log.read_text()
    assert (
        f"refused model {flipped} as live (below_floor)" in log and f"refused model {shifted} as live (corrupt)" in log
    )
    assert metric_value(port, "sentiment_model_info", version=default, role="live") == 1
    engine.dispose()
    assert worker.stop() == 0, worker.tail()


def test_a_worker_killed_in_the_middle_of_a_swap_starts_with_the_live_version(
    stream_settings, start_worker, imdb_test_rows, variants
):
    settings = stream_settings
    default = models.add(settings, settings.model)
    shifted = models.add(settings, variants["shifted"])
    models.shadow(settings, default)
    worker = start_worker()
    assert wait_until(lambda: worker_reports(settings, default), 90, on_poll=worker.assert_alive), worker.tail()
    models.promote(settings, shifted, offline=False, wait=0)
    assert wait_until(lambda: "loading it" in worker.log.read_text(), 10), worker.tail()
    worker.process.kill()  # kill -9 while it fetches, unpacks or loads the new version
    worker.process.wait()
    restarted = start_worker()
    assert wait_until(lambda: worker_reports(settings, shifted), 90, on_poll=restarted.assert_alive), restarted.tail()
    rows = random.Random(22).sample(imdb_test_rows, 300)
    produce_reviews(settings, rows, progress=False)
    events = events_of(settings, len(rows), restarted)
    assert {e["model_version"] for e in events} == {shifted}
    assert "shadow model none -> " + default in restarted.log.read_text(), restarted.tail()
    assert restarted.stop() == 0, restarted.tail()


def test_a_weaker_shadow_loses_by_evidence_and_the_same_model_as_shadow_does_not(
    stream_settings, start_worker, imdb_test_rows, variants
):
    """Issue 21 with issue 20's shadow: on rated reviews both scored, the worker's paired comparison shows a weaker
    shadow losing with p < 0.01 (metrics and `sentiment model list`), and the live model as its own shadow does not."""
    settings = stream_settings.model_copy(update={"metrics_port": free_port()})
    default = models.add(settings, settings.model)
    weaker = models.add(settings, variants["weaker"])
    models.shadow(settings, weaker)
    worker = start_worker(settings, {"SENTIMENT_ACCURACY_MIN_REVIEWS": "200"})

    def gauge(name: str, **labels) -> float:  # 0 until the worker serves its metrics
        try:
            return metric_value(settings.metrics_port, name, **labels)
        except OSError:
            return 0.0

    assert wait_until(lambda: gauge("sentiment_model_info", version=weaker, role="shadow")
                      == 1, 90, on_poll=worker.assert_alive), worker.tail()  # fmt: skip
    rows = random.Random(23).sample(imdb_test_rows, 3000)  # rated (IMDB's files are), shuffled
    produce_reviews(settings, rows[:2000], progress=False)
    assert wait_until(lambda: stored_count(settings.database_url) == 2000, 120, on_poll=worker.assert_alive), (
        worker.tail()
    )
    pair = {"live_version": default, "shadow_version": weaker}
    assert wait_until(lambda: gauge("sentiment_shadow_paired_reviews", **pair) == 2000, 30)
    p_value = gauge("sentiment_shadow_mcnemar_p_value", **pair)
    live = gauge("sentiment_shadow_paired_accuracy", role="live", **pair)
    shadow = gauge("sentiment_shadow_paired_accuracy", role="shadow", **pair)
    assert p_value < 0.01 and shadow < live - 0.02, (p_value, live, shadow)

    def listed() -> str:
        out = io.StringIO()
        models.list_store(settings, as_json=False, out=out)
        return out.getvalue()

    assert wait_until(lambda: "on 2,000 rated reviews" in listed(), 10), listed()  # reported at the next poll
    said = next(line.strip() for line in listed().splitlines() if "rated reviews" in line)
    print(f"\n{said}")
    assert said.startswith("shadow ") and "vs live" in said and ("p < 0.001" in said or "p = 0.00" in said)

    models.shadow(settings, default)  # the live model as its own shadow: a new pair, no difference
    assert wait_until(lambda: gauge("sentiment_model_info", version=default, role="shadow")
                      == 1, 10), worker.tail()  # fmt: skip
    produce_reviews(settings, rows[2000:], progress=False)
    same = {"live_version": default, "shadow_version": default}
    assert wait_until(lambda: gauge("sentiment_shadow_paired_reviews", **same) >= 200, 60,
                      on_poll=worker.assert_alive), worker.tail()  # fmt: skip
    assert wait_until(lambda: stored_count(settings.database_url) == 3000, 60), worker.tail()
    assert gauge("sentiment_shadow_mcnemar_p_value", **same) == 1.0
    assert gauge("sentiment_shadow_accuracy_difference", bound="estimate", **same) == 0
    assert worker.stop() == 0, worker.tail()


# --- issue 26: a newcomer's model, and candidates the workers refuse --------------------------------------------------

# only the keys a newcomer writes: mask_unknown, cleaning, quantize and nb_branch at their defaults (mask_unknown
# false pools [UNK]; before issue 26 the compiled scorer could not serve that, and `model add` now refuses what the
# workers would refuse)
NEWCOMER_CONFIG = """\
name = "small"
ngrams = 2
max_epochs = 3
"""


def small_data(data_dir: Path, folder: Path, train: int = 2000) -> Path:
    """A data folder of a few thousand real reviews: trains in about 30 s here."""
    import csv
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", 500), ("unsup", 100)):
        with gzip.open(data_dir / f"imdb_{split}.csv.gz", "rt", encoding="utf-8", newline="") as src:
            rows = random.Random(1).sample(list(csv.DictReader(src)), n)
        with gzip.open(folder / f"imdb_{split}.csv.gz", "wt", encoding="utf-8", newline="") as dst:
            writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tamper_tables(settings, version: str) -> None:
    """Edit one embedding row of a version's stored compiled tables (a row no check text touches) and record the
    new bytes' SHA-256, as an attacker with write access to the store would."""
    import numpy as np

    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        name, content = conn.execute(
            text("SELECT name, content FROM model_tables WHERE version = :v"), {"v": version}
        ).one()
        with np.load(io.BytesIO(bytes(content))) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["embedding"] = arrays["embedding"].copy()
        arrays["embedding"][len(arrays["embedding"]) - 7] += 1
        out = io.BytesIO()
        np.savez(out, **arrays)
        conn.execute(
            text("UPDATE model_tables SET content = :c, sha256 = :s WHERE version = :v AND name = :n"),
            {"c": out.getvalue(), "s": model_store.sha256_of(out.getvalue()), "v": version, "n": name},
        )
    engine.dispose()


def test_a_newcomers_model_is_served_and_candidates_workers_refuse_leave_live_and_events_unchanged(
    stream_settings, start_worker, imdb_test_rows, data_dir, tmp_path, capsys
):
    from sentiment.cli import main

    settings = stream_settings
    config = tmp_path / "small.toml"
    config.write_text(NEWCOMER_CONFIG)
    started = time.monotonic()
    assert main(["train", "--config", str(config), "--data", str(small_data(data_dir, tmp_path / "data")),
                 "--out", str(tmp_path / "runs")]) == 0  # fmt: skip
    print(f"\ntrained in {time.monotonic() - started:.0f} s")
    [run] = (tmp_path / "runs").glob("small-*")
    small = models.add(settings, run)
    flipped = models.add(settings.model_copy(update={"canary_min_accuracy": 0.0}),  # the adder's floor, not theirs
                         variant(tmp_path / "flipped", flip=True, source=run))  # fmt: skip
    tampered = models.add(settings, variant(tmp_path / "shifted", bias_shift=0.05, source=run))
    tamper_tables(settings, tampered)
    default = model_store.wanted(make_engine(settings.database_url)).live_version
    workers = [start_worker(), start_worker()]
    assert wait_until(lambda: workers_report(settings, default, 2), 90, on_poll=workers[0].assert_alive)
    rows = random.Random(26).sample(imdb_test_rows, 900)
    produce_reviews(settings, rows[:300], progress=False)
    capsys.readouterr()
    assert models.promote(settings, small, offline=False, wait=90) == 0, capsys.readouterr().err
    assert f"2 of 2 workers run {small}" in capsys.readouterr().out
    produce_reviews(settings, rows[300:600], progress=False)
    assert wait_until(lambda: stored_count(settings.database_url) == 600, 60), workers[0].tail()
    rss = {w.process.pid: rss_mb(w.process.pid) for w in workers}
    for candidate, reason in ((flipped, "below_floor"), (tampered, "tampered")):
        assert models.promote(settings, candidate, offline=False, wait=90) == 1
        err = capsys.readouterr().err
        assert f"0 of 2 workers run {candidate}" in err and f"refused {candidate} as live: {reason}" in err, err
        assert f"live is back to {small}" in err
        assert model_store.wanted(make_engine(settings.database_url)).live_version == small
    after = {pid: rss_mb(pid) for pid in rss}
    print("worker RSS before / after the two refused candidates, MB:",
          {pid: (round(rss[pid]), round(after[pid])) for pid in rss})  # fmt: skip
    assert all(after[pid] <= 1.05 * rss[pid] for pid in rss), (rss, after)
    produce_reviews(settings, rows[600:], progress=False)
    events = events_of(settings, len(rows), workers[0])
    by_id = {e["review_id"]: e for e in events}
    assert {by_id[r.review_id]["model_version"] for r in rows[600:]} == {small}
    assert {by_id[r.review_id]["model_version"] for r in rows[300:600]} == {small}
    for w in workers:
        assert w.stop() == 0, w.tail()


def test_concurrent_promotes_on_postgresql_leave_a_history_rollback_can_follow(stream_settings, variants):
    settings = stream_settings
    engine = make_engine(settings.database_url)
    versions = [models.add(settings, settings.model)] + [models.add(settings, variants[k]) for k in ("shifted", "weaker")]
    threads = [threading.Thread(target=model_store.assign, args=(engine, "live", v, "me", "promote"))
               for v in versions[1:] * 5]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(reversed(model_store.history(engine, 100)))
    assert all(row.previous == before.version for before, row in zip(rows, rows[1:]))
    engine.dispose()
