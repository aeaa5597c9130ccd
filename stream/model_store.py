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

import getpass
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
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
    update,
)
from sqlalchemy.engine import Engine

from core.errors import UserError
from model.scorer import MODEL_FILE, model_version

ROLES = ("live", "shadow")
MAX_FOLDER_BYTES = 512 * 1024 * 1024  # an artifact is about 16 MB; a folder this large is not one

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


def artifact_files(folder: Path) -> list[Path]:
    """The files of an artifact folder that go into the store (its regular files, not subfolders), or the
    :class:`UserError` that says why the folder is no model."""
    if not folder.exists():
        raise UserError(f"no folder at {folder}", "give the folder of a training run (runs/NAME-VERSION/)", 2)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", "give the folder of a training run (runs/NAME-VERSION/)", 2)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"{folder} is empty", "give the folder of a training run (runs/NAME-VERSION/)", 2)
    if not (folder / MODEL_FILE).is_file():
        raise UserError(
            f"{folder} is not a model: no {MODEL_FILE} in it",
            "give the folder of a training run (runs/NAME-VERSION/), which holds model.keras and metrics.json",
            2,
        )
    size = sum(p.stat().st_size for p in files)
    if size > MAX_FOLDER_BYTES:
        raise UserError(f"{folder} holds {size:,} bytes: too large for a model artifact", None, 2)
    return files


def pack(files: list[Path]) -> bytes:
    """The files as one gzipped tar, the same bytes for the same files (sorted, no times, no owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in files:
            info = tarfile.TarInfo(path.name)
            data = path.read_bytes()
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


def resolve(engine: Engine, prefix: str) -> str:
    """The stored version that ``prefix`` names (a whole version, or its start when that is unambiguous)."""
    with engine.connect() as conn:
        found = conn.scalars(
            select(model_versions.c.version).where(model_versions.c.version.startswith(prefix, autoescape=True))
        ).all()
    if prefix in found:
        return prefix
    if len(found) == 1 and len(prefix) >= 4:
        return found[0]
    if not found:
        raise UserError(f"no version {prefix!r} in the model store", "`sentiment model list` shows the versions", 1)
    raise UserError(f"{prefix!r} names {len(found)} versions: {', '.join(found)}", "give more of it", 1)


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
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if role == "live" and version is None:
        raise ValueError("the live role always has a version")
    with engine.begin() as conn:
        if (
            version is not None
            and not conn.execute(select(model_versions.c.version).where(model_versions.c.version == version)).first()
        ):
            raise UserError(f"no version {version!r} in the model store", "`sentiment model list` shows the versions")
        current = conn.execute(
            select(model_assignments.c.version)
            .where(model_assignments.c.role == role)
            .order_by(model_assignments.c.id.desc())
            .limit(1)
        ).first()
        values = dict(
            role=role,
            version=version,
            previous=current.version if current else None,
            set_at=now(),
            set_by=set_by,
            action=action,
        )
        new_id = conn.execute(insert(model_assignments).values(**values)).inserted_primary_key[0]
    return Assignment(id=new_id, **values)


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
    evidence: str | None = None  # shadow against live on the rated reviews both scored (stream/accuracy.py)


def report_worker(engine: Engine, state: WorkerState) -> None:
    """The worker's row: update, or insert on its first report (portable: PostgreSQL and SQLite)."""
    values = dict(
        live=state.live, shadow=state.shadow, refused=state.refused, seen_at=state.seen_at,
        evidence=None if state.evidence is None else state.evidence[:500],
    )  # fmt: skip
    with engine.begin() as conn:
        done = conn.execute(update(model_workers).where(model_workers.c.worker == state.worker).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(model_workers).values(worker=state.worker, **values))


def running_workers(engine: Engine, within: float = 10.0) -> list[WorkerState]:
    """The workers that reported within the last ``within`` seconds."""
    since = now() - timedelta(seconds=within)
    with engine.connect() as conn:
        rows = conn.execute(select(model_workers).order_by(model_workers.c.worker)).all()
    # compared in Python: SQLite hands back naive datetimes
    found = [WorkerState(r.worker, r.live, r.shadow, r.refused, _aware(r.seen_at), r.evidence) for r in rows]
    return [w for w in found if w.seen_at >= since]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
