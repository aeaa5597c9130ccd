"""Readers for review files: the project's CSVs, JSON Lines, and the original aclImdb folder or tarball.

Every reader yields :class:`ReviewRow`; ``label`` is 1 (positive), 0 (negative) or None (unlabelled).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

csv.field_size_limit(10_000_000)

SPLITS = ("train", "test", "unsup")
_IMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_IMDB_URLS = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg|unsup)\.txt$")
_TITLE_ID = re.compile(r"(tt\d+)")


@dataclass(frozen=True, slots=True)
class ReviewRow:
    review_id: str
    movie_id: str
    text: str
    label: int | None = None
    rating: int | None = None


def shared_data_dir() -> Path | None:
    """``$SENTIMENT_DATA_DIR``, else ``../shared/data`` beside the checkout, if it exists."""
    env = os.environ.get("SENTIMENT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    return next((c for c in candidates if (c / "imdb_train.csv.gz").exists()), None)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _optional_int(value: object) -> int | None:
    if value in (None, ""):
        return None
    return int(value)  # type: ignore[arg-type]


def read_csv(path: Path) -> Iterator[ReviewRow]:
    """CSV with columns ``id,movie_id,review[,label][,rating]`` (movie_id optional: then 'unknown')."""
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            yield ReviewRow(
                review_id=row.get("id") or row["review_id"],
                movie_id=row.get("movie_id") or "unknown",
                text=row.get("review") if row.get("review") is not None else row["text"],
                label=_optional_int(row.get("label")),
                rating=_optional_int(row.get("rating")),
            )


def read_jsonl(path: Path) -> Iterator[ReviewRow]:
    """JSON Lines in the shape of the ``review`` event (``text`` or ``review``; ``label`` optional)."""
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            yield ReviewRow(
                review_id=str(obj.get("review_id", obj.get("id"))),
                movie_id=str(obj.get("movie_id") or "unknown"),
                text=obj["text"] if "text" in obj else obj["review"],
                label=_optional_int(obj.get("label")),
                rating=_optional_int(obj.get("rating")),
            )


def _acl_rows(files: Iterable[tuple[str, bytes]], split: str) -> Iterator[ReviewRow]:
    """(path, bytes) pairs of an aclImdb tree -> rows of one split, with film ids from urls_*.txt."""
    urls: dict[str, list[str]] = {}
    texts: list[tuple[str, str, int, int, str]] = []
    for name, data in files:
        if m := _IMDB_URLS.search(name):
            if m.group(1) == split:
                urls[m.group(2)] = data.decode("utf-8").splitlines()
        elif m := _IMDB_FILE.search(name):
            if m.group(1) == split or (split == "unsup" and m.group(2) == "unsup"):
                texts.append((m.group(2), name, int(m.group(3)), int(m.group(4)), data.decode("utf-8")))
    for kind, _name, n, rating, text in sorted(texts, key=lambda t: (t[0] != "pos", t[0], t[2])):
        url_lines = urls.get(kind, [])
        found = _TITLE_ID.search(url_lines[n]) if n < len(url_lines) else None
        prefix = "unsup" if kind == "unsup" else f"{split}_{kind}"
        yield ReviewRow(
            review_id=f"{prefix}_{n}",
            movie_id=found.group(1) if found else "unknown",
            text=text,
            label=None if kind == "unsup" else int(kind == "pos"),
            rating=None if kind == "unsup" else rating,
        )


def _folder_files(root: Path, split: str) -> Iterator[tuple[str, bytes]]:
    base = root / "aclImdb" if (root / "aclImdb").is_dir() else root
    folder = base / ("train" if split == "unsup" else split)
    for path in folder.glob("urls_*.txt"):
        yield f"aclImdb/{folder.name}/{path.name}", path.read_bytes()
    for kind in ("pos", "neg", "unsup"):
        for path in (folder / kind).glob("*.txt"):
            yield f"aclImdb/{folder.name}/{kind}/{path.name}", path.read_bytes()


def _tar_files(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile() and (_IMDB_FILE.search(member.name) or _IMDB_URLS.search(member.name)):
                fh = tar.extractfile(member)
                if fh is not None:
                    yield member.name, fh.read()


def is_acl_imdb(path: Path) -> bool:
    if path.is_dir():
        return (path / "aclImdb" / "train").is_dir() or (path / "train" / "pos").is_dir()
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def read_reviews(path: Path | str, split: str = "test") -> Iterator[ReviewRow]:
    """Reviews from a CSV(.gz), JSON Lines (.jsonl/.ndjson, optionally .gz), or an aclImdb folder/tarball.

    ``split`` picks train, test or unsup from an aclImdb tree; files hold one split already.
    """
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if is_acl_imdb(path):
        files = _folder_files(path, split) if path.is_dir() else _tar_files(path)
        return _acl_rows(files, split)
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return read_jsonl(path)
    if name.endswith(".csv"):
        return read_csv(path)
    raise ValueError(f"{path}: expected .csv, .jsonl or an aclImdb folder or tarball")


def imdb_split(split: str, data: Path | str | None = None) -> list[ReviewRow]:
    """All reviews of an IMDB split from ``data`` (the CSV folder, an aclImdb folder or tarball)
    or, when None, from the shared data folder."""
    source = Path(data) if data is not None else shared_data_dir()
    if source is None:
        raise FileNotFoundError(
            "no IMDB data found: pass --data with the aclImdb folder or aclImdb_v1.tar.gz, "
            "or set SENTIMENT_DATA_DIR to a folder holding imdb_train.csv.gz"
        )
    if source.is_dir() and (source / f"imdb_{split}.csv.gz").exists():
        return list(read_csv(source / f"imdb_{split}.csv.gz"))
    return list(read_reviews(source, split))
