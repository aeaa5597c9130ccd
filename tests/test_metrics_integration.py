"""Metrics on real parts: a real Prometheus scrapes a real worker; every dashboard and alert expression
runs through Prometheus' HTTP API; bad input lands on the dead-letter topic and in the counters."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from kafka import KafkaProducer

from sentiment.local import free_port, read_metric, wait_for_port
from sentiment.producing import produce_reviews
from tests.conftest import ROOT, collect_values, wait_until

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
BAD_MESSAGES = [
    b"\xff\xfe\x00 not utf-8",
    b"{not json",
    b"[1, 2, 3]",
    b'{"movie_id": "tt1", "text": "no id"}',
    b'{"review_id": 7, "movie_id": "tt1", "text": "id is a number"}',
    b'{"review_id": "blank", "movie_id": "tt1", "text": "   "}',
]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sentiment.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


class Prometheus:
    def __init__(self, workdir: Path, target_port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("the prometheus server is not installed (apt-get install prometheus); .ci/run installs it")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        shutil.copy(DEPLOY / "prometheus" / "alerts.yml", workdir / "alerts.yml")
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": ["alerts.yml"],
                    "scrape_configs": [
                        {"job_name": "sentiment-worker", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
                    ],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.process, 30, "Prometheus", self.log)

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@pytest.fixture()
def metrics_worker(stream_settings, start_worker):
    settings = stream_settings.model_copy(update={"metrics_port": free_port()})
    return settings, start_worker(settings)


def test_prometheus_scrapes_the_worker_and_every_expression_returns_data(metrics_worker, imdb_test_rows, tmp_path):
    settings, worker = metrics_worker
    prometheus = Prometheus(tmp_path, settings.metrics_port)
    try:
        reviews = random.Random(4).sample(imdb_test_rows, 3000)
        produce_reviews(settings, reviews, progress=False)
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers())
        for raw in BAD_MESSAGES:
            producer.send(settings.topic_reviews, key=b"tt1", value=raw)
        producer.flush()
        producer.close()

        dead = collect_values(settings, settings.topic_dlq, lambda rs: len(rs) >= len(BAD_MESSAGES), 120, worker)
        assert sorted(r.value for r in dead) == sorted(BAD_MESSAGES), "each bad message lands unchanged"
        reasons = sorted(dict(r.headers)["dlq.reason"].decode() for r in dead)
        assert reasons == sorted(
            ["not_utf8", "invalid_json", "not_an_object", "missing_field", "wrong_type", "empty_field"]
        )
        for record in dead:
            headers = dict(record.headers)
            assert headers["dlq.topic"].decode() == settings.topic_reviews
            assert int(headers["dlq.offset"]) >= 0 and int(headers["dlq.partition"]) >= 0

        scored = lambda: prometheus.query("sum(sentiment_reviews_scored_total)")["data"]["result"]  # noqa: E731
        assert wait_until(lambda: scored() and float(scored()[0]["value"][1]) >= 3000, 120), worker.tail()
        time.sleep(3)  # a few more scrapes, so that rate() has points on both sides

        rejected = prometheus.query("sum by (reason) (sentiment_reviews_rejected_total)")["data"]["result"]
        assert {r["metric"]["reason"]: float(r["value"][1]) for r in rejected} == {
            "not_utf8": 1,
            "invalid_json": 1,
            "not_an_object": 1,
            "missing_field": 1,
            "wrong_type": 1,
            "empty_field": 1,
        }
        failures = []
        for expr in dashboard_expressions():
            answer = prometheus.query(expr)
            if answer.get("status") != "success" or not answer["data"]["result"]:
                failures.append(f"dashboard: {expr} -> {answer}")
        for name, expr in alert_expressions().items():
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                failures.append(f"alert {name}: {expr} -> {answer}")
            # an alert that does not fire returns nothing: every series it reads must exist, though
            for metric in set(re.findall(r"\b(sentiment_[a-z_]+|up)\b", expr)):
                if not prometheus.query(metric)["data"]["result"]:
                    failures.append(f"alert {name}: no data for {metric}")
        assert not failures, "\n".join(failures)
        rules = prometheus.api("rules")["data"]["groups"][0]["rules"]
        assert all(r["health"] == "ok" for r in rules), rules
        print(f"{len(dashboard_expressions())} dashboard and {len(alert_expressions())} alert expressions checked")
    finally:
        prometheus.stop()


def test_promtool_checks_config_and_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus); .ci/run installs it")
    check = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")], capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_drift_on_a_real_worker_imdb_stays_below_amazon_crosses(metrics_worker, imdb_test_rows, data_dir):
    """All 25,000 imdb_test reviews never push PSI over the threshold; Amazon electronics and kitchen
    reviews after them do. PSI is read from /metrics every 50 ms while the stream flows."""
    from training.datasets import ReviewRow, read_reviews

    settings, worker = metrics_worker
    port, threshold = settings.metrics_port, settings.psi_threshold
    imdb = list(imdb_test_rows)
    random.Random(3).shuffle(imdb)
    shifted = [
        ReviewRow(r.review_id, "amazon", r.text, r.label)
        for r in read_reviews(data_dir / "shift_amazon_mds.csv.gz")
        if r.review_id.startswith(("mds_electronics", "mds_kitchen"))
    ]
    random.Random(3).shuffle(shifted)

    def follow(until: int) -> list[tuple[int, float, float]]:
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            worker.assert_alive()
            scored, psi = read_metric(port, "sentiment_reviews_scored_total"), read_metric(port, "sentiment_score_psi")
            verdict = read_metric(port, "sentiment_drift_verdict")
            if scored is not None and psi is not None and psi == psi:  # NaN until the window has filled
                seen.append((int(scored), psi, verdict))
                if scored >= until:
                    return seen
            time.sleep(0.05)
        pytest.fail(f"only {seen[-1] if seen else 0} reviews scored in time:\n{worker.tail()}")

    def produce_while_following(rows, until: int) -> list[tuple[int, float, float]]:
        # the worker scores faster than reviews are produced: read the metrics while they are being produced, or the
        # first reading comes after thousands of them
        producing = threading.Thread(target=produce_reviews, args=(settings, rows), kwargs={"progress": False})
        producing.start()
        try:
            return follow(until)
        finally:
            producing.join()

    imdb_phase = produce_while_following(imdb, len(imdb))
    shift_phase = produce_while_following(shifted, len(imdb) + len(shifted))
    crossed = next((n - len(imdb) for n, psi, _ in shift_phase if psi > threshold), None)
    verdict_crossed = next((n - len(imdb) for n, _, v in shift_phase if v > 2), None)
    print(
        f"\nimdb_test: {len(imdb_phase)} readings, max PSI {max(p for _, p, _ in imdb_phase):.3f}, "
        f"max drift verdict {np.nanmax([v for _, _, v in imdb_phase]):.3f}; shift: PSI crossed {threshold} after {crossed} "
        f"of {len(shifted)} reviews, ended at {shift_phase[-1][1]:.3f}; verdict passed 2 after {verdict_crossed}"
    )
    assert max(p for _, p, _ in imdb_phase) < threshold
    assert np.nanmax([v for _, _, v in imdb_phase]) < 1, "input drift alarm on in-domain reviews"
    assert verdict_crossed is not None and verdict_crossed <= 1000 + 256  # a batch of slack: metrics are per batch
    assert crossed is not None and shift_phase[-1][1] > threshold
