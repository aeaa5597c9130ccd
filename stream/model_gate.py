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

import json
import os
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
from model.scorer import MODEL_FILE, ModelArtifact, Scorer, load_configured_scorer, model_version
from stream.model_store import CorruptVersion, artifact_files, fetch, fetch_table, pack, sha256_of, unpack

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


def prepare(folder: Path, cache_dir: Path) -> Prepared:
    """A run folder made ready for the store: packed, described, loaded with TensorFlow, its compiled tables built
    and checked (kept in ``cache_dir`` too), its canary scores taken. Raises :class:`UserError` for a folder that is
    not a working model."""
    from model.compiled.cache import cache_path
    from model.scorer import load_scorer

    files = artifact_files(folder)
    model_file = folder / MODEL_FILE
    if not zipfile.is_zipfile(model_file):
        raise UserError(f"{model_file} is not a Keras model (not a .keras archive)", None, 2)
    version = model_version(model_file)
    try:
        scorer = load_scorer(folder, scoring="compiled", cache_dir=cache_dir)
        texts, labels = canary()
        scores = scorer.inspect_tensorflow(texts).scores
    except Exception as exc:  # noqa: BLE001 - whatever Keras says about a file it cannot load
        raise UserError(f"{model_file} does not load as a model: {first_line(exc)}", None, 2) from exc
    table_file = cache_path(version, cache_dir)
    tables = {table_file.name: table_file.read_bytes()} if scorer.scoring == "compiled" and table_file.exists() else {}
    metrics = ModelArtifact.at(folder).metrics()
    manifest = {
        "version": version,
        "model_sha256": sha256_of(model_file.read_bytes()),
        "created": datetime.fromtimestamp(model_file.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        "source": str(folder.resolve()),
        "config": metrics.get("config"),
        "validation": _headline(metrics.get("validation")),
        "test": _headline(metrics.get("test")),
        "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_of(p.read_bytes())} for p in files],
        "canary": {
            "scores": [round(float(s), 7) for s in scores],
            "accuracy": canary_accuracy(scores, labels),
            "reviews": int(len(labels)),
            "scored_by": "tensorflow",
        },
        "compiled_tables": sorted(tables),
    }
    return Prepared(version, pack(files), manifest, tables)


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
    """Fetch, unpack, load and check a stored version; :class:`Refused` when anything is wrong."""
    fetched = fetch(engine, version)
    if fetched is None:
        raise Refused("missing", f"version {version} is not in the model store")
    manifest = fetched.manifest
    try:
        folder = unpack(fetched.content, fetched.sha256, version, settings.cache_dir / "models")
    except CorruptVersion as exc:
        raise Refused("corrupt", str(exc)) from exc
    finally:
        del fetched  # the blob's memory goes before the model's comes (the peak of a swap)
    _install_tables(engine, version, settings.cache_dir)
    try:
        scorer = load_configured_scorer(ModelArtifact.at(folder), settings)
    except Exception as exc:  # noqa: BLE001 - a model that does not load is refused, whatever the error
        raise Refused("load_failed", first_line(exc)) from exc
    check(scorer, manifest, settings)
    return LoadedModel(ModelArtifact.at(folder), scorer)


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


def _install_tables(engine: Engine, version: str, cache_dir: Path) -> None:
    """Put the stored compiled tables that this worker's code and TensorFlow would have built into its cache, when
    they are not there (tables built by another TensorFlow or code version are left: this worker builds its own)."""
    from model.compiled.cache import cache_path

    wanted = cache_path(version, cache_dir)
    if wanted.exists():
        return
    stored = fetch_table(engine, version, wanted.name)
    if stored is None:
        return
    sha256, data = stored
    if sha256_of(data) != sha256:
        raise Refused("corrupt", f"its compiled tables {wanted.name} do not have the stored hash")
    wanted.parent.mkdir(parents=True, exist_ok=True)
    partial = wanted.with_suffix(f".{os.getpid()}.tmp.npz")
    partial.write_bytes(data)
    os.replace(partial, wanted)


def starting_model(engine: Engine, settings: Settings) -> tuple[LoadedModel, int | None, str | None]:
    """The model a worker starts with: the store's live version when one is set and passes its check, else the
    configured artifact. Returns it, the id of the live assignment it followed (None: none set), and the refusal
    when the store's version was refused."""
    import logging

    from stream import metrics
    from stream.model_store import wanted

    live = wanted(engine).live
    if live is None:
        return load_configured(settings), None, None
    try:
        return load_checked(engine, live.version, settings), live.id, None
    except Refused as exc:
        metrics.MODEL_SWAP_FAILURES.labels(version=live.version, reason=exc.reason).inc()
        logging.getLogger("sentiment.worker").warning(
            "refused the store's live model %s (%s): %s; starting with %s", live.version, exc.reason, exc.detail,
            settings.model,
        )  # fmt: skip
        return load_configured(settings), live.id, f"{live.version} as live: {exc.reason}: {exc.detail}"[:500]
