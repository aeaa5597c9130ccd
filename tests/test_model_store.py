"""The model store on SQLite, the switch between batches and the watcher with fakes, and the `sentiment model`
commands' answers to bad input: no broker, no TensorFlow."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from core.errors import UserError
from core.settings import Settings
from model.scorer import Inspection, model_version
from stream.ingest.batch import BatchResult, BatchScorer, Incoming, ShadowScores
from stream.lifecycle import model_store
from stream.lifecycle.model_gate import LoadedModel, Refused
from stream.lifecycle.model_swap import ModelSwitch, ModelWatcher
from stream.sql.db import upgrade


def fake_folder(where: Path, content: bytes) -> Path:
    """A folder shaped like an artifact; its model.keras is any bytes (the store never reads them as a model)."""
    where.mkdir(parents=True)
    (where / "model.keras").write_bytes(content)
    (where / "metrics.json").write_text("{}")
    return where


def stored(engine, tmp_path: Path, content: bytes = b"model one") -> str:
    folder = fake_folder(tmp_path / content.decode().replace(" ", "-"), content)
    version = model_version(folder / "model.keras")
    manifest = {"version": version, "canary": {"accuracy": 1.0, "scores": None}}
    blob = model_store.pack(model_store.artifact_files(folder, 1 << 20))
    assert model_store.add_version(engine, version, blob, manifest, {"fast-x.npz": b"tables"}, "tester@here")
    return version


def counts(engine) -> tuple[int, int]:
    from sqlalchemy import func, select

    with engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(model_store.model_versions)),
            conn.scalar(select(func.count()).select_from(model_store.model_assignments)),
        )


def test_a_version_is_stored_whole_named_by_its_model_file_and_added_once(engine, tmp_path):
    version = stored(engine, tmp_path)
    [row] = model_store.versions(engine)
    assert row.version == version == model_version(tmp_path / "model-one" / "model.keras")
    fetched = model_store.fetch(engine, version)
    assert model_store.sha256_of(fetched.content) == fetched.sha256
    assert model_store.fetch_table(engine, version, "fast-x.npz") == (model_store.sha256_of(b"tables"), b"tables")
    assert model_store.fetch_table(engine, version, "fast-other.npz") is None
    assert not model_store.add_version(engine, version, b"other bytes", {}, {}, "someone")  # immutable
    assert model_store.fetch(engine, version).content == fetched.content


def test_a_failed_add_leaves_no_half_version(engine, tmp_path):
    folder = fake_folder(tmp_path / "m", b"model two")
    blob = model_store.pack(model_store.artifact_files(folder, 1 << 20))
    with pytest.raises(TypeError):  # fails on the tables, after the version's own row was inserted
        model_store.add_version(engine, "v2", blob, {}, {"fast-v2.npz": None}, "me")
    assert counts(engine) == (0, 0) and not model_store.has_version(engine, "v2")


def test_roles_are_an_append_only_history_and_rollback_returns_to_the_previous_live(engine, tmp_path):
    one, two = stored(engine, tmp_path, b"model one"), stored(engine, tmp_path, b"model two")
    assert model_store.wanted(engine).live is None
    with pytest.raises(UserError, match="nothing to roll back"):
        model_store.rollback_target(engine)
    model_store.assign(engine, "live", one, "a@h", "seed")
    with pytest.raises(UserError, match="first one set"):
        model_store.rollback_target(engine)
    model_store.assign(engine, "live", two, "b@h", "promote")
    model_store.assign(engine, "shadow", one, "b@h", "shadow")
    wanted = model_store.wanted(engine)
    assert (wanted.live_version, wanted.live.previous, wanted.shadow_version) == (two, one, one)
    assert model_store.rollback_target(engine) == (two, one)
    model_store.assign(engine, "shadow", None, "b@h", "shadow")
    assert model_store.wanted(engine).shadow_version is None
    assert [a.action for a in model_store.history(engine)] == ["shadow", "shadow", "promote", "seed"]


def test_an_unknown_version_changes_nothing(engine, tmp_path):
    stored(engine, tmp_path)
    before = counts(engine)
    with pytest.raises(UserError, match="no version"):
        model_store.assign(engine, "live", "feedbeefcafe", "a@h", "promote")
    with pytest.raises(UserError, match="no version"):
        model_store.resolve(engine, "feed")
    assert counts(engine) == before


def test_a_short_prefix_says_how_long_one_must_be(engine, tmp_path):
    version = stored(engine, tmp_path)
    assert model_store.resolve(engine, version[:4]) == version
    with pytest.raises(UserError, match="at least 4 characters; '[0-9a-f]{3}' has 3") as refused:
        model_store.resolve(engine, version[:3])
    assert refused.value.exit_code == 2 and version[:4] in refused.value.hint


def test_a_version_is_unpacked_only_when_its_bytes_are_what_was_stored(engine, tmp_path):
    version = stored(engine, tmp_path)
    fetched = model_store.fetch(engine, version)
    root = tmp_path / "cache" / "models"
    folder = model_store.unpack(fetched.content, fetched.sha256, version, root)
    assert (folder / "model.keras").read_bytes() == b"model one" and folder == root / version
    damaged = bytearray(fetched.content)
    damaged[len(damaged) // 2] ^= 0xFF
    for bad in (bytes(damaged), fetched.content[: len(fetched.content) // 2]):
        with pytest.raises(model_store.CorruptVersion, match="hash"):
            model_store.unpack(bad, fetched.sha256, version, tmp_path / "other")
        # the stored hash of a damaged blob still matches it: the archive or the model file gives it away
        with pytest.raises(model_store.CorruptVersion):
            model_store.unpack(bad, model_store.sha256_of(bad), version, tmp_path / "other")
    assert not (tmp_path / "other" / version).exists()
    assert [p.name for p in (tmp_path / "other").iterdir()] == []  # no half-written folder left


def test_workers_report_what_they_run(engine):
    state = model_store.WorkerState("w1", "aaa", None, None, model_store.now())
    model_store.report_worker(engine, state)
    model_store.report_worker(engine, state.__class__("w1", "bbb", "ccc", "x", model_store.now()))
    [seen] = model_store.running_workers(engine)
    assert (seen.live, seen.shadow, seen.refused) == ("bbb", "ccc", "x")
    assert model_store.running_workers(engine, within=-1) == []


# --- the switch and the watcher, with fakes ------------------------------------------------------------------------


class FakeScorer:
    """Scores every text ``value``; ``hold`` makes :meth:`inspect` wait (a batch in the middle of scoring)."""

    scoring = "compiled"

    def __init__(self, version: str, value: float = 0.9, hold: threading.Event | None = None) -> None:
        self.version = version
        self.value = value
        self.hold = hold
        self.started = threading.Event()

    def score(self, texts):
        return np.full(len(texts), self.value, dtype=np.float32)

    def inspect(self, texts):
        self.started.set()
        if self.hold is not None:
            self.hold.wait(5)
        n = len(texts)
        return Inspection(self.score(texts), np.full(n, 10), np.full(n, 8), np.zeros((n, 2), dtype=np.float32))


def loaded(version: str, **kwargs) -> LoadedModel:
    return LoadedModel(artifact=None, scorer=FakeScorer(version, **kwargs))


def messages(n: int) -> list[Incoming]:
    return [
        Incoming(json.dumps({"review_id": f"r{i}", "movie_id": "tt1", "text": "fine", "rating": 7}).encode())
        for i in range(n)
    ]


def test_a_batch_is_scored_by_one_version_even_when_a_swap_comes_in_the_middle():
    hold = threading.Event()
    batch_scorer = BatchScorer(FakeScorer("old", hold=hold), max_text_chars=100, max_message_bytes=1000)
    done: list[BatchResult] = []
    scoring = threading.Thread(target=lambda: done.append(batch_scorer.process(messages(5))))
    scoring.start()
    batch_scorer.scorer.started.wait(5)
    batch_scorer.scorer = FakeScorer("new")  # the worst moment: the swap lands while the batch is being scored
    hold.set()
    scoring.join(5)
    assert {s.model_version for s in done[0].sentiments} == {"old"}
    assert {s.model_version for s in batch_scorer.process(messages(3)).sentiments} == {"new"}


def test_the_shadow_scores_the_same_reviews_and_reaches_no_result():
    batch_scorer = BatchScorer(FakeScorer("live", 0.9), max_text_chars=100, max_message_bytes=1000)
    batch_scorer.shadow = FakeScorer("shadow", 0.2)
    result = batch_scorer.process(messages(4))
    assert [s.score for s in result.sentiments] == pytest.approx([0.9] * 4)
    assert {s.model_version for s in result.sentiments} == {"live"}
    assert result.shadow.version == "shadow" and result.shadow.scores.tolist() == pytest.approx([0.2] * 4)
    assert result.ratings == [7, 7, 7, 7]


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list = []

    def live_changed(self, artifact, scorer) -> None:
        self.calls.append(("live", scorer.version))

    def shadow_changed(self, version) -> None:
        self.calls.append(("shadow", version))


def test_the_switch_applies_what_is_offered_between_batches_only():
    batch_scorer = BatchScorer(FakeScorer("a"), max_text_chars=100, max_message_bytes=1000)
    observer = RecordingObserver()
    switch = ModelSwitch(loaded("a"), batch_scorer, observer)
    switch.offer("live", loaded("b"))
    switch.offer("shadow", loaded("c"))
    assert switch.version_of("live") == "b" and batch_scorer.scorer.version == "a"  # offered, not applied
    assert switch.apply() == [("live", "a", "b"), ("shadow", None, "c")]
    assert batch_scorer.scorer.version == "b" and batch_scorer.shadow.version == "c"
    assert switch.current().version == "b" and observer.calls == [("live", "b"), ("shadow", "c")]
    switch.offer("shadow", None)
    assert switch.apply() == [("shadow", "c", None)] and batch_scorer.shadow is None
    assert switch.apply() == []


def failures(version: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("sentiment_model_swap_failures_total", {"version": version, "reason": reason})
    return value or 0.0


def test_the_watcher_follows_the_store_refuses_a_bad_version_once_and_keeps_the_old(engine, tmp_path):
    good, bad = stored(engine, tmp_path, b"model good"), stored(engine, tmp_path, b"model bad")
    settings = Settings(app_id="watch-test")
    batch_scorer = BatchScorer(FakeScorer("start"), max_text_chars=100, max_message_bytes=1000)
    switch = ModelSwitch(loaded("start"), batch_scorer)
    loads: list[str] = []

    def load(engine_, version, settings_):
        loads.append(version)
        if version == bad:
            raise Refused("below_floor", "canary accuracy 0.000")
        return loaded(version)

    watcher = ModelWatcher(engine, settings, switch, load=load)
    asyncio.run(watcher.poll())  # nothing set in the store: the configured model stays
    assert batch_scorer.scorer.version == "start" and loads == []
    model_store.assign(engine, "live", good, "me", "promote")
    asyncio.run(watcher.poll())
    assert batch_scorer.scorer.version == good  # an idle stream switches too
    [me] = model_store.running_workers(engine)
    assert me.live == good and me.refused is None
    before = failures(bad, "below_floor")
    model_store.assign(engine, "live", bad, "me", "promote")
    asyncio.run(watcher.poll())
    asyncio.run(watcher.poll())  # refused once per assignment, not at every poll
    assert batch_scorer.scorer.version == good and loads == [good, bad]
    assert failures(bad, "below_floor") == before + 1
    [me] = model_store.running_workers(engine)
    assert me.live == good and me.refused.startswith(f"{bad} as live: below_floor")
    model_store.assign(engine, "live", good, "me", "rollback")
    model_store.assign(engine, "shadow", good, "me", "shadow")
    asyncio.run(watcher.poll())
    assert batch_scorer.scorer.version == good and batch_scorer.shadow.version == good


def test_the_observer_compares_the_shadow_and_hands_each_batch_to_its_hooks():
    from tests.test_observer import FakeConsumer, observer_for

    observer = observer_for(FakeConsumer({}))
    observer.shadow_changed("shadow-v")
    seen = []
    observer.on_batch(seen.append)
    from schemas import Sentiment

    live = [0.9, 0.8, 0.3, 0.6]
    shadow = [0.7, 0.4, 0.2, 0.6]
    result = BatchResult(
        sentiments=[Sentiment(f"r{i}", "tt1", s, "x", "test-model", "t", "t") for i, s in enumerate(live)],
        ratings=[9, None, 2, 6],
        shadow=ShadowScores("shadow-v", np.asarray(shadow, dtype=np.float32)),
    )
    observer.delivered(result, [])
    summary = observer.shadow_summary()
    assert summary["agreement"] == pytest.approx(0.75) and summary["reviews"] == 4
    assert summary["mean_abs_difference"] == pytest.approx((0.2 + 0.4 + 0.1 + 0.0) / 4, abs=1e-6)
    assert REGISTRY.get_sample_value("sentiment_shadow_agreement", {"version": "shadow-v"}) == pytest.approx(0.75)
    [batch] = seen
    assert batch.ratings == [9, None, 2, 6] and batch.live_version == "test-model"
    assert batch.shadow_version == "shadow-v" and batch.shadow_scores.tolist() == pytest.approx(shadow)


# --- the commands' answers to bad input ----------------------------------------------------------------------------


def test_model_list_shows_each_workers_evidence_of_shadow_against_live(engine, tmp_path, db_url, capsys, monkeypatch):
    """The watcher reports the observer's comparison in words (stream/observe/accuracy.py), and `model list` shows it."""
    good = stored(engine, tmp_path, b"model good")
    said = "shadow 91.9% vs live 91.1% on 4,812 rated reviews, difference +0.8 points (95% interval +0.3 to +1.3), p = 0.003"
    evidence = [None]
    batch_scorer = BatchScorer(FakeScorer("start"), max_text_chars=100, max_message_bytes=1000)
    watcher = ModelWatcher(
        engine, Settings(app_id="evidence-test"), ModelSwitch(loaded("start"), batch_scorer),
        load=lambda engine_, version, settings_: loaded(version), evidence=lambda: evidence[0],
    )  # fmt: skip
    model_store.assign(engine, "shadow", good, "me", "shadow")
    asyncio.run(watcher.poll())
    assert model_store.running_workers(engine)[0].evidence is None  # nothing measured yet: nothing claimed
    evidence[0] = said
    asyncio.run(watcher.poll())
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", db_url)
    from sentiment.cli import main

    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert f"shadow {good}" in out and said in out


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    from sentiment.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args, expected",
    [
        (("model", "promote", "feedbeefcafe"), "no version 'feedbeefcafe' in the model store"),
        (("model", "shadow", "feedbeefcafe"), "no version 'feedbeefcafe' in the model store"),
        (("model", "rollback"), "live version"),
        (("model", "add", "{tmp}/missing"), "no folder at"),
        (("model", "add", "{tmp}/empty"), "is empty"),
        (("model", "add", "{tmp}/text-only"), "is not a model: no model.keras in it"),
        (("model", "add", "{tmp}/not-keras"), "is not a Keras model"),
        (("model", "promote", "{stored}"), "no worker is running on this database"),
    ],
)
def test_bad_input_to_every_model_command_is_one_clear_line_and_changes_nothing(
    args, expected, db_url, engine, tmp_path, capsys, monkeypatch
):
    one = stored(engine, tmp_path, b"model one")
    two = stored(engine, tmp_path, b"model two")
    model_store.assign(engine, "live", one, "me", "seed")
    (tmp_path / "empty").mkdir()
    (tmp_path / "text-only").mkdir()
    (tmp_path / "text-only" / "notes.txt").write_text("not a model")
    fake_folder(tmp_path / "not-keras", b"these bytes are no zip archive")
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", db_url)
    before = counts(engine), [v.version for v in model_store.versions(engine)]
    code, lines = run_cli(capsys, *(a.format(tmp=tmp_path, stored=two) for a in args))
    assert code in (1, 2)
    assert 1 <= len(lines) <= 2 and expected in lines[0] and "Traceback" not in "\n".join(lines)
    assert (counts(engine), [v.version for v in model_store.versions(engine)]) == before


