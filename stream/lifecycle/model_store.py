"""The model store, in the database every worker already uses (no shared filesystem between hosts).

``model_versions``  one row per version, immutable: the artifact folder as one tar blob, its SHA-256, and a manifest
                    (version, hash, created, training config, validation and test metrics, files, canary scores).
                    A version is written in one transaction, so a half-written one is never visible.
``model_tables``    the compiled scorer's tables of a version, as checked against TensorFlow when it was added: a
                    worker that finds its own file name here does not build them (15 s) before it can swap.
``model_assignments`` append-only history of the two roles: ``live`` (the version the stream scores with) and
                    ``shadow`` (also scores every batch, results kept out of everything; NULL: off). The newest row
                    of a role is in effect; each row says what it replaced (``previous``), when and by whom.
``model_workers``   what each worker loaded, written by the worker every few seconds: how a promote knows who
                    follows it, and who refused what.

The version is ``model.scorer.model_version``: the first 12 hex digits of the SHA-256 of ``model.keras``, as in every
event and row (``model_version``).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from core.errors import UserError
from model.scorer import MODEL_FILE, model_version

ROLES = ("live", "shadow")

# The files a training run writes (training/pipeline.py): only these go into the store, never a symlink, never
# anything else the folder holds.
RUN_FILES = (
    MODEL_FILE,
    "metrics.json",
    "model_card.md",
    "reference_scores.json",
    "reference_inputs.json",
    "training_curves.png",
    "confusion_matrix.png",
)

metadata = MetaData()

model_versions = Table(
    "model_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(200), nullable=False),
)

model_tables = Table(
    "model_tables",
    metadata,
    Column("version", String(64), ForeignKey("model_versions.version"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

model_assignments = Table(
    "model_assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("role", String(16), nullable=False),
    Column("version", String(64), ForeignKey("model_versions.version"), nullable=True),
    Column("previous", String(64), nullable=True),
    Column("set_at", DateTime(timezone=True), nullable=False),
    Column("set_by", String(200), nullable=False),
    Column("action", String(16), nullable=False),  # promote | shadow | rollback
)

model_workers = Table(
    "model_workers",
    metadata,
    Column("worker", String(200), primary_key=True),
    Column("live", String(64), nullable=True),
    Column("shadow", String(64), nullable=True),
    Column("refused", String(500), nullable=True),
    Column("evidence", String(500), nullable=True),  # shadow against live on rated reviews, in words
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("loading", String(64), nullable=True),  # the version it is loading and checking now (migration 0006)
    Column("loading_since", DateTime(timezone=True), nullable=True),
    Column("refused_assignment", Integer, nullable=True),  # the assignment its last refusal answered
)


def who() -> str:
    """``user@host``, for the history."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def now() -> datetime:
    return datetime.now(UTC)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the artifact folder as one blob ------------------------------------------------------------------------------


def artifact_files(folder: Path, max_bytes: int) -> list[Path]:
    """The files of a run folder that go into the store: the known files of a training run (:data:`RUN_FILES`),
    regular files in the folder itself, none a symlink, at most ``max_bytes`` in all (measured before anything is
    read). Raises the :class:`UserError` that says why the folder is no model, naming the file."""
    hint = "give the folder of a training run (runs/NAME-VERSION/)"
    if not folder.exists():
        raise UserError(f"no folder at {folder}", hint, 2)
    if folder.is_symlink() or not folder.is_dir():
        raise UserError(f"{folder} is not a folder", hint, 2)
    if not any(folder.iterdir()):
        raise UserError(f"{folder} is empty", hint, 2)
    files = [folder / name for name in RUN_FILES if os.path.lexists(folder / name)]
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path} is a symlink or not a regular file: a run folder holds its own files", None, 2)
    if folder / MODEL_FILE not in files:
        raise UserError(
            f"{folder} is not a model: no {MODEL_FILE} in it",
            f"{hint}, which holds model.keras and metrics.json",
            2,
        )
    size = sum(p.lstat().st_size for p in files)
    if size > max_bytes:
        raise UserError(
            f"{folder} holds {size:,} bytes of model files: more than a trained model reaches "
            f"(SENTIMENT_MODEL_MAX_BYTES {max_bytes:,})",
            None,
            2,
        )
    return files


