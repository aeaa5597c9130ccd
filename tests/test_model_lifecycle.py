"""Issue 26's attacks on the model store, replayed without TensorFlow or a broker: the store on SQLite, workers as
:class:`ModelWatcher` with fake loads polling in a thread. What a user notices: the exit code of promote, what it
prints, what `live` says afterwards, what add refuses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from core.errors import UserError
from core.settings import Settings
from sentiment import models
from stream.ingest.batch import BatchScorer
from stream.lifecycle import model_lifecycle, model_store
from stream.lifecycle.model_gate import Refused, tables_difference
from stream.lifecycle.model_swap import ModelSwitch, ModelWatcher
from stream.observe import metrics
from stream.observe.health import Health
from tests.conftest import wait_until
from tests.test_model_store import FakeScorer, counts, loaded, stored


class Worker:
    """A worker's model-store side, polling in a thread like the real one (poll interval 0.2 s)."""

    def __init__(self, engine, name: str, start: str, refuse: dict[str, Refused] | None = None, hold=None) -> None:
        self.settings = Settings(app_id=name, model_poll_interval=0.2)
        self.health = Health()
        self.switch = ModelSwitch(loaded(start), BatchScorer(FakeScorer(start), max_text_chars=100,
                                                             max_message_bytes=1000))  # fmt: skip
        self.refuse = refuse or {}
        self.hold = hold  # an Event: a load waits for it (a slow build)
        self.watcher = ModelWatcher(engine, self.settings, self.switch, load=self.load, health=self.health)
        self.loads: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=asyncio.run, args=(self.loop(),), daemon=True)
        self.thread.start()

    def load(self, engine, version, settings):
        self.loads.append(version)
        if self.hold is not None:
            self.hold.wait(30)
        if version in self.refuse:
            raise self.refuse[version]
        return loaded(version)

    async def loop(self) -> None:
        while self.running:
            asyncio.ensure_future(self.watcher.poll())  # a timer that does not wait for the last poll to end
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)


@pytest.fixture()
def workers():
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def settings_for(db_url: str) -> Settings:
    return Settings(database_url=db_url, model_poll_interval=0.2)


def live_of(engine) -> str | None:
    return model_store.wanted(engine).live_version


def test_promote_exits_0_only_when_every_worker_runs_it_and_a_refusal_puts_live_back(engine, db_url, tmp_path,
                                                                                     workers, capsys):  # fmt: skip
    one, good, bad = (stored(engine, tmp_path, c) for c in (b"model one", b"model good", b"model bad"))
    model_store.assign(engine, "live", one, "me", "seed")
    workers += [Worker(engine, "w1", one), Worker(engine, "w2", one, refuse={bad: Refused("below_floor", "0.029")})]
    time.sleep(0.5)
    settings = settings_for(db_url)
    assert models.promote(settings, good, offline=False, wait=10) == 0
    assert live_of(engine) == good
    assert "2 of 2 workers run" in capsys.readouterr().out
    assert models.promote(settings, bad, offline=False, wait=10) == 1
    err = capsys.readouterr().err
    assert f"1 of 2 workers run {bad}" in err and f"refused {bad} as live: below_floor: 0.029" in err
    assert f"live is back to {good}" in err
    assert live_of(engine) == good  # the store says what the workers run
    time.sleep(1)
    assert {w.switch.live.version for w in workers} == {good}
    assert workers[1].loads.count(bad) == 1  # refused once: not retried by the timer until the store changes
    history = model_store.history(engine)
    assert [(a.action, a.previous, a.version) for a in history[:2]] == [("revert", bad, good), ("promote", good, bad)]


def test_a_killed_worker_makes_promote_fail_and_says_it_stopped_reporting(engine, db_url, tmp_path, workers, capsys):
    one, two = stored(engine, tmp_path, b"model one"), stored(engine, tmp_path, b"model two")
    model_store.assign(engine, "live", one, "me", "seed")
    workers += [Worker(engine, "alive", one), Worker(engine, "killed", one)]
    time.sleep(0.5)
    workers[1].stop()  # its heartbeat stops, as a kill -9 stops it
    settings = settings_for(db_url).model_copy(update={"model_poll_interval": 0.2})
    code = models.promote(settings, two, offline=False, wait=15)
    err = capsys.readouterr().err
    assert code == 1 and "stopped reporting" in err, err
    assert live_of(engine) == one


def test_a_worker_that_loads_slowly_is_loading_not_gone_and_keeps_its_heartbeat(engine, db_url, tmp_path, workers,
                                                                                capsys):  # fmt: skip
    one, two = stored(engine, tmp_path, b"model one"), stored(engine, tmp_path, b"model two")
    model_store.assign(engine, "live", one, "me", "seed")
    hold = threading.Event()
    workers.append(Worker(engine, "slow", one, hold=hold))
    time.sleep(0.5)
    settings = settings_for(db_url)
    code = models.promote(settings, two, offline=False, wait=3)  # the load takes longer than the wait
    err = capsys.readouterr().err
    assert code == 1 and f"loading {two} since " in err and "stopped reporting" not in err, err
    hold.set()
    assert workers[0].loads == [two]  # one load, however many polls came while it ran


