"""A model version on its way into the store, and out of it into a worker, checked at both ends.

Into the store (``sentiment model add``, with TensorFlow): the folder is a model, its Keras model loads, the
compiled scorer's tables are built and checked against TensorFlow (``model.compiled.build``), and TensorFlow's scores
of the canary texts are written into the manifest.

Out of it (the worker, without TensorFlow when the tables are in the store): the blob has the stored hash, its
``model.keras`` has the version's hash, the scorer loads on the scoring path the settings ask for, it scores the
canary texts as TensorFlow did at ``add`` (within ``MATCH_TOLERANCE``), and its accuracy on the labelled canary
reviews is at least ``SENTIMENT_CANARY_MIN_ACCURACY``. Anything else is a :class:`Refused` with a short reason
(the label of ``sentiment_model_swap_failures_total``).

The canary set is the project's own labelled sample reviews (``model/sample_reviews.jsonl``, 34 reviews) plus the
hostile texts the compiled scorer is checked on (``model.samples``), which have no label.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from core.errors import UserError
from core.messages import first_line
from core.settings import Settings
from model.samples import SAMPLE_REVIEWS, hostile_texts
from model.scorer import MODEL_FILE, ModelArtifact, Scorer, load_configured_scorer
from stream.lifecycle.model_store import (
    CorruptVersion,
    artifact_files,
    fetch,
    fetch_table,
    pack,
    read_own_file,
    sha256_of,
    stored_size,
    table_hashes,
    unpack,
)

MATCH_TOLERANCE = 1e-5  # the compiled scorer's promise against TensorFlow (README, Performance)


def canary() -> tuple[list[str], np.ndarray]:
    """The canary texts (labelled sample reviews first, then the hostile texts) and the sample reviews' labels."""
    rows = [json.loads(line) for line in SAMPLE_REVIEWS.read_text().splitlines() if line.strip()]
    labelled = [r for r in rows if r.get("label") in (0, 1)]
    return [r["text"] for r in labelled] + hostile_texts(), np.array([r["label"] for r in labelled], dtype=np.int8)


def canary_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((scores[: len(labels)] >= 0.5).astype(np.int8) == labels)) if len(labels) else 1.0


# --- into the store -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    version: str
    content: bytes
    manifest: dict
    tables: dict[str, bytes]


def prepare(
    folder: Path, settings: Settings, *, allow_tensorflow: bool = False, without_metrics: bool = False
) -> Prepared:
    """A run folder made ready for the store, checked as a worker will check it: its files (:func:`artifact_files`),
    its metrics (they must be this model's), loaded with TensorFlow, its compiled tables built and checked (kept in
    the cache too), its canary scores taken, and :func:`check` passed. Raises :class:`UserError` (exit 2) for a
    folder that is not a working model or a version workers would refuse; ``allow_tensorflow`` accepts one that only
    TensorFlow scores exactly (workers then score it with TensorFlow), ``without_metrics`` one whose metrics.json is
    not bound to its model (it is left out)."""
    files = artifact_files(folder, settings.model_max_bytes)
    model_file = folder / MODEL_FILE
    if not zipfile.is_zipfile(model_file):
        raise UserError(f"{model_file} is not a Keras model (not a .keras archive)", None, 2)
    model_sha256 = sha256_of(read_own_file(model_file))
    version = model_sha256[:12]
    metrics = _own_metrics(folder, model_sha256, without_metrics)
    if metrics is None:
        files = [f for f in files if f.name != "metrics.json"]
    scorer, scores, why_not_compiled = _load_for_add(folder, settings.cache_dir)
    tables = _checked_tables(scorer, version, settings.cache_dir)
    manifest = _manifest(folder, files, model_sha256, metrics or {}, scores, tables)
    manifest["scoring"] = scorer.scoring
    _gate_at_add(scorer, manifest, settings, why_not_compiled, allow_tensorflow)
    return Prepared(version, pack(files), manifest, tables)