def read_own_file(path: Path) -> bytes:
    """A run folder's file, refusing one that became a symlink after it was listed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UserError(f"{path} cannot be read as a regular file: {exc.strerror}", None, 2) from exc
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def pack(files: list[Path]) -> bytes:
    """The files as one gzipped tar, the same bytes for the same files (sorted, no times, no owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path.name)
            data = read_own_file(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class CorruptVersion(Exception):
    """The stored bytes of a version are not what was added (hash, archive, or model file)."""


def unpack(content: bytes, sha256: str, version: str, root: Path) -> Path:
    """Write a version's files to ``root/VERSION/`` after checking its hash, through a temporary folder renamed into
    place, so that a reader never sees half a version. A folder already there is reused when its model file
    still has the version's hash."""
    if sha256_of(content) != sha256:
        raise CorruptVersion(f"content hash {sha256_of(content)[:12]} is not the stored {sha256[:12]}")
    target = root / version
    if (target / MODEL_FILE).is_file() and model_version(target / MODEL_FILE) == version:
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptVersion(f"archive cannot be read: {exc}") from exc
        found = staging / MODEL_FILE
        if not found.is_file() or model_version(found) != version:
            raise CorruptVersion(f"its {MODEL_FILE} does not have the version's hash")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- versions -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredVersion:
    version: str
    sha256: str
    size_bytes: int
    manifest: dict
    added_at: datetime
    added_by: str


def add_version(
    engine: Engine, version: str, content: bytes, manifest: dict, tables: dict[str, bytes], added_by: str
) -> bool:
    """Store a version, its files and its checked tables in one transaction. False when it is there already (a
    version is immutable: the same hash is the same model)."""
    with engine.begin() as conn:
        if conn.execute(select(model_versions.c.version).where(model_versions.c.version == version)).first():
            return False
        conn.execute(
            insert(model_versions).values(
                version=version,
                sha256=sha256_of(content),
                size_bytes=len(content),
                manifest=json.dumps(manifest, sort_keys=True),
                content=content,
                added_at=now(),
                added_by=added_by,
            )
        )
        for name, data in tables.items():
            conn.execute(insert(model_tables).values(version=version, name=name, sha256=sha256_of(data), content=data))
    return True


def versions(engine: Engine) -> list[StoredVersion]:
    """Every stored version, oldest first (without the blobs)."""
    columns = [c for c in model_versions.c if c.name != "content"]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(model_versions.c.added_at, model_versions.c.version)).all()
    return [
        StoredVersion(r.version, r.sha256, r.size_bytes, json.loads(r.manifest), r.added_at, r.added_by) for r in rows
    ]


def has_version(engine: Engine, version: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(model_versions.c.version).where(model_versions.c.version == version)).first()
            is not None
        )


MIN_PREFIX = 4  # hex digits of a version that name it on the command line (fewer would soon be ambiguous)


def resolve(engine: Engine, prefix: str) -> str:
    """The stored version that ``prefix`` names (a whole version, or its start when that is unambiguous)."""
    with engine.connect() as conn:
        found = conn.scalars(
            select(model_versions.c.version).where(model_versions.c.version.startswith(prefix, autoescape=True))
        ).all()
    if prefix in found:
        return prefix
    if found and len(prefix) < MIN_PREFIX:
        raise UserError(
            f"a version prefix needs at least {MIN_PREFIX} characters; {prefix!r} has {len(prefix)}",
            f"give at least {MIN_PREFIX} of the version's hex digits, e.g. {found[0][:MIN_PREFIX]!r} for {found[0]}",
            2,
        )
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no version {prefix!r} in the model store", "`sentiment model list` shows the versions", 1)
    raise UserError(f"{prefix!r} names {len(found)} versions: {', '.join(found)}", "give more of it", 1)


def stored_size(engine: Engine, version: str) -> int | None:
    """The stored size of a version's blob (None: no such version), read before the blob itself."""
    with engine.connect() as conn:
        return conn.scalar(select(model_versions.c.size_bytes).where(model_versions.c.version == version))