def test_promoting_the_shadow_clears_it(engine, db_url, tmp_path, workers, capsys):
    one, two = stored(engine, tmp_path, b"model one"), stored(engine, tmp_path, b"model two")
    model_store.assign(engine, "live", one, "me", "seed")
    workers.append(Worker(engine, "w", one))
    time.sleep(0.5)
    settings = settings_for(db_url)
    assert models.shadow(settings, two, wait=10) == 0
    assert models.promote(settings, two, offline=False, wait=10) == 0
    wanted = model_store.wanted(engine)
    assert (wanted.live_version, wanted.shadow_version) == (two, None)
    time.sleep(0.6)
    assert workers[0].switch.shadow is None and workers[0].switch.live.version == two


def test_a_worker_that_cannot_serve_the_live_version_says_so_in_readiness_and_metrics(engine, tmp_path, workers):
    one, bad = stored(engine, tmp_path, b"model one"), stored(engine, tmp_path, b"model bad")
    model_store.assign(engine, "live", one, "me", "seed")
    model_store.assign(engine, "live", bad, "me", "promote --offline")
    worker = Worker(engine, "new", one, refuse={bad: Refused("mismatch", "differs by 0.78")})
    workers.append(worker)

    def says_so() -> bool:
        return any(f"not the store's live version {bad}" in r and "mismatch" in r for r in worker.health.reasons())

    # its watcher reads the store every few tenths of a second: 0.8 s was too short on a loaded machine
    assert wait_until(says_so, 15, 0.1), worker.health.reasons()
    assert REGISTRY.get_sample_value("sentiment_model_live_mismatch") == 1


def test_concurrent_assignments_leave_a_history_where_each_row_replaced_the_one_before(engine, tmp_path):
    versions = [stored(engine, tmp_path, f"model {i}".encode()) for i in range(4)]
    model_store.assign(engine, "live", versions[0], "me", "seed")
    threads = [threading.Thread(target=model_store.assign, args=(engine, "live", v, "me", "promote"))
               for v in versions[1:] * 3]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(reversed(model_store.history(engine, 100)))
    assert all(row.previous == before.version for before, row in zip(rows, rows[1:]))


def test_a_version_series_leave_when_it_does():
    metrics.SHADOW_AGREEMENT.labels(version="gone").set(0.9)
    metrics.MODEL_SCORE.labels(role="shadow", version="gone").observe(0.4)
    metrics.ACCURACY.labels("gone", "shadow").set(0.8)
    switch = ModelSwitch(loaded("a"), BatchScorer(FakeScorer("a"), max_text_chars=100, max_message_bytes=1000))
    switch.offer("shadow", loaded("gone"))
    switch.apply()
    switch.offer("shadow", None)
    switch.apply()
    body = _exposition()
    assert 'version="gone"' not in body
    assert 'version="a"' not in body or "sentiment_model_info" in body


def _exposition() -> str:
    from prometheus_client import generate_latest

    return "\n".join(line for line in generate_latest(REGISTRY).decode().splitlines()
                     if not line.startswith("sentiment_model_swap_failures"))  # fmt: skip


# --- add: what goes into the store ---------------------------------------------------------------------------------