def _own_metrics(folder: Path, model_sha256: str, without_metrics: bool) -> dict | None:
    """The run's metrics when they are this model's: ``metrics.json`` names the model's SHA-256 (written at
    training) or its version. None with ``without_metrics`` (the file is left out)."""
    if without_metrics:
        return None
    path = folder / "metrics.json"
    if not path.is_file():
        raise UserError(f"{folder} has no metrics.json", "add --without-metrics to store the model without metrics", 2)
    try:
        metrics = json.loads(read_own_file(path))
    except ValueError as exc:
        raise UserError(f"{path} is not JSON: {exc}", "add --without-metrics to leave it out", 2) from exc
    bound = metrics.get("model_sha256") or metrics.get("model_version")
    if not isinstance(bound, str) or not bound:
        raise UserError(
            f"{path} does not say which model it measured (no model_sha256): its accuracy cannot be shown as this "
            "model's",
            "add --without-metrics to store the model without its metrics",
            2,
        )
    if not model_sha256.startswith(bound):
        raise UserError(
            f"{path} belongs to another model ({bound[:12]}), not to its {MODEL_FILE} ({model_sha256[:12]})",
            "copy the run folder whole, or add --without-metrics to store the model without its metrics",
            2,
        )
    return metrics


def _load_for_add(folder: Path, cache_dir: Path):
    """The model loaded with TensorFlow, its compiled tables built and checked against it (their warning caught:
    why compiled scoring is off, if it is), and TensorFlow's scores of the canary texts."""
    from model.scorer import load_scorer

    caught = _WarningsOf("sentiment.model")
    try:
        with caught:
            scorer = load_scorer(folder, scoring="compiled", cache_dir=cache_dir)
        scores = scorer.inspect_tensorflow(canary()[0]).scores
    except Exception as exc:  # noqa: BLE001 - whatever Keras says about a file it cannot load
        raise UserError(f"{folder / MODEL_FILE} does not load as a model: {first_line(exc)}", None, 2) from exc
    return scorer, scores, caught.last()


def _checked_tables(scorer: Scorer, version: str, cache_dir: Path) -> dict[str, bytes]:
    from model.compiled.cache import cache_path

    table_file = cache_path(version, cache_dir)
    if scorer.scoring != "compiled" or not table_file.exists():
        return {}
    data = table_file.read_bytes()
    compared_marker(table_file, sha256_of(data)).touch()  # stored from these very tables
    return {table_file.name: data}