def test_a_database_without_the_store_says_to_migrate(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")  # the rating column, not yet the store
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", url)
    code, lines = run_cli(capsys, "model", "list")
    assert code == 1 and "sentiment db upgrade" in lines[1]


def test_the_scoring_api_answers_with_the_version_live_at_the_moment():
    from stream.web import ScoringApi

    batch_scorer = BatchScorer(FakeScorer("a", 0.9), max_text_chars=100, max_message_bytes=1000)
    switch = ModelSwitch(loaded("a", value=0.9), batch_scorer)
    api = ScoringApi(
        switch,
        FakeExplainer,
        uncertain_band=0.1,
        min_known_share=0.3,
        max_texts=4,
        max_text_chars=100,
        max_concurrent=1,
        cpu_share=1.0,
    )
    first = json.loads(api.answer(["Loved it."], explain=True))
    switch.offer("live", loaded("b", value=0.2))
    switch.apply()
    gc.collect()
    assert len(api.explainers) == 0  # the switched-out model's explainer (and tables) went with it, unasked
    second = json.loads(api.answer(["Loved it."], explain=True))
    assert (first["model_version"], first["results"][0]["label"]) == ("a", "positive")
    assert (second["model_version"], second["results"][0]["label"]) == ("b", "negative")
    assert second["results"][0]["explanation"]["sum"] == pytest.approx(
        0.2 - 0.5
    )  # explained by the version that scored
    assert [e.version for e in api.explainers.values()] == ["b"]


class FakeExplainer:
    def __init__(self, scorer) -> None:
        self.version, self.value = scorer.version, scorer.value

    def explain(self, text: str):
        from model.explain import Explanation

        return Explanation(self.value, 0.5, [text], [self.value - 0.5], [(text, self.value - 0.5)])