def keras_like(folder: Path, payload: bytes = b"weights") -> Path:
    """A folder whose model.keras is a zip archive (what add checks before loading it), with a bound metrics.json."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "model.keras", "w") as z:
        z.writestr("model.weights.h5", payload)
    digest = model_store.sha256_of((folder / "model.keras").read_bytes())
    (folder / "metrics.json").write_text(json.dumps({"model_sha256": digest, "model_version": digest[:12]}))
    return folder


def add_cli(capsys, db_url: str, *args: str) -> tuple[int, list[str]]:
    from sentiment.cli import main

    os.environ["SENTIMENT_DATABASE_URL"] = db_url
    code = main(["model", "add", *args])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.fixture()
def env_db(db_url, monkeypatch):
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", db_url)
    return db_url


def test_add_refuses_a_symlink_naming_it_and_stores_nothing(engine, env_db, tmp_path, capsys):
    folder = keras_like(tmp_path / "run")
    (folder / "reference_scores.json").symlink_to("/proc/self/environ")
    code, lines = add_cli(capsys, env_db, str(folder))
    assert code == 2 and len(lines) <= 2 and "reference_scores.json is a symlink" in lines[0], lines
    assert counts(engine) == (0, 0)


def test_add_refuses_metrics_of_another_model(engine, env_db, tmp_path, capsys):
    folder = keras_like(tmp_path / "run")
    other = keras_like(tmp_path / "other", b"other weights")
    (folder / "metrics.json").write_bytes((other / "metrics.json").read_bytes())
    code, lines = add_cli(capsys, env_db, str(folder))
    assert code == 2 and "metrics.json belongs to another model" in lines[0] and "--without-metrics" in lines[-1]
    (folder / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.99}}))  # names no model
    code, lines = add_cli(capsys, env_db, str(folder))
    assert code == 2 and "does not say which model it measured" in lines[0], lines
    assert counts(engine) == (0, 0)


def test_add_refuses_a_folder_over_the_size_cap_before_reading_it(engine, env_db, tmp_path, capsys, monkeypatch):
    folder = keras_like(tmp_path / "run")
    with open(folder / "reference_inputs.json", "wb") as fh:  # sparse: large, never read
        fh.truncate(300 * 1024 * 1024)
    code, lines = add_cli(capsys, env_db, str(folder))
    assert code == 2 and "more than a trained model reaches (SENTIMENT_MODEL_MAX_BYTES" in lines[0], lines
    assert counts(engine) == (0, 0)


def test_only_the_files_of_a_training_run_are_packed(tmp_path):
    folder = keras_like(tmp_path / "run")
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub").mkdir()
    files = model_store.artifact_files(folder, 1 << 20)
    assert sorted(p.name for p in files) == ["metrics.json", "model.keras"]


# --- tables a worker does not trust --------------------------------------------------------------------------------


def test_a_table_edited_in_one_row_is_found(tmp_path):
    built = tmp_path / "built.npz"
    embedding = np.arange(5000 * 8, dtype=np.float32).reshape(5000, 8)
    np.savez(built, embedding=embedding, shape=np.array([1, 2, 3]), lower_kept=np.array("ß"))
    assert tables_difference(built, built.read_bytes()) is None
    tampered = embedding.copy()
    tampered[4321, 3] += 1.0  # a row no check text touches
    buffer = io.BytesIO()
    np.savez(buffer, embedding=tampered, shape=np.array([1, 2, 3]), lower_kept=np.array("ß"))
    assert tables_difference(built, buffer.getvalue()) == "1 of 5000 rows of embedding"
    assert "cannot be read" in tables_difference(built, b"junk")


def big_version(engine, tmp_path: Path) -> str:
    """A stored version of 8 kB of noise (its blob cannot be compressed below the 1 kB cap used here)."""
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "model.keras").write_bytes(os.urandom(8192))
    version = model_store.sha256_of((folder / "model.keras").read_bytes())[:12]
    blob = model_store.pack(model_store.artifact_files(folder, 1 << 20))
    model_store.add_version(engine, version, blob, {"canary": {"accuracy": 1.0}}, {}, "attacker")
    return version


def test_a_stored_version_over_the_cap_is_refused_before_its_bytes_are_read(engine, tmp_path, monkeypatch):
    from stream.lifecycle import model_gate

    version = big_version(engine, tmp_path)
    read = []
    monkeypatch.setattr(model_gate, "fetch", lambda *a: read.append(a))
    with pytest.raises(Refused, match="too_large"):
        model_gate.load_checked(engine, version, Settings(cache_dir=tmp_path / "cache", model_max_bytes=1024))
    assert read == []


def test_a_refused_version_leaves_nothing_in_the_cache(engine, tmp_path):
    from stream.lifecycle.model_gate import load_checked

    version = big_version(engine, tmp_path)  # noise: its model.keras is no model
    cache = tmp_path / "cache"
    with pytest.raises(Refused):
        load_checked(engine, version, Settings(cache_dir=cache))
    assert not (cache / "models" / version).exists()


def test_promoting_the_live_version_changes_nothing_and_an_unknown_one_is_refused(engine, db_url, tmp_path):
    one = stored(engine, tmp_path, b"model one")
    model_store.assign(engine, "live", one, "me", "seed")
    outcome = model_lifecycle.promote(engine, settings_for(db_url), one, wait=1, offline=True)
    assert outcome.already and outcome.exit_code == 0
    with pytest.raises(UserError, match="no version"):
        model_lifecycle.promote(engine, settings_for(db_url), "feedbeef", wait=1, offline=True)


CHECK_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from core.settings import Settings
from stream.sql.db import make_engine, upgrade
from stream.lifecycle.model_gate import Refused, load_checked
from tests.test_model_lifecycle import big_version
tmp = Path(sys.argv[1])
upgrade(f"sqlite:///{tmp / 'store.db'}")
engine = make_engine(f"sqlite:///{tmp / 'store.db'}")
version = big_version(engine, tmp)
try:
    load_checked(engine, version, Settings(cache_dir=tmp / "cache"))
except Refused as exc:
    print("REFUSED", exc.reason, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


@pytest.mark.integration  # its child process imports TensorFlow (a minute or more on a busy machine)
def test_a_worker_refuses_a_version_the_compiled_path_cannot_serve_without_importing_tensorflow(tmp_path):
    """The check that made a worker hold TensorFlow (RSS 296 -> 830 MB): the tables are built in a child; when it
    fails, the version is refused (scoring_path), and this process never imported TensorFlow."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CHECK_IN_A_FRESH_PROCESS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.stdout.split() == ["REFUSED", "scoring_path", "False", "False"], done.stdout + done.stderr[-2000:]
