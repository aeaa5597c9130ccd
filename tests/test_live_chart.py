"""The page's reviews/s chart (stream.web.LiveState): each point is the reviews scored in its interval over the
interval's seconds, the intervals touch, and the area under the chart is the number of reviews scored, however the
reviews arrived between the worker's samples (bursts, idle spells, a backlog before the first sample)."""

from __future__ import annotations

import math
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

import stream.web as web
from stream.web import HISTORY_SECONDS, MIN_INTERVAL, LiveState

NAN = float("nan")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# one step: seconds pass, reviews are scored (0 to a large burst), and the worker samples or not
steps = st.lists(
    st.tuples(
        st.floats(0, 30, allow_nan=False),
        st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 20_000)),
        st.booleans(),
    ),
    min_size=1,
    max_size=300,
)


def run(pattern) -> tuple[LiveState, int, dict]:
    clock = Clock()
    with mock.patch.object(web.time, "time", clock):
        live = LiveState(streaming=True)
        scored = 0
        for seconds, reviews, sample in pattern:
            clock.now += seconds
            scored += reviews
            if sample:
                live.sample(scored, NAN, NAN)
        clock.now += 5
        live.sample(scored, NAN, NAN)  # the page asks after at least one sample
        return live, scored, live.as_json()


def area(history: list[dict]) -> float:
    return sum(p["reviews_per_second"] * (p["time"] - p["start"]) for p in history)


@settings(max_examples=300, deadline=None)
@given(pattern=steps)
def test_the_area_under_the_rate_chart_is_the_reviews_scored(pattern):
    live, scored, state = run(pattern)
    history = state["history"]
    assert state["scored"] == scored
    assert all(b["start"] == a["time"] for a, b in zip(history, history[1:])), "a gap between two intervals"
    assert all(p["time"] > p["start"] for p in history)
    assert all(p["time"] - p["start"] >= MIN_INTERVAL for p in history[1:])
    assert len(live.samples) <= HISTORY_SECONDS // 5 + 1  # bounded, however long it runs
    kept_from = live.samples[0][1]  # 0 unless the oldest samples went out of the window
    if len(live.samples) < live.samples.maxlen:
        assert kept_from == 0 and history[0]["start"] <= live.started
    assert math.isclose(area(history), scored - kept_from, rel_tol=1e-9, abs_tol=1e-6)


def test_a_backlog_scored_before_the_first_sample_is_in_the_chart(monkeypatch):
    """A worker that scores 3,000 waiting reviews before its first sample, then 10 a second: the first point
    carries the backlog (the chart once started at the first sample and lost it)."""
    clock = Clock()
    monkeypatch.setattr(web.time, "time", clock)
    live = LiveState(streaming=True)
    clock.now += 5
    live.sample(3000, NAN, NAN)
    for total in (3050, 3100):
        clock.now += 5
        live.sample(total, NAN, NAN)
    rates = [p["reviews_per_second"] for p in live.as_json()["history"]]
    assert rates == [600, 10, 10]


def test_a_sample_a_moment_after_another_widens_its_interval(monkeypatch):
    """The worker's first probe and its timer can sample milliseconds apart: no point of 40 reviews over 10 ms
    (4,000 reviews/s), the later sample takes the earlier's place."""
    clock = Clock()
    monkeypatch.setattr(web.time, "time", clock)
    live = LiveState(streaming=True)
    clock.now += 5
    live.sample(0, NAN, NAN)
    clock.now += 5
    live.sample(100, NAN, NAN)
    clock.now += 0.01
    live.sample(140, NAN, NAN)
    history = live.as_json()["history"]
    assert [round(p["reviews_per_second"], 3) for p in history] == [0, round(140 / 5.01, 3)]
