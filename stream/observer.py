"""What the worker tells about the batches it takes and delivers: Prometheus metrics, score and input drift, the
progress line of the log, the samples behind the page's live charts, and the consumer lag. No Kafka in it: the
consumer it asks for the lag is handed in.

The lag and whether offsets advance are measured every few seconds (``watch``), not when a batch completes: a worker
whose batches cannot complete (the database away, a message that cannot be delivered) is exactly the one whose lag
matters. Reviews waiting and no offset advancing for ``SENTIMENT_STALL_SECONDS`` make the worker not ready."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.settings import Settings
from stream.ingest.batch import BatchResult, Incoming
from stream.observe import metrics
from stream.observe.accuracy import LiveAccuracy, accuracy_floor
from stream.observe.drift import DriftMonitor, InputDriftMonitor, drift_verdict
from stream.observe.health import Health
from stream.web import LiveState

if TYPE_CHECKING:
    from model.scorer import ModelArtifact, Scorer

log = logging.getLogger("sentiment.worker")

NAN = float("nan")


class Partition(Protocol):
    topic: str
    partition: int


class Consumer(Protocol):
    def assignment(self) -> Iterable[Partition]: ...

    def highwater(self, tp: Partition) -> int | None:
        """The offset the next message written to the partition will get, from the last Fetch; None before one."""
        ...

    def committed(self, tp: Partition) -> int | None:
        """The group's committed offset of the partition (the next one to read); None when it never committed."""
        ...

    # Optional: ``fetch_age(tp)``, the seconds since a Fetch answer last told the partition's high watermark (None:
    # none yet). Without it the high watermarks are taken as fresh.


# Over this many seconds without a Fetch answer for a partition, its high watermark is stale (the consumer is
# blocked: a batch that cannot be delivered stops the fetches; or the broker is away): the lag is unknown, not the
# figure of then, which would stay flat while reviews pile up.
LAG_STALE_SECONDS = 15.0


@dataclass(frozen=True)
class BatchComparison:
    """One delivered batch as the live and shadow versions scored it, for whoever watches models (the hook of
    :meth:`BatchObserver.on_batch`): each scored review's rating as sent (None: none), live score, and shadow
    score (None without a shadow)."""

    review_ids: list[str]
    ratings: list[int | None]
    live_version: str
    live_scores: np.ndarray
    shadow_version: str | None
    shadow_scores: np.ndarray | None


@dataclass
class ShadowTally:
    """How a shadow version compares with the live one since it became the shadow on this worker."""

    reviews: int = 0
    agreements: int = 0
    abs_difference: float = 0.0

    @property
    def agreement(self) -> float:
        return self.agreements / self.reviews if self.reviews else NAN

    @property
    def mean_abs_difference(self) -> float:
        return self.abs_difference / self.reviews if self.reviews else NAN