def table_hashes(engine: Engine, version: str) -> dict[str, str]:
    """The stored tables of a version: name -> recorded SHA-256 (without their bytes)."""
    with engine.connect() as conn:
        rows = conn.execute(select(model_tables.c.name, model_tables.c.sha256).where(model_tables.c.version == version))
        return {r.name: r.sha256 for r in rows}


@dataclass(frozen=True)
class Fetched:
    version: str
    sha256: str
    content: bytes
    manifest: dict


def fetch(engine: Engine, version: str) -> Fetched | None:
    """A version's blob and manifest (not its tables: :func:`fetch_table` reads the one a worker needs)."""
    columns = (model_versions.c.version, model_versions.c.sha256, model_versions.c.content, model_versions.c.manifest)
    with engine.connect() as conn:
        # closed after the read, not returned to the pool: libpq keeps its input buffer as large as the largest
        # message the connection read (a blob arrives as hex text, twice its size) until the connection closes, and
        # each pooled connection that had read a blob kept ~40 MB resident in the worker
        conn.detach()
        row = conn.execute(select(*columns).where(model_versions.c.version == version)).first()
    if row is None:
        return None
    return Fetched(row.version, row.sha256, bytes(row.content), json.loads(row.manifest))


def fetch_table(engine: Engine, version: str, name: str) -> tuple[str, bytes] | None:
    """(sha256, bytes) of one stored table file of a version, or None when there is none of that name."""
    with engine.connect() as conn:
        conn.detach()  # closed after the read, not pooled (as in fetch: libpq's input buffer stays blob-sized)
        row = conn.execute(
            select(model_tables.c.sha256, model_tables.c.content).where(
                model_tables.c.version == version, model_tables.c.name == name
            )
        ).first()
    return None if row is None else (row.sha256, bytes(row.content))


# --- roles --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    id: int
    role: str
    version: str | None
    previous: str | None
    set_at: datetime
    set_by: str
    action: str


@dataclass(frozen=True)
class Wanted:
    """What the store says the workers should run: the newest assignment of each role (None: never set)."""

    live: Assignment | None
    shadow: Assignment | None

    @property
    def live_version(self) -> str | None:
        return self.live.version if self.live else None

    @property
    def shadow_version(self) -> str | None:
        return self.shadow.version if self.shadow else None


def _assignment(row) -> Assignment:
    return Assignment(row.id, row.role, row.version, row.previous, row.set_at, row.set_by, row.action)


def wanted(engine: Engine) -> Wanted:
    """The newest assignment of each role: one short query, run by every worker every few seconds."""
    newest = select(model_assignments.c.role, func.max(model_assignments.c.id).label("id")).group_by(
        model_assignments.c.role
    )
    newest = newest.subquery()
    with engine.connect() as conn:
        rows = conn.execute(select(model_assignments).join(newest, model_assignments.c.id == newest.c.id)).all()
    found = {row.role: _assignment(row) for row in rows}
    return Wanted(found.get("live"), found.get("shadow"))


def history(engine: Engine, limit: int = 20) -> list[Assignment]:
    """The newest assignments first."""
    with engine.connect() as conn:
        rows = conn.execute(select(model_assignments).order_by(model_assignments.c.id.desc()).limit(limit)).all()
    return [_assignment(r) for r in rows]


def assign(engine: Engine, role: str, version: str | None, set_by: str, action: str) -> Assignment:
    """Append an assignment of ``role`` (None turns the shadow off), recording what it replaces."""
    return assign_roles(engine, {role: version}, set_by, action)[0]


def assign_roles(
    engine: Engine, changes: dict[str, str | None], set_by: str, action: str, only_if_newest: dict | None = None
) -> list[Assignment]:
    """Append the assignments of ``changes`` (role -> version; None turns the shadow off) in one transaction, each
    recording what it replaces; with ``only_if_newest`` (role -> assignment id), nothing unless those are still
    the newest of their roles (a revert does not undo what someone assigned since). Serialized: two commands assigning at once each see the other's row (PostgreSQL: a
    transaction-level advisory lock; SQLite serializes writers), so ``previous`` is always the role's version
    before it and ``rollback`` goes where the history says."""
    for role, version in changes.items():
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if role == "live" and version is None:
            raise ValueError("the live role always has a version")
    with _SQLITE_ASSIGNMENTS if engine.dialect.name == "sqlite" else contextlib.nullcontext():
        return _assign_locked(engine, changes, set_by, action, only_if_newest)


