"""Every Prometheus metric of the worker, declared once. No label carries a review or film id.

Under ``sentiment worker --processes N`` every process writes its metrics to ``PROMETHEUS_MULTIPROC_DIR`` and the
supervisor serves them summed (stream/supervisor.py): counters and histograms add up, and each gauge says how its
processes' values combine (``multiprocess_mode``: livesum for what waits or is counted, livemax for what alerts when
high, livemin for readiness and accuracies, so that the worst process shows). One process ignores the modes."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

REVIEWS_CONSUMED = Counter("sentiment_reviews_consumed_total", "Messages read from the reviews topic.")
REVIEWS_SCORED = Counter("sentiment_reviews_scored_total", "Reviews scored by the model.")
REVIEWS_UNREADABLE = Counter(
    "sentiment_reviews_unreadable_total",
    "Reviews scored whose share of known n-grams was below SENTIMENT_MIN_KNOWN_SHARE: published and stored with "
    "readable false, kept out of their film's mean.",
)
REVIEWS_REJECTED = Counter(
    "sentiment_reviews_rejected_total", "Messages rejected to the dead-letter topic, by reason.", ["reason"]
)
EVENTS_SENT = Counter(
    "sentiment_events_sent_total", "Events the broker acknowledged, by topic role.", ["topic"]
)  # topic: sentiments | dead_letter
UNDELIVERABLE = Counter(
    "sentiment_undeliverable_total",
    "Rejected messages the broker refused even as a dead letter: skipped, and recorded in SENTIMENT_UNDELIVERABLE_FILE.",
)
DB_ROWS_WRITTEN = Counter(
    "sentiment_db_rows_written_total", "New rows written to review_scores (replayed reviews are not counted)."
)
BATCH_SIZE = Histogram(
    "sentiment_batch_size", "Messages per micro-batch.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
)
BATCH_SCORING_SECONDS = Histogram(
    "sentiment_batch_scoring_seconds",
    "Time to decode, validate and score one micro-batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DB_WRITE_SECONDS = Histogram(
    "sentiment_db_write_seconds",
    "Time of one successful database transaction for a batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END_SECONDS = Histogram(
    "sentiment_end_to_end_latency_seconds",
    "From the review's message timestamp to its score being delivered.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SCORE = Histogram(
    "sentiment_score",
    "Scores (probability of positive) of the reviews scored.",
    buckets=tuple(round(0.1 * i, 1) for i in range(1, 11)),
)
POSITIVE_RATIO = Gauge(
    "sentiment_positive_ratio", "Share of positive labels over the drift window.", multiprocess_mode="livemax"
)
SCORE_PSI = Gauge(
    "sentiment_score_psi",
    "Population Stability Index of the drift window against the reference.",
    multiprocess_mode="livemax",
)
SCORE_KS = Gauge(
    "sentiment_score_ks",
    "Kolmogorov-Smirnov statistic of the drift window against the reference.",
    multiprocess_mode="livemax",
)
DRIFT_WINDOW = Gauge(
    "sentiment_drift_window_scores", "Scores currently in the drift window.", multiprocess_mode="livesum"
)
DRIFT_MIN_SCORES = Gauge(
    "sentiment_drift_min_scores",
    "Scores the window needs before PSI and KS are exported (NaN until then).",
    multiprocess_mode="livemax",
)
DRIFT_READY = Gauge(
    "sentiment_drift_ready",
    "1 once the drift window holds enough scores for PSI and KS to mean something, else 0.",
    multiprocess_mode="livemin",
)
INPUT_OOV_SHIFT = Gauge(
    "sentiment_input_oov_shift",
    "Share of unknown n-grams in the drift window minus the reference's (0.05: 5 more in 100 are unknown).",
    multiprocess_mode="livemax",
)
INPUT_LENGTH_SHIFT = Gauge(
    "sentiment_input_length_shift",
    "Mean log review length (n-grams) in the drift window minus the reference's (-0.7: about half as long).",
    multiprocess_mode="livemax",
)
INPUT_MEAN_NGRAMS = Gauge(
    "sentiment_input_mean_ngrams", "Mean review length in n-grams over the drift window.", multiprocess_mode="livemax"
)
INPUT_EMBEDDING_SHIFT = Gauge(
    "sentiment_input_embedding_shift",
    "Distance of the window's mean pooled vector from the reference mean, in reference standard deviations.",
    multiprocess_mode="livemax",
)
DRIFT_VERDICT = Gauge(
    "sentiment_drift_verdict",
    "Input drift: the larger of the unknown n-gram and length shifts over their scales; 1 is the alert threshold.",
    multiprocess_mode="livemax",
)
PSI_THRESHOLD = Gauge(
    "sentiment_score_psi_threshold", "PSI above which drift is alerted (for dashboards).", multiprocess_mode="livemax"
)
ACCURACY = Gauge(
    "sentiment_accuracy",
    "Share of the most recent rated reviews (rating 7-10 positive, 1-4 negative) whose label the model got right, "
    "by version and role (live, shadow); no series below SENTIMENT_ACCURACY_MIN_REVIEWS.",
    ["version", "role"],
    multiprocess_mode="livemin",
)
CALIBRATION_ERROR = Gauge(
    "sentiment_calibration_error",
    "Expected calibration error (10 equal-width bins of P(positive)) over the same rated reviews as "
    "sentiment_accuracy; no series below SENTIMENT_ACCURACY_MIN_REVIEWS.",
    ["version", "role"],
    multiprocess_mode="livemax",
)
ACCURACY_REVIEWS = Gauge(
    "sentiment_accuracy_window_reviews",
    "Rated reviews in the live accuracy window of a version and role (also while below the minimum).",
    ["version", "role"],
    multiprocess_mode="livesum",
)
ACCURACY_MIN_REVIEWS = Gauge(
    "sentiment_accuracy_min_reviews",
    "Rated reviews a version needs before sentiment_accuracy is exported.",
    multiprocess_mode="livemax",
)
ACCURACY_FLOOR = Gauge(
    "sentiment_accuracy_floor",
    "Live accuracy below which it is alerted: the started model's validation accuracy minus SENTIMENT_ACCURACY_MARGIN "
    "(NaN when its metrics.json does not say).",
    multiprocess_mode="livemax",
)
SHADOW_PAIRED_REVIEWS = Gauge(
    "sentiment_shadow_paired_reviews",
    "Rated reviews both the live and the shadow version scored, since this pair started.",
    ["live_version", "shadow_version"],
    multiprocess_mode="livesum",
)
SHADOW_PAIRED_ACCURACY = Gauge(
    "sentiment_shadow_paired_accuracy",
    "Accuracy of each of the pair on the rated reviews both scored, by role; from SENTIMENT_ACCURACY_MIN_REVIEWS on.",
    ["live_version", "shadow_version", "role"],
    multiprocess_mode="livemin",
)
SHADOW_DIFFERENCE = Gauge(
    "sentiment_shadow_accuracy_difference",
    "Shadow accuracy minus live accuracy on the rated reviews both scored, with its 95% interval (bound: estimate, "
    "low, high); from SENTIMENT_ACCURACY_MIN_REVIEWS on.",
    ["live_version", "shadow_version", "bound"],
    multiprocess_mode="livemin",
)
SHADOW_P_VALUE = Gauge(
    "sentiment_shadow_mcnemar_p_value",
    "McNemar's test of shadow against live on the rated reviews both scored (small: they differ); from "
    "SENTIMENT_ACCURACY_MIN_REVIEWS on.",
    ["live_version", "shadow_version"],
    multiprocess_mode="livemin",
)
MODEL_INFO = Gauge(
    "sentiment_model_info",
    "The model versions in use (value 1), by role: live (scores the stream) or shadow (scores it too, results kept "
    "out).",
    ["version", "role"],
    multiprocess_mode="livemax",
)
MODEL_LIVE_MISMATCH = Gauge(
    "sentiment_model_live_mismatch",
    "1 when this worker does not run the model store's live version (it refused it, or has not loaded it yet): "
    "/readyz says which and why; 0 when it does.",
)
MODEL_SWAPS = Counter(
    "sentiment_model_swaps_total", "Times a worker switched a role to another version between two batches.", ["role"]
)
MODEL_SWAP_FAILURES = Counter(
    "sentiment_model_swap_failures_total",
    "Versions this worker refused to run (the old one kept), by version and reason: missing, corrupt, load_failed, "
    "scoring_path, mismatch, below_floor.",
    ["version", "reason"],
)
MODEL_SWAP_PAUSE_SECONDS = Histogram(
    "sentiment_model_swap_pause_seconds",
    "Time the agent spent switching models between two batches (the loading and checks happen beforehand, off the "
    "event loop).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
MODEL_LOAD_SECONDS = Histogram(
    "sentiment_model_load_seconds",
    "Time to fetch, unpack, load and check a new version before it can be switched to (off the event loop).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
MODEL_SCORE = Histogram(
    "sentiment_model_score",
    "Scores by role and version: the live version's (the same as sentiment_score) and the shadow's.",
    ["role", "version"],
    buckets=tuple(round(0.1 * i, 1) for i in range(1, 11)),
)
SHADOW_REVIEWS = Counter(
    "sentiment_shadow_reviews_total", "Reviews scored by both the live and the shadow version.", ["version"]
)
SHADOW_AGREEMENTS = Counter(
    "sentiment_shadow_agreements_total", "Of them, those the shadow version gave the live version's label.", ["version"]
)
SHADOW_ABS_DIFFERENCE = Counter(
    "sentiment_shadow_abs_difference_total",
    "Sum of |shadow score - live score| over those reviews (divide by sentiment_shadow_reviews_total for the mean).",
    ["version"],
)
SHADOW_AGREEMENT = Gauge(
    "sentiment_shadow_agreement",
    "Share of reviews the shadow version labels as the live one does, since it became the shadow on this worker.",
    ["version"],
    multiprocess_mode="livemin",
)
SHADOW_MEAN_ABS_DIFFERENCE = Gauge(
    "sentiment_shadow_mean_abs_difference",
    "Mean |shadow score - live score| since the version became the shadow on this worker.",
    ["version"],
    multiprocess_mode="livemax",
)
SCORING_INFO = Gauge(
    "sentiment_scoring_info",
    "How the model is computed (value 1): compiled, or tensorflow (also after a fallback).",
    ["path"],
    multiprocess_mode="livemax",
)
CONSUMER_LAG = Gauge(
    "sentiment_consumer_lag_messages",
    "Messages waiting in the assigned partitions (Fetch high watermark minus committed offset), every few seconds; "
    "NaN when unknown (no Fetch answer for 15 s: the consumer is blocked, or the broker away).",
    multiprocess_mode="livesum",
)
SINCE_PROGRESS = Gauge(
    "sentiment_seconds_since_progress",
    "Seconds since an offset last advanced while messages wait (0 while nothing waits).",
    multiprocess_mode="livemax",
)
LAST_SUCCESS = Gauge(
    "sentiment_last_batch_success_timestamp_seconds", "When the last batch was fully written.", multiprocess_mode="max"
)
SINCE_LAST_SUCCESS = Gauge(
    "sentiment_seconds_since_last_batch", "Seconds since the last batch was fully written.", multiprocess_mode="livemax"
)
HTTP_REJECTED = Counter(
    "sentiment_http_rejected_total",
    "HTTP requests and connections refused, by server (page, metrics) and reason (too_large, rate_limited, "
    "unauthorized, too_many_connections, malformed_http, invalid_json, ...): every 4xx and 5xx answered.",
    ["server", "reason"],
)
CONSUMER_LAG_AGE = Gauge(
    "sentiment_consumer_lag_age_seconds",
    "Seconds since the broker last told the high watermark of the assigned partitions that tells the longest "
    "(a Fetch answer); sentiment_consumer_lag_messages is NaN (unknown) while this is over 15 s.",
    multiprocess_mode="livemax",
)
READY = Gauge(
    "sentiment_ready",
    "1 while the worker can do its job (model loaded, in its group, database and broker reachable, offsets "
    "advancing while messages wait), else 0.",
    multiprocess_mode="livemin",
)

_last_success = time.time()


def mark_batch_done() -> None:
    global _last_success
    _last_success = time.time()
    LAST_SUCCESS.set(_last_success)


SINCE_LAST_SUCCESS.set_function(lambda: time.time() - _last_success)


def refresh() -> None:
    """Write the gauges that are functions of time (called every few seconds): in multiprocess mode the supervisor
    reads each process's files, not its functions."""
    SINCE_LAST_SUCCESS.set(time.time() - _last_success)