class BatchObserver:
    def __init__(
        self,
        *,
        model_version: str,
        scoring: str,
        drift: DriftMonitor,
        inputs_drift: InputDriftMonitor | None,
        settings: Settings,
        health: Health,
        consumer: Callable[[], Consumer],
        clock: Callable[[], float] = time.monotonic,
        accuracy: LiveAccuracy | None = None,
    ) -> None:
        """``inputs_drift`` is None when the model has no reference inputs; ``consumer`` returns the consumer whose
        assignment, high watermarks and committed offsets give the lag; ``clock`` tells the time since progress;
        ``accuracy`` keeps the live accuracy on rated reviews (by default without a floor)."""
        self.drift = drift
        self.accuracy = accuracy or LiveAccuracy(settings.accuracy_window, settings.accuracy_min_reviews)
        self.accuracy_series: set[tuple[str, str]] = set()  # (version, role) of the window sizes exported
        self.accuracy_measured: set[tuple[str, str]] = set()  # ... and of the accuracies exported
        self.pair_series: tuple[str, str] | None = None  # (live, shadow) versions of the comparison exported
        self.inputs_drift = inputs_drift
        self.settings = settings
        self.health = health
        self.consumer = consumer
        self.scored = 0  # totals since start, for the progress line
        self.rejected = 0
        self.at_last_line = (time.monotonic(), 0, 0)  # when, scored, rejected
        self.idle_said: tuple | None = None  # what the last idle progress line said (lag, readiness), if it was idle
        self.verdict = NAN  # the latest input drift verdict, NaN until the window is ready
        self.last_offsets: dict[tuple[str, int], int] = {}  # the last processed offset of each partition
        self.clock = clock
        self.positions: dict[tuple[str, int], int] = {}  # where each assigned partition stood at the last watch
        self.fetch_age: float | None = None  # the oldest high watermark's age at the last look, in seconds
        self.last_progress = clock()  # when an offset last advanced (or nothing was waiting)
        self.batch_hooks: list[Callable[[BatchComparison], None]] = []
        self.shadow_version: str | None = None
        self.shadow_tally = ShadowTally()
        self.live = LiveState(
            streaming=True,
            window_scores=lambda: list(self.drift.window),
            reference_scores=drift.reference,
            psi_threshold=settings.psi_threshold,
            accuracy=self.accuracy.as_json,
            shadow=self.shadow_summary,
        )
        for gauge in (
            metrics.INPUT_OOV_SHIFT,
            metrics.INPUT_LENGTH_SHIFT,
            metrics.INPUT_EMBEDDING_SHIFT,
            metrics.INPUT_MEAN_NGRAMS,
            metrics.DRIFT_VERDICT,
        ):
            gauge.set(NAN)
        self.model_version = model_version
        metrics.MODEL_INFO.labels(version=model_version, role="live").set(1)
        metrics.SCORING_INFO.labels(path=scoring).set(1)
        metrics.PSI_THRESHOLD.set(settings.psi_threshold)
        metrics.DRIFT_MIN_SCORES.set(drift.min_scores)
        metrics.SCORE_PSI.set(NAN)
        metrics.SCORE_KS.set(NAN)
        metrics.ACCURACY_MIN_REVIEWS.set(self.accuracy.min_reviews)
        metrics.ACCURACY_FLOOR.set(NAN if self.accuracy.floor is None else self.accuracy.floor)

    @classmethod
    def for_model(
        cls,
        artifact: ModelArtifact,
        scorer: Scorer,
        settings: Settings,
        health: Health,
        consumer: Callable[[], Consumer],
    ) -> BatchObserver:
        """The observer of a model artifact's scorer, with the artifact's reference scores and inputs for drift."""
        drift, inputs_drift = _drift_monitors(artifact, scorer.version, settings)
        floor = settings.accuracy_floor
        if floor is None:
            floor = accuracy_floor(artifact.metrics(), settings.accuracy_margin)
        if floor is None:
            log.warning(
                "model %s has no validation accuracy in metrics.json: no live accuracy floor (set "
                "SENTIMENT_ACCURACY_FLOOR)",
                scorer.version,
            )
        return cls(
            model_version=scorer.version,
            scoring=scorer.scoring,
            drift=drift,
            inputs_drift=inputs_drift,
            settings=settings,
            health=health,
            consumer=consumer,
            accuracy=LiveAccuracy(settings.accuracy_window, settings.accuracy_min_reviews, floor),
        )

    def on_batch(self, hook: Callable[[BatchComparison], None]) -> None:
        """Call ``hook`` with every delivered batch's :class:`BatchComparison` (on the event loop: keep it short)."""
        self.batch_hooks.append(hook)

    def live_changed(self, artifact: ModelArtifact, scorer: Scorer) -> None:
        """The stream scores with another version from the next batch on: the drift references become its own
        (the windows start again: the old version's scores say nothing about the new one's distribution)."""
        metrics.MODEL_INFO.remove(self.model_version, "live")
        self.model_version = scorer.version
        metrics.MODEL_INFO.labels(version=scorer.version, role="live").set(1)
        self.drift, self.inputs_drift = _drift_monitors(artifact, scorer.version, self.settings)
        self.live.reference_scores = self.drift.reference
        self.shadow_tally = ShadowTally()  # compared with another live version now

    def shadow_changed(self, version: str | None) -> None:
        if self.shadow_version is not None:
            metrics.MODEL_INFO.remove(self.shadow_version, "shadow")
        self.shadow_version = version
        self.shadow_tally = ShadowTally()
        if version is not None:
            metrics.MODEL_INFO.labels(version=version, role="shadow").set(1)
        else:
            self.shadow_ended()  # its live accuracy and the paired comparison go too

    def shadow_summary(self) -> dict | None:
        """The shadow version against the live one since it became the shadow here (the page shows it)."""
        if self.shadow_version is None:
            return None
        tally = self.shadow_tally
        return {
            "version": self.shadow_version,
            "reviews": tally.reviews,
            "agreement": tally.agreement if tally.reviews else None,
            "mean_abs_difference": tally.mean_abs_difference if tally.reviews else None,
        }

    def taken(self, messages: Sequence[Incoming]) -> None:
        metrics.REVIEWS_CONSUMED.inc(len(messages))
        metrics.BATCH_SIZE.observe(len(messages))

    def scored_in(self, seconds: float) -> None:
        metrics.BATCH_SCORING_SECONDS.observe(seconds)

    def delivered(self, result: BatchResult, messages: Sequence[Incoming]) -> None:
        """One batch is stored, published and committed."""
        now = time.time()
        scores = [s.score for s in result.sentiments]
        metrics.REVIEWS_SCORED.inc(len(scores))
        metrics.REVIEWS_UNREADABLE.inc(sum(not s.readable for s in result.sentiments))
        self.scored += len(scores)
        self.rejected += len(result.rejected)
        metrics.EVENTS_SENT.labels(topic="sentiments").inc(len(scores))
        metrics.EVENTS_SENT.labels(topic="dead_letter").inc(len(result.rejected))
        for message, why in result.rejected:
            metrics.REVIEWS_REJECTED.labels(reason=why.reason).inc()
            log.warning(
                "rejected %s[%d]@%d to %s: %s",
                message.topic,
                message.partition,
                message.offset,
                self.settings.topic_dlq,
                why.reason,
            )
        metrics.observe_many(
            metrics.END_TO_END_SECONDS, [max(0.0, now - m.timestamp) for m in messages if m.timestamp is not None]
        )
        live_version = result.sentiments[0].model_version if result.sentiments else self.model_version
        metrics.observe_many(metrics.SCORE, scores)
        metrics.observe_many(metrics.MODEL_SCORE.labels(role="live", version=live_version), scores)
        if result.shadow is not None and scores:
            self._compare(result, np.asarray(scores, dtype=np.float64))
        if self.batch_hooks and scores:
            self._tell_hooks(result, live_version, np.asarray(scores, dtype=np.float64))
        self._watch_scores(scores)
        if result.sentiments:
            self._watch_accuracy(result, scores)
        if self.inputs_drift is not None and result.inputs is not None:
            self._watch_inputs(result)
        # a partition's messages come in offset order (the consumer drops one read before), so its last is its highest
        last_offsets = self.last_offsets
        for key, offset in {(m.topic, m.partition): m.offset for m in messages}.items():
            if offset > last_offsets.get(key, -1):
                last_offsets[key] = offset
        self.last_progress = self.clock()
        metrics.CONSUMER_LAG.set(self.lag())
        metrics.mark_batch_done()

    def _compare(self, result: BatchResult, live: np.ndarray) -> None:
        shadow = result.shadow
        version = shadow.version
        theirs = np.asarray(shadow.scores, dtype=np.float64)
        agreements = int(np.sum((theirs >= 0.5) == (live >= 0.5)))
        difference = float(np.sum(np.abs(theirs - live)))
        metrics.observe_many(metrics.MODEL_SCORE.labels(role="shadow", version=version), theirs)
        metrics.SHADOW_REVIEWS.labels(version=version).inc(len(live))
        metrics.SHADOW_AGREEMENTS.labels(version=version).inc(agreements)
        metrics.SHADOW_ABS_DIFFERENCE.labels(version=version).inc(difference)
        if version == self.shadow_version:
            tally = self.shadow_tally
            tally.reviews += len(live)
            tally.agreements += agreements
            tally.abs_difference += difference
            metrics.SHADOW_AGREEMENT.labels(version=version).set(tally.agreement)
            metrics.SHADOW_MEAN_ABS_DIFFERENCE.labels(version=version).set(tally.mean_abs_difference)

    def _tell_hooks(self, result: BatchResult, live_version: str, live: np.ndarray) -> None:
        comparison = BatchComparison(
            review_ids=[s.review_id for s in result.sentiments],
            ratings=list(result.ratings),
            live_version=live_version,
            live_scores=live,
            shadow_version=result.shadow.version if result.shadow is not None else None,
            shadow_scores=np.asarray(result.shadow.scores) if result.shadow is not None else None,
        )
        for hook in self.batch_hooks:
            try:
                hook(comparison)
            except Exception:  # noqa: BLE001 - a watcher's bug must not stop delivery
                log.exception("a batch hook failed")

    def _watch_scores(self, scores: list[float]) -> None:
        self.drift.add(scores)
        metrics.DRIFT_WINDOW.set(len(self.drift.window))
        metrics.POSITIVE_RATIO.set(self.drift.positive_ratio())
        metrics.DRIFT_READY.set(1 if self.drift.ready else 0)
        if self.drift.ready:  # until then PSI and KS stay NaN: a few hundred scores say nothing reliable
            metrics.SCORE_PSI.set(self.drift.psi())
            metrics.SCORE_KS.set(self.drift.ks())

    def _watch_inputs(self, result: BatchResult) -> None:
        inputs_drift = self.inputs_drift
        inputs_drift.add(result.inputs.ngrams, result.inputs.known, result.inputs.pooled)
        metrics.INPUT_MEAN_NGRAMS.set(inputs_drift.mean_ngrams())
        if inputs_drift.ready:
            oov, length = inputs_drift.oov_shift(), inputs_drift.length_shift()
            metrics.INPUT_OOV_SHIFT.set(oov)
            metrics.INPUT_LENGTH_SHIFT.set(length)
            metrics.INPUT_EMBEDDING_SHIFT.set(inputs_drift.embedding_shift())
            self.verdict, _ = drift_verdict(
                oov, length, oov_scale=self.settings.drift_oov_scale, length_scale=self.settings.drift_length_scale
            )
            metrics.DRIFT_VERDICT.set(self.verdict)

    def _watch_accuracy(self, result: BatchResult, scores: list[float]) -> None:
        """Feed the rated reviews to the live accuracy (and the shadow's scores of them, when the batch has some:
        ``BatchResult.shadow``), then export what it knows: a version's figures from its minimum count on, a
        comparison likewise; the series of versions no longer in use are removed."""
        shadow = result.shadow
        self.accuracy.add(
            result.ratings, scores, result.sentiments[0].model_version,
            None if shadow is None else shadow.scores, None if shadow is None else shadow.version,
        )  # fmt: skip
        self._export_accuracy()

    def shadow_evidence(self) -> str | None:
        """Shadow against live on the rated reviews both scored, in one line, once there are enough of them (what
        ``sentiment model list`` shows for this worker)."""
        compared = self.accuracy.compared()
        return None if compared is None else compared.text()

    def shadow_ended(self) -> None:
        """The shadow scorer was removed: its accuracy and the comparison are forgotten, their series removed."""
        self.accuracy.end_shadow()
        self._export_accuracy()

    def _export_accuracy(self) -> None:
        shown, measured = set(), set()
        for v in self.accuracy.versions():
            key = (v.version, v.role)
            shown.add(key)
            metrics.ACCURACY_REVIEWS.labels(*key).set(v.reviews)
            if v.accuracy == v.accuracy:  # NaN below the minimum count: no series at all
                measured.add(key)
                metrics.ACCURACY.labels(*key).set(v.accuracy)
                metrics.CALIBRATION_ERROR.labels(*key).set(v.calibration_error)
        for key in self.accuracy_series - shown:
            _remove(metrics.ACCURACY_REVIEWS, key)
        for key in self.accuracy_measured - measured:
            _remove(metrics.ACCURACY, key)
            _remove(metrics.CALIBRATION_ERROR, key)
        self.accuracy_series, self.accuracy_measured = shown, measured
        self._export_comparison()

    def _export_comparison(self) -> None:
        pair = self.accuracy.compared()
        key = None if pair is None else (pair.live_version, pair.shadow_version)
        if self.pair_series is not None and self.pair_series != key:
            _remove(metrics.SHADOW_PAIRED_REVIEWS, self.pair_series)
            _remove(metrics.SHADOW_P_VALUE, self.pair_series)
            for role in ("live", "shadow"):
                _remove(metrics.SHADOW_PAIRED_ACCURACY, (*self.pair_series, role))
            for bound in ("estimate", "low", "high"):
                _remove(metrics.SHADOW_DIFFERENCE, (*self.pair_series, bound))
        self.pair_series = key
        if pair is None:
            return
        metrics.SHADOW_PAIRED_REVIEWS.labels(*key).set(pair.reviews)
        metrics.SHADOW_P_VALUE.labels(*key).set(pair.p_value())
        metrics.SHADOW_PAIRED_ACCURACY.labels(*key, "live").set(pair.live_accuracy())
        metrics.SHADOW_PAIRED_ACCURACY.labels(*key, "shadow").set(pair.shadow_accuracy())
        for bound, value in zip(("estimate", "low", "high"), pair.difference()):
            metrics.SHADOW_DIFFERENCE.labels(*key, bound).set(value)

    def watch(self) -> None:
        """Measure the lag and the time since an offset last advanced, whether or not a batch completes; mark the
        worker not ready while reviews wait and nothing advances for ``stall_seconds``. Called every few seconds."""
        now = self.clock()
        positions = self._positions()
        if positions is None:  # the broker cannot say: neither the lag nor a stall is known
            metrics.CONSUMER_LAG.set(NAN)
            self.health.update(stalled=None)
            return
        waiting = waiting_in(positions)
        stale = self.lag_is_stale()
        advanced = any(position > self.positions.get(key, position) for key, (position, _) in positions.items())
        self.positions = {key: position for key, (position, _) in positions.items()}
        if advanced or not waiting:
            self.last_progress = now
        since = now - self.last_progress
        metrics.CONSUMER_LAG.set(NAN if stale else waiting)
        metrics.CONSUMER_LAG_AGE.set(self.fetch_age or 0.0)
        metrics.SINCE_PROGRESS.set(since)
        stalled = waiting and since >= self.settings.stall_seconds
        was_stalled = self.health.stalled is not None
        self.health.update(stalled=f"{waiting:,} reviews waiting, no progress for {since:,.0f} s" if stalled else None)
        if stalled and not was_stalled:
            log.warning("not advancing: %s", self.health.stalled)
        elif was_stalled and not stalled:
            log.info("advancing again")

    def lag(self) -> float:
        """Messages waiting in the assigned partitions: the Fetch high watermark (not ListOffsets, which Tansu
        answers wrongly for multi-record batches) minus what is committed or delivered; NaN when unknown."""
        positions = self._positions()
        if positions is None or self.lag_is_stale():
            return NAN
        return float(waiting_in(positions))

    def lag_is_stale(self) -> bool:
        """True when some assigned partition's high watermark is older than ``LAG_STALE_SECONDS`` (at the last
        look): the lag is then unknown."""
        return self.fetch_age is not None and self.fetch_age > LAG_STALE_SECONDS

    def _positions(self) -> dict[tuple[str, int], tuple[int, int]] | None:
        """(position, high watermark) of each assigned partition of the reviews topic that the broker has told
        about; None when it cannot say. The position is the next offset to deliver: the group's committed offset,
        or past the last delivered message if that is further (a commit may still be under way)."""
        try:
            consumer = self.consumer()
            found = {}
            fetch_age = getattr(consumer, "fetch_age", None)
            self.fetch_age = None
            for tp in consumer.assignment():
                if tp.topic != self.settings.topic_reviews:
                    continue
                highwater = consumer.highwater(tp)
                if highwater is None:  # no Fetch answered yet
                    continue
                key = (tp.topic, tp.partition)
                age = fetch_age(tp) if fetch_age is not None else None
                if age is not None:
                    self.fetch_age = max(self.fetch_age or 0.0, age)
                # a group that never committed starts at the partition's beginning (auto_offset_reset=earliest)
                committed = consumer.committed(tp) or 0
                found[key] = (max(committed, self.last_offsets.get(key, -1) + 1), highwater)
        except Exception:  # noqa: BLE001 - lag is best effort; the consumer may not be started or know it yet
            return None
        return found

    def progress_line(self) -> str | None:
        """The periodic progress line of the log: the rate and counts since the last line, the totals, lag, live
        accuracy once measured, ready. None while idle and nothing changed since the last line: an idle worker says
        so once, not every interval."""
        lag = self.lag()
        now = time.monotonic()
        then, scored, rejected = self.at_last_line
        self.at_last_line = (now, self.scored, self.rejected)
        lag_text = "unknown" if lag != lag else f"{lag:,.0f}"
        readiness = "ready" if self.health.ready else "NOT ready: " + "; ".join(self.health.reasons())
        if self.scored == scored and self.rejected == rejected:
            said, self.idle_said = self.idle_said, (lag_text, readiness)
            if said == self.idle_said:
                return None
        else:
            self.idle_said = None
        rate = (self.scored - scored) / max(now - then, 1e-9)
        accuracy = "".join(
            f"{v.role} accuracy {100 * v.accuracy:.1f}% on {v.reviews:,} rated reviews, "
            for v in self.accuracy.versions()
            if v.accuracy == v.accuracy
        )
        return (
            f"progress: {rate:,.1f} reviews/s, scored {self.scored - scored:,} and rejected {self.rejected - rejected:,} "
            f"in the last {now - then:,.0f} s ({self.scored:,} and {self.rejected:,} in all), lag {lag_text}, {accuracy}"
            f"{readiness}"
        )

    def sample_live(self) -> None:
        """One point of the page's live charts: reviews scored so far, score PSI, input drift verdict, the accuracy of
        each version measured."""
        measured = {f"{v.role} {v.version}": v.accuracy for v in self.accuracy.versions() if v.accuracy == v.accuracy}
        self.live.sample(self.scored, self.drift.psi(), self.verdict, measured)


def _remove(gauge, labels: tuple[str, ...]) -> None:
    """Drop one labelled series of ``gauge``, if it is there."""
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def _drift_monitors(
    artifact: ModelArtifact, version: str, settings: Settings
) -> tuple[DriftMonitor, InputDriftMonitor | None]:
    """The score and input drift monitors against an artifact's references (no input drift without them)."""
    drift = DriftMonitor(
        artifact.reference_scores(), window=settings.drift_window, min_scores=settings.drift_min_scores
    )
    reference_inputs = artifact.reference_inputs()
    if reference_inputs is None:
        log.warning("model %s has no reference_inputs.json: input drift is off (python -m training.reference)", version)
        return drift, None
    return drift, InputDriftMonitor(
        reference_inputs, window=settings.drift_window, min_reviews=settings.drift_min_scores
    )


def waiting_in(positions: dict[tuple[str, int], tuple[int, int]]) -> int:
    """Messages between each partition's position and its high watermark, summed."""
    return sum(max(0, highwater - position) for position, highwater in positions.values())
