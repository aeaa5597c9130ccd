"""The batch observer without a broker: what an operator sees after a delivered batch (metrics, the progress line,
the drift verdict, the lag, the page's live charts)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from core.settings import Settings
from model.scorer import Inspection
from schemas import Rejection, Sentiment
from stream.ingest.batch import BatchResult, Incoming
from stream.observe.drift import DriftMonitor, InputDriftMonitor
from stream.observe.health import Health
from stream.observer import BatchObserver


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, highwaters: dict[TP, int], fail: bool = False, committed: dict[TP, int] | None = None) -> None:
        self.highwaters = highwaters
        self.fail = fail
        self.commits = committed or {}

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int:
        if self.fail:
            raise RuntimeError("no metadata yet")
        return self.highwaters[tp]

    def committed(self, tp: TP) -> int | None:
        return self.commits.get(tp)

    ages: dict[TP, float] = {}  # seconds since each partition's last Fetch answer (none: fresh)

    def fetch_age(self, tp: TP) -> float | None:
        return self.ages.get(tp, 0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REFERENCE_INPUTS = {"known_share": 0.9, "mean_log_ngrams": math.log1p(100), "pooled_mean": [0.0], "pooled_std": [1.0]}


def observer_for(
    consumer: FakeConsumer, health: Health | None = None, min_scores: int = 4, clock: FakeClock | None = None
) -> BatchObserver:
    settings = Settings(stall_seconds=60)
    return BatchObserver(
        model_version="test-model",
        scoring="compiled",
        drift=DriftMonitor(np.linspace(0, 1, 101), window=100, min_scores=min_scores),
        inputs_drift=InputDriftMonitor(REFERENCE_INPUTS, window=100, min_reviews=min_scores),
        settings=settings,
        health=health or Health(),
        consumer=lambda: consumer,
        clock=clock or FakeClock(),
    )


def scored_batch(scores: list[float], rejected: int = 0, partition: int = 0, first_offset: int = 0):
    """A delivered batch: ``len(scores)`` reviews of 100 n-grams, half of them unknown, then ``rejected`` bad ones."""
    count = len(scores) + rejected
    messages = [
        Incoming(value=b"{}", topic="reviews", partition=partition, offset=first_offset + i) for i in range(count)
    ]
    sentiments = [
        Sentiment(f"r{i}", "tt1", s, "positive" if s >= 0.5 else "negative", "test-model", "t", "t")
        for i, s in enumerate(scores)
    ]
    inputs = Inspection(
        scores=np.asarray(scores, dtype=np.float32),
        ngrams=np.full(len(scores), 100),
        known=np.full(len(scores), 50),
        pooled=np.zeros((len(scores), 1)),
    )
    bad = [(m, Rejection("invalid_json", "not JSON")) for m in messages[len(scores) :]]
    return BatchResult(sentiments=sentiments, rejected=bad, inputs=inputs), messages


def metric(name: str, **labels) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_delivered_batch_moves_the_counters():
    observer = observer_for(FakeConsumer({}))
    before = {
        "scored": metric("sentiment_reviews_scored_total"),
        "rejected": metric("sentiment_reviews_rejected_total", reason="invalid_json"),
        "sent": metric("sentiment_events_sent_total", topic="sentiments"),
        "dead": metric("sentiment_events_sent_total", topic="dead_letter"),
    }
    result, messages = scored_batch([0.9, 0.1, 0.8], rejected=2)
    observer.delivered(result, messages)
    assert metric("sentiment_reviews_scored_total") - before["scored"] == 3
    assert metric("sentiment_reviews_rejected_total", reason="invalid_json") - before["rejected"] == 2
    assert metric("sentiment_events_sent_total", topic="sentiments") - before["sent"] == 3
    assert metric("sentiment_events_sent_total", topic="dead_letter") - before["dead"] == 2
    assert metric("sentiment_model_info", version="test-model", role="live") == 1
    assert metric("sentiment_scoring_info", path="compiled") == 1


def test_the_progress_line_counts_since_the_last_line_and_in_all():
    health = Health()
    observer = observer_for(FakeConsumer({TP("reviews", 0): 10}), health)
    observer.delivered(*scored_batch([0.9, 0.2, 0.7], rejected=1))
    line = observer.progress_line()
    assert "scored 3 and rejected 1 in the last" in line and "(3 and 1 in all)" in line
    assert "lag 6," in line  # offsets 0-3 done, 10 in the partition
    assert line.endswith(
        "NOT ready: model not loaded; not in its consumer group (joining or rebalancing); "
        "database: not checked yet; broker: not checked yet"
    )
    observer.delivered(*scored_batch([0.4], first_offset=4))
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    line = observer.progress_line()
    assert "scored 1 and rejected 0 in the last" in line and "(4 and 1 in all)" in line
    assert "lag 5," in line and line.endswith(", ready")


def test_an_idle_worker_says_so_once_and_again_only_when_something_changes():
    health = Health()
    consumer = FakeConsumer({TP("reviews", 0): 0})
    observer = observer_for(consumer, health)
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    first = observer.progress_line()
    assert first is not None and "scored 0 and rejected 0" in first and first.endswith(", ready")
    assert observer.progress_line() is None and observer.progress_line() is None  # idle, nothing new: no line
    health.update(database_error="connection refused")
    assert "NOT ready: database" in observer.progress_line()  # readiness changed: said at once
    assert observer.progress_line() is None
    observer.delivered(*scored_batch([0.9, 0.1]))
    assert "scored 2 and rejected 0" in observer.progress_line()  # work again: a line every interval
    again = observer.progress_line()
    assert again is not None and "scored 0 and rejected 0" in again  # the first idle line after work


def test_score_drift_and_the_input_verdict_appear_once_the_window_is_ready():
    observer = observer_for(FakeConsumer({}), min_scores=4)
    observer.delivered(*scored_batch([0.9, 0.8, 0.7]))
    assert metric("sentiment_drift_ready") == 0 and metric("sentiment_drift_window_scores") == 3
    assert math.isnan(metric("sentiment_score_psi")) and math.isnan(metric("sentiment_drift_verdict"))
    assert math.isnan(observer.verdict)
    assert metric("sentiment_input_mean_ngrams") == 100

    observer.delivered(*scored_batch([0.6, 0.9], first_offset=3))
    assert metric("sentiment_drift_ready") == 1 and metric("sentiment_drift_window_scores") == 5
    assert metric("sentiment_score_psi") > 0.07  # all positive against a uniform reference
    assert metric("sentiment_positive_ratio") == 1.0
    # half the n-grams unknown against 10% in the reference: 0.4 over the default scale
    assert observer.verdict == metric("sentiment_drift_verdict")
    assert observer.verdict == pytest.approx(0.4 / Settings().drift_oov_scale)
    assert metric("sentiment_input_oov_shift") == pytest.approx(0.4)


def test_the_live_charts_get_the_totals_the_psi_and_the_verdict():
    observer = observer_for(FakeConsumer({}), min_scores=2)
    observer.sample_live()
    observer.delivered(*scored_batch([0.9, 0.8]))
    observer.sample_live()
    live = observer.live.as_json()
    assert live["streaming"] and live["window_scores"] == 2
    (point,) = live["history"]
    assert point["psi"] > 0 and point["verdict"] == observer.verdict


def test_the_lag_counts_assigned_partitions_only_and_is_unknown_when_the_broker_cannot_say():
    consumer = FakeConsumer({TP("reviews", 0): 50, TP("reviews", 1): 20})
    observer = observer_for(consumer)
    observer.delivered(*scored_batch([0.5] * 10, partition=0))  # offsets 0-9 of 50
    observer.delivered(*scored_batch([0.5] * 5, partition=1, first_offset=14))  # 14-18 of 20
    observer.delivered(*scored_batch([0.5] * 3, partition=2))  # since revoked: not counted
    assert observer.lag() == 40 + 1
    assert metric("sentiment_consumer_lag_messages") == 41
    consumer.fail = True
    assert math.isnan(observer.lag())
    assert "lag unknown," in observer.progress_line()


def ready_health() -> Health:
    health = Health()
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    return health


def test_the_lag_is_measured_while_no_batch_completes():
    # the database is away: 2,000 reviews wait, nothing is delivered, and the gauge still says so
    consumer = FakeConsumer({TP("reviews", 0): 1200, TP("reviews", 1): 900}, committed={TP("reviews", 1): 100})
    observer = observer_for(consumer, ready_health())
    observer.watch()
    assert metric("sentiment_consumer_lag_messages") == 2000
    assert "lag 2,000," in observer.progress_line()


def test_waiting_reviews_and_no_progress_for_the_stall_time_make_the_worker_not_ready():
    clock, health = FakeClock(), ready_health()
    consumer = FakeConsumer({TP("reviews", 0): 2000})
    observer = observer_for(consumer, health, clock=clock)
    for _ in range(12):  # every 5 s for 60 s
        assert health.ready, health.reasons()
        clock.now += 5
        observer.watch()
    assert metric("sentiment_seconds_since_progress") == 60
    assert not health.ready and metric("sentiment_ready") == 0
    assert health.reasons() == ["not advancing: 2,000 reviews waiting, no progress for 60 s"]

    consumer.commits[TP("reviews", 0)] = 256  # one batch got through: progress
    clock.now += 5
    observer.watch()
    assert health.ready and metric("sentiment_ready") == 1
    assert metric("sentiment_seconds_since_progress") == 0
    assert metric("sentiment_consumer_lag_messages") == 2000 - 256


def test_a_delivered_batch_is_progress():
    clock, health = FakeClock(), ready_health()
    consumer = FakeConsumer({TP("reviews", 0): 2000})
    observer = observer_for(consumer, health, clock=clock)
    clock.now += 55
    observer.delivered(*scored_batch([0.5] * 3))
    clock.now += 10
    observer.watch()
    assert health.ready and metric("sentiment_seconds_since_progress") == 10


def test_an_idle_worker_is_never_stalled():
    clock, health = FakeClock(), ready_health()
    consumer = FakeConsumer({TP("reviews", 0): 500}, committed={TP("reviews", 0): 500})
    observer = observer_for(consumer, health, clock=clock)
    for _ in range(100):
        clock.now += 5
        observer.watch()
    assert health.ready and metric("sentiment_seconds_since_progress") == 0
    assert metric("sentiment_consumer_lag_messages") == 0

    consumer.highwaters[TP("reviews", 0)] = 600  # new reviews after a long idle time: not a stall yet
    clock.now += 5
    observer.watch()
    assert health.ready and metric("sentiment_consumer_lag_messages") == 100


def test_no_stall_is_claimed_when_the_broker_cannot_say():
    clock, health = FakeClock(), ready_health()
    consumer = FakeConsumer({TP("reviews", 0): 2000})
    observer = observer_for(consumer, health, clock=clock)
    clock.now += 90
    observer.watch()
    assert not health.ready
    consumer.fail = True
    observer.watch()
    assert health.ready and math.isnan(metric("sentiment_consumer_lag_messages"))


def test_the_lag_is_unknown_not_stale_while_the_consumer_is_blocked():
    """A blocked agent stops the fetches, and the high watermark of the last one stays: the lag must not stay flat
    while reviews pile up. Past LAG_STALE_SECONDS without a Fetch answer it is NaN, and says so."""
    clock, health = FakeClock(), ready_health()
    consumer = FakeConsumer({TP("reviews", 0): 1200, TP("reviews", 1): 900}, committed={TP("reviews", 1): 100})
    observer = observer_for(consumer, health, clock=clock)
    observer.watch()
    assert metric("sentiment_consumer_lag_messages") == 2000 and metric("sentiment_consumer_lag_age_seconds") == 0
    consumer.ages = {TP("reviews", 1): 16.0}  # blocked: no Fetch answer for partition 1 for 16 s
    clock.now += 5
    observer.watch()
    assert math.isnan(metric("sentiment_consumer_lag_messages"))
    assert metric("sentiment_consumer_lag_age_seconds") == 16.0
    assert math.isnan(observer.lag()) and "lag unknown," in observer.progress_line()
    for _ in range(12):  # reviews wait, nothing advances: the stall is still seen
        clock.now += 5
        observer.watch()
    assert not health.ready and "2,000 reviews waiting" in health.reasons()[0]
    consumer.ages = {}  # fetching again: the lag is known again
    consumer.highwaters[TP("reviews", 0)] = 5000
    clock.now += 5
    observer.watch()
    assert metric("sentiment_consumer_lag_messages") == 5800


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=True, width=64),
            st.sampled_from([0.0, 0.005, 0.01, 0.25, 0.5, 1.0, 2.5, 10.0, -0.0]),  # on the bucket bounds
        ),
        max_size=300,
    )
)
def test_observing_a_batch_at_once_gives_each_bucket_and_the_count_what_one_by_one_gives(values):
    from prometheus_client import CollectorRegistry, Histogram

    from stream.observe.metrics import observe_many

    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "", registry=registry)
    at_once = Histogram("at_once", "", registry=registry)
    for value in values:
        one_by_one.observe(value)
    observe_many(at_once, values)

    def samples(name):
        return {
            (sample.name.removeprefix(name), sample.labels.get("le")): sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name.startswith(name) and not sample.name.endswith("_created")
        }

    ours, theirs = samples("at_once"), samples("one_by_one")
    sums = ours.pop(("_sum", None)), theirs.pop(("_sum", None))
    assert ours == theirs  # every bucket and the count, exactly
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) == len(values) and finite and max(map(abs, finite)) < 1e300:
        assert sums[0] == pytest.approx(sums[1], rel=1e-9, abs=1e-9 * max(map(abs, finite)) * len(finite))