def forget_version(version: str) -> None:
    """Remove every series labelled by ``version`` (a version that left both roles): its accuracy, its shadow
    comparison, its score histogram. The counters of its refusals stay (what happened to it)."""
    for metric in (ACCURACY, CALIBRATION_ERROR, ACCURACY_REVIEWS, MODEL_SCORE, SHADOW_REVIEWS, SHADOW_AGREEMENTS,
                   SHADOW_ABS_DIFFERENCE, SHADOW_AGREEMENT, SHADOW_MEAN_ABS_DIFFERENCE, SHADOW_PAIRED_REVIEWS,
                   SHADOW_P_VALUE, SHADOW_PAIRED_ACCURACY, SHADOW_DIFFERENCE):  # fmt: skip
        names = metric._labelnames
        for values in list(metric._metrics):
            if version in (values[i] for i, name in enumerate(names) if name.endswith("version")):
                try:
                    metric.remove(*values)
                except KeyError:
                    pass


def observe_many(histogram, values: Iterable[float]) -> None:
    """``histogram.observe(v)`` for every value, in one step: the same bucket counts and sum, one lock per bucket
    touched instead of one per value and bucket (three observations per review were half of the worker's per-batch
    bookkeeping). ``histogram`` is a Histogram or one of its labelled children."""
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(float(values.sum()))
    bounds = histogram._upper_bounds  # ascending, the last +Inf: a value goes to the first bound >= it
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    for i in np.flatnonzero(counts[: len(bounds)]):  # (NaN sorts past +Inf: counted in no bucket, as observe does)
        histogram._buckets[i].inc(int(counts[i]))