def _manifest(folder, files, model_sha256, metrics, scores, tables) -> dict:
    texts, labels = canary()
    model_file = folder / MODEL_FILE
    return {
        "version": model_sha256[:12],
        "model_sha256": model_sha256,
        "created": datetime.fromtimestamp(model_file.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        "source": str(folder.resolve()),
        "config": metrics.get("config"),
        "validation": _headline(metrics.get("validation")),
        "test": _headline(metrics.get("test")),
        "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_of(read_own_file(p))} for p in files],
        "canary": {
            "scores": [round(float(s), 7) for s in scores],
            "accuracy": canary_accuracy(scores, labels),
            "reviews": int(len(labels)),
            "scored_by": "tensorflow",
        },
        "compiled_tables": sorted(tables),
    }


def _gate_at_add(scorer: Scorer, manifest: dict, settings: Settings, why: str | None, allow_tensorflow: bool) -> None:
    """What a worker would refuse, refused here: exit 2, one line."""
    if scorer.scoring != "compiled" and not allow_tensorflow:
        raise UserError(
            f"workers would refuse it (scoring_path): {why or 'compiled scoring cannot serve it'}",
            "add --allow-tensorflow to have workers score it with TensorFlow (slower, about 530 MB more per worker)",
            2,
        )
    served = settings.model_copy(update={"scoring": scorer.scoring})
    try:
        check(scorer, manifest, served)
    except Refused as exc:
        raise UserError(f"workers would refuse it ({exc.reason}): {exc.detail}", None, 2) from exc


class _WarningsOf(logging.Handler):
    """The warnings a logger gives while in the ``with`` block (the compiled build says why it is off in one)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)

    def last(self) -> str | None:
        return self.messages[-1] if self.messages else None


def _headline(split: dict | None) -> dict | None:
    if not split:
        return None
    return {k: split[k] for k in ("examples", "accuracy", "precision", "recall", "f1", "roc_auc") if k in split}


# --- out of the store, into a worker ------------------------------------------------------------------------------


class Refused(Exception):
    """A version a worker will not run: ``reason`` is a short code (a metric label), ``detail`` says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class LoadedModel:
    """A version loaded and checked by this worker."""

    artifact: ModelArtifact
    scorer: Scorer

    @property
    def version(self) -> str:
        return self.scorer.version


def load_checked(engine: Engine, version: str, settings: Settings) -> LoadedModel:
    """Fetch, unpack, load and check a stored version; :class:`Refused` when anything is wrong. The compiled tables
    are built from the version's weights in a child process (TensorFlow never enters this one) and every array of
    the stored tables is compared with them; a refused version leaves nothing in the cache."""
    folder = settings.cache_dir / "models" / version
    try:
        manifest = _fetch_unpacked(engine, version, settings)
        scorer = _load_scorer(engine, version, manifest, settings)
        check(scorer, manifest, _served(settings, manifest))
    except Refused:
        _forget(version, settings.cache_dir)
        raise
    return LoadedModel(ModelArtifact.at(folder), scorer)


def _served(settings: Settings, manifest: dict) -> Settings:
    """The settings a version is checked with: TensorFlow scoring for a version added with --allow-tensorflow."""
    if manifest.get("scoring") == "tensorflow":
        return settings.model_copy(update={"scoring": "tensorflow"})
    return settings


def _fetch_unpacked(engine: Engine, version: str, settings: Settings) -> dict:
    """The version's files in ``CACHE_DIR/models/VERSION/`` and its manifest; its size is checked before its bytes
    are read."""
    size = stored_size(engine, version)
    if size is None:
        raise Refused("missing", f"version {version} is not in the model store")
    if size > settings.model_max_bytes:
        raise Refused(
            "too_large", f"it holds {size:,} bytes, more than SENTIMENT_MODEL_MAX_BYTES {settings.model_max_bytes:,}"
        )
    fetched = fetch(engine, version)
    if fetched is None:
        raise Refused("missing", f"version {version} is not in the model store")
    manifest = fetched.manifest
    try:
        unpack(fetched.content, fetched.sha256, version, settings.cache_dir / "models")
    except CorruptVersion as exc:
        raise Refused("corrupt", str(exc)) from exc
    finally:
        del fetched  # the blob's memory goes before the model's comes (the peak of a swap)
    return manifest


def _load_scorer(engine: Engine, version: str, manifest: dict, settings: Settings) -> Scorer:
    from model.scorer import build_tables_in_child, load_scorer

    served = _served(settings, manifest)
    artifact = ModelArtifact.at(settings.cache_dir / "models" / version)
    if served.scoring == "compiled":
        why = build_tables_in_child(artifact, settings.cache_dir)
        if why is not None:
            raise Refused(
                "scoring_path", f"compiled scoring cannot serve it ({why}) and it was not added for TensorFlow"
            )
        _compare_stored_tables(engine, version, settings.cache_dir)
    try:
        if served.scoring == "compiled":
            return _compiled_scorer(artifact, settings)
        return load_scorer(artifact, scoring="tensorflow", cache_dir=settings.cache_dir)
    except Refused:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that does not load is refused, whatever the error
        raise Refused("load_failed", first_line(exc)) from exc


def _compiled_scorer(artifact: ModelArtifact, settings: Settings) -> Scorer:
    """The compiled scorer from the cached tables, never TensorFlow's (it would stay in the worker's memory)."""
    from model.compiled.cache import load_cached

    fast = load_cached(artifact.version, settings.cache_dir)
    if fast is None:
        raise Refused("scoring_path", "its compiled tables are not in the cache (removed while it loaded)")
    if settings.scoring_threads:
        fast.threads = settings.scoring_threads
    return Scorer(None, artifact.version, fast=fast, model_file=artifact.model_file)


def _forget(version: str, cache_dir: Path) -> None:
    """A refused version's files leave the cache (its compiled tables, built here from its weights, stay: another
    worker on this host may be loading them)."""
    import shutil

    shutil.rmtree(cache_dir / "models" / version, ignore_errors=True)


def load_configured(settings: Settings) -> LoadedModel:
    """The configured artifact (``SENTIMENT_MODEL``), as the worker loads it when the store has no live version."""
    artifact = ModelArtifact.at(settings.model)
    return LoadedModel(artifact, load_configured_scorer(artifact, settings))


def check(scorer: Scorer, manifest: dict, settings: Settings) -> None:
    """The gate: the scoring path asked for, TensorFlow's canary scores, the accuracy floor."""
    if scorer.scoring != settings.scoring:
        raise Refused("scoring_path", f"it scores with {scorer.scoring}, not {settings.scoring} (SENTIMENT_SCORING)")
    texts, labels = canary()
    scores = scorer.score(texts)
    expected = (manifest.get("canary") or {}).get("scores")
    if expected is not None:
        if len(expected) != len(scores):
            raise Refused("mismatch", "its manifest's canary scores are for other texts")
        worst = float(np.max(np.abs(np.asarray(expected, dtype=np.float64) - scores))) if len(scores) else 0.0
        if worst > MATCH_TOLERANCE:
            raise Refused("mismatch", f"its scores differ from TensorFlow's by up to {worst:.2g} on the canary texts")
    accuracy = canary_accuracy(scores, labels)
    if accuracy < settings.canary_min_accuracy:
        raise Refused(
            "below_floor",
            f"canary accuracy {accuracy:.3f} on {len(labels)} labelled reviews is below "
            f"SENTIMENT_CANARY_MIN_ACCURACY {settings.canary_min_accuracy}",
        )


def _compare_stored_tables(engine: Engine, version: str, cache_dir: Path) -> None:
    """The compiled tables stored with the version, compared array by array, row by row, with the ones this worker
    built from the version's weights: stored tables are never used, but tables that differ mean the store was
    written to by something other than ``sentiment model add``. In a child process: the stored tables (50 MB for the
    default model, twice that on the wire) never enter the worker's memory."""
    import subprocess
    import sys

    from model.compiled.cache import cache_path

    built = cache_path(version, cache_dir)
    recorded = table_hashes(engine, version).get(built.name)
    if recorded is None:
        return  # built for another TensorFlow or code version, or none stored: nothing to compare
    if compared_marker(built, recorded).exists():
        return  # these very bytes were compared with these tables on this host (or stored from them by add)
    job = {"url": engine.url.render_as_string(hide_password=False), "version": version,
           "built": str(cache_path(version, cache_dir))}  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-m", "stream.lifecycle.model_gate"], input=json.dumps(job), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Refused("load_failed", f"its stored tables could not be compared: {exc}") from exc
    said = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode == 0:
        compared_marker(built, recorded).touch()
        return
    if done.returncode in (3, 4):
        raise Refused("tampered" if done.returncode == 3 else "corrupt", said)
    why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise Refused("load_failed", f"its stored tables could not be compared: {why}")


def compared_marker(built: Path, sha256: str) -> Path:
    """The file that says: stored tables with this SHA-256 are the tables ``built`` from the weights here."""
    return built.with_name(f"{built.name}.stored-{sha256[:16]}.same")


def compare_in_child(job: dict) -> int:
    """``python -m stream.lifecycle.model_gate`` (a job as JSON on stdin): 0 when the stored tables are the built ones (or
    none of that name is stored), 3 when they differ, 4 when their bytes do not have their stored hash; the reason
    on stdout."""
    from stream.sql.db import make_engine

    built = Path(job["built"])
    engine = make_engine(job["url"])
    try:
        stored = fetch_table(engine, job["version"], built.name)
    finally:
        engine.dispose()
    if stored is None:
        return 0
    sha256, data = stored
    if sha256_of(data) != sha256:
        print(f"its stored compiled tables {built.name} do not have the stored hash")
        return 4
    difference = tables_difference(built, data)
    if difference is None:
        return 0
    print(f"its stored compiled tables differ from those built from its weights: {difference}")
    return 3


def tables_difference(built: Path, stored: bytes) -> str | None:
    """Where two table files differ (the first array and how many of its rows), or None when every array is
    equal."""
    try:
        theirs = np.load(io.BytesIO(stored))
    except Exception as exc:  # noqa: BLE001 - whatever numpy says of bytes that are no .npz
        return f"they cannot be read ({first_line(exc)})"
    with np.load(built) as ours, theirs:
        if sorted(ours.files) != sorted(theirs.files):
            return f"arrays {sorted(set(ours.files) ^ set(theirs.files))} are in one and not the other"
        for name in sorted(ours.files):
            a, b = ours[name], theirs[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                return f"{name} is {b.dtype}{list(b.shape)}, built {a.dtype}{list(a.shape)}"
            if not np.array_equal(a, b):
                rows = int(np.count_nonzero((a != b).reshape(len(a), -1).any(axis=1))) if a.ndim else 1
                return f"{rows} of {max(len(a), 1) if a.ndim else 1} rows of {name}"
    return None


@dataclass
class Start:
    """What a worker starts with: the live model, the live assignment it followed (None: none set), the refusal of
    the store's live version (then the configured model is live, and readiness says so), and the shadow set before
    start (loaded before the first batch) with its assignment."""

    live: LoadedModel
    live_assignment: int | None = None
    refused: str | None = None
    shadow: LoadedModel | None = None
    shadow_assignment: int | None = None


def starting_model(engine: Engine, settings: Settings) -> Start:
    """The models a worker starts with: the store's live version when one is set and passes its check, else the
    configured artifact; and the store's shadow version, when one is set and passes."""
    from stream.lifecycle.model_store import wanted

    store = wanted(engine)
    start = Start(load_configured(settings) if store.live is None else None)
    if store.live is not None:
        start.live_assignment = store.live.id
        try:
            start.live = load_checked(engine, store.live.version, settings)
        except Refused as exc:
            start.refused = _refused_at_start(store.live.version, "live", exc, settings)
            start.live = load_configured(settings)
    if store.shadow is not None and store.shadow.version is not None:
        start.shadow_assignment = store.shadow.id
        try:
            start.shadow = load_checked(engine, store.shadow.version, settings)
        except Refused as exc:
            start.refused = _refused_at_start(store.shadow.version, "shadow", exc, settings)
    return start


def _refused_at_start(version: str, role: str, exc: Refused, settings: Settings) -> str:
    from stream.observe import metrics
    from stream.observe.health import health

    metrics.MODEL_SWAP_FAILURES.labels(version=version, reason=exc.reason).inc()
    kept = settings.model if role == "live" else "no shadow"
    logging.getLogger("sentiment.worker").warning(
        "refused the store's %s model %s (%s): %s; starting with %s", role, version, exc.reason, exc.detail, kept
    )
    refusal = f"{version} as {role}: {exc.reason}: {exc.detail}"[:500]
    if role == "live":  # it does not serve the store's live version: not ready, and the metric says so
        health.update(model_error=f"refused the store's live version: {refusal}")
        metrics.MODEL_LIVE_MISMATCH.set(1)
    return refusal


if __name__ == "__main__":
    import sys

    sys.exit(compare_in_child(json.loads(sys.stdin.read())))