def _assign_locked(engine: Engine, changes, set_by: str, action: str, only_if_newest) -> list[Assignment]:
    done = []
    with engine.begin() as conn:
        _lock_assignments(conn)
        if only_if_newest and any(_newest_id(conn, role) != id_ for role, id_ in only_if_newest.items()):
            return []
        for role, version in changes.items():
            if version is not None and not _has(conn, version):
                raise UserError(
                    f"no version {version!r} in the model store", "`sentiment model list` shows the versions"
                )
            current = conn.execute(
                select(model_assignments.c.version)
                .where(model_assignments.c.role == role)
                .order_by(model_assignments.c.id.desc())
                .limit(1)
            ).first()
            values = dict(
                role=role, version=version, previous=current.version if current else None, set_at=now(),
                set_by=set_by, action=action,
            )  # fmt: skip
            new_id = conn.execute(insert(model_assignments).values(**values)).inserted_primary_key[0]
            done.append(Assignment(id=new_id, **values))
    return done


ASSIGNMENTS_LOCK = 0x5E17_0026  # the advisory lock key of model_assignments' writers


_SQLITE_ASSIGNMENTS = threading.Lock()  # SQLite (one host, tests): its deferred transactions read before they lock


def _lock_assignments(conn) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ASSIGNMENTS_LOCK})


def _newest_id(conn, role: str) -> int | None:
    return conn.scalar(select(func.max(model_assignments.c.id)).where(model_assignments.c.role == role))


def _has(conn, version: str) -> bool:
    return conn.execute(select(model_versions.c.version).where(model_versions.c.version == version)).first() is not None


def rollback_target(engine: Engine) -> tuple[str, str]:
    """(current live version, the live version before it), or the :class:`UserError` that says there is none."""
    current = wanted(engine).live
    if current is None:
        raise UserError(
            "no live version was ever set in the model store: nothing to roll back",
            "`sentiment model promote VERSION` sets one",
        )
    if current.previous is None:
        raise UserError(
            f"live version {current.version} is the first one set: there is no earlier live version to roll back to",
            None,
        )
    return current.version, current.previous


# --- workers ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerState:
    worker: str
    live: str | None
    shadow: str | None
    refused: str | None
    seen_at: datetime
    evidence: str | None = None  # shadow against live on the rated reviews both scored (stream/observe/accuracy.py)
    loading: str | None = None  # the version it is loading and checking now
    loading_since: datetime | None = None
    refused_assignment: int | None = None


def report_worker(engine: Engine, state: WorkerState) -> None:
    """The worker's row: update, or insert on its first report (portable: PostgreSQL and SQLite)."""
    values = dict(
        live=state.live, shadow=state.shadow, refused=state.refused, seen_at=state.seen_at,
        evidence=None if state.evidence is None else state.evidence[:500],
        loading=state.loading, loading_since=state.loading_since, refused_assignment=state.refused_assignment,
    )  # fmt: skip
    with engine.begin() as conn:
        done = conn.execute(update(model_workers).where(model_workers.c.worker == state.worker).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(model_workers).values(worker=state.worker, **values))


def workers(engine: Engine) -> list[WorkerState]:
    """Every worker that ever reported, with when it last did."""
    with engine.connect() as conn:
        rows = conn.execute(select(model_workers).order_by(model_workers.c.worker)).all()
    # compared in Python: SQLite hands back naive datetimes
    return [
        WorkerState(
            r.worker,
            r.live,
            r.shadow,
            r.refused,
            _aware(r.seen_at),
            r.evidence,
            r.loading,
            None if r.loading_since is None else _aware(r.loading_since),
            r.refused_assignment,
        )  # fmt: skip
        for r in rows
    ]


def running_workers(engine: Engine, within: float = 10.0) -> list[WorkerState]:
    """The workers that reported within the last ``within`` seconds."""
    since = now() - timedelta(seconds=within)
    return [w for w in workers(engine) if w.seen_at >= since]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
