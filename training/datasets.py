"""Readers for review files: the project's CSVs, JSON Lines, and the original aclImdb folder or tarball.

Every reader yields :class:`ReviewRow`; ``label`` is 1 (positive), 0 (negative) or None (unlabelled).
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
import re
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.settings import Settings, default_data_home, load_settings

csv.field_size_limit(10_000_000)

SPLITS = ("train", "test", "unsup")
_IMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_IMDB_URLS = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg|unsup)\.txt$")
_TITLE_ID = re.compile(r"(tt\d+)")


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One review as read from a file. A field the file does not give is None: readers never invent one."""

    review_id: str | None
    movie_id: str | None
    text: str | None
    label: int | None = None
    rating: int | None = None
    title: str | None = None
    line: int | None = None  # where the row starts in its file (1-based), for messages


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read at all (broken CSV or JSON, bytes that are not UTF-8, a label or rating that is not
    a number), with its text as it stands in the file (``raw``: undecodable bytes kept as surrogate escapes)."""

    line: int
    reason: str
    raw: str | None = None

    def raw_bytes(self) -> bytes | None:
        """The row's bytes exactly as in the file (what ``produce --send-invalid`` sends)."""
        return None if self.raw is None else self.raw.encode("utf-8", "surrogateescape")


def shared_data_dir(settings: Settings | None = None) -> Path | None:
    """Where the IMDB CSVs are: the ``data_dir`` setting (``SENTIMENT_DATA_DIR``), ``../shared/data`` beside the
    checkout, or the cache that ``sentiment data prepare`` builds from the original aclImdb tarball; None when none of
    them holds them. ``settings`` are those of the environment unless given."""
    configured = (settings or load_settings()).data_dir
    candidates = [configured] if configured is not None else []
    candidates.append(Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    candidates.append(default_data_home() / "data")
    return next((c for c in candidates if (c / "imdb_train.csv.gz").exists()), None)


def _open_text(path: Path) -> io.TextIOBase:
    """The file as text; bytes that are not UTF-8 become surrogate escapes, so that their row, not the whole file, is
    refused (:func:`_not_utf8`)."""
    if str(path) == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def _not_utf8(text: str) -> str | None:
    """Why a row read by :func:`_open_text` is not UTF-8 text, or None when it is."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = text[exc.start].encode("utf-8", "surrogateescape")[0]
        return f"not UTF-8: byte 0x{byte:02x} at character {exc.start + 1} of the row"
    return None


def _without_newline(text: str) -> str:
    return text.removesuffix("\n").removesuffix("\r")


class _LineRecorder:
    """Lines of a file as the csv reader takes them, kept until :meth:`take`: the raw text of the last record."""

    def __init__(self, fh: Iterable[str]) -> None:
        self._lines = iter(fh)
        self._taken: list[str] = []

    def __iter__(self) -> _LineRecorder:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._taken.append(line)
        return line

    def take(self) -> str:
        text = "".join(self._taken)
        self._taken.clear()
        return _without_newline(text)


_LABELS = {"1": 1, "0": 0, "pos": 1, "neg": 0, "positive": 1, "negative": 0, "true": 1, "false": 0}


def parse_label(value: object) -> int | None:
    """1, 0, "pos", "negative", true ... -> 1 or 0; None or "" -> None; anything else is a ValueError."""
    if value is None or value == "":
        return None
    key = str(value).strip().lower()
    if isinstance(value, bool):
        key = str(value).lower()
    if key not in _LABELS:
        raise ValueError(f"bad label: {value!r} is not 1/0, pos/neg or positive/negative")
    return _LABELS[key]


def parse_rating(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"bad rating: {value!r} is not a number") from None
    if not number.is_integer():
        raise ValueError(f"bad rating: {value!r} is not a whole number")
    return int(number)


def _text_or_none(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"wrong type: {type(value).__name__} where a string belongs")
    return str(value)


# the columns a review needs, each by the names the reader takes
CSV_COLUMNS = {"id": ("id", "review_id"), "movie_id": ("movie_id",), "review": ("review", "text")}


def check_csv_header(path: Path, header: list[str], columns: dict[str, int]) -> None:
    """One line for a header the reader cannot use (a missing column, another separator), instead of a skip per
    row: ``film`` where ``movie_id`` belongs gave 2,980 per-line skips."""
    if len(header) == 1 and (separator := next((c for c in ";\t|" if c in header[0]), None)):
        name = {";": "semicolons", "\t": "tabs", "|": "pipes"}[separator]
        raise UserError(
            f"{path}: the header {header[0]!r} is one column: the file looks separated by {name}, not commas",
            "save it as comma-separated CSV (or as JSON Lines: one review object per line)",
            2,
        )
    for wanted, names in CSV_COLUMNS.items():
        if any(name in columns for name in names):
            continue
        unused = [c for c in columns if not any(c in n for n in CSV_COLUMNS.values())]
        close = [c for c in unused if c in ALIASES.get(wanted, ())] or difflib.get_close_matches(wanted, unused, 1, 0.6)
        # the text is needed by every reader; an id or a film only by some (evaluate and training read files that
        # have no film): without one, say so only where a column looks like it under another name
        if wanted != "review" and not close:
            continue
        hint = f"is {close[0]!r} that column? rename it to {wanted!r}" if close else f"add a column {wanted!r}"
        raise UserError(
            f"{path}: the header has no {' or '.join(repr(n) for n in names)} column "
            f"(it has {', '.join(map(repr, header))})",
            hint,
            2,
        )


# names people give these columns, for the hint
ALIASES = {
    "id": ("rid", "reviewid", "review-id"),
    "movie_id": ("film", "film_id", "movie", "title_id", "imdb_id", "tconst"),
    "review": ("body", "content", "comment"),
}


def read_csv(path: Path) -> Iterator[ReviewRow | BadRow]:
    """CSV with a header naming ``id`` (or ``review_id``), ``movie_id``, ``review`` (or ``text``), and optionally
    ``label``, ``rating`` and ``title``. A row with more or fewer fields than the header is a :class:`BadRow`."""
    with _open_text(path) as fh:
        lines = _LineRecorder(fh)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRow(1, f"unreadable CSV header: {exc}", lines.take())
            return
        lines.take()
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        check_csv_header(path, header, columns)
        pick = {
            "review_id": columns.get("id", columns.get("review_id")),
            "movie_id": columns.get("movie_id"),
            "text": columns.get("review", columns.get("text")),
            "label": columns.get("label"),
            "rating": columns.get("rating"),
            "title": columns.get("title"),
        }
        line = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRow(line, f"unreadable CSV: {exc}", lines.take())
                line = reader.line_num + 1
                continue
            raw = lines.take()
            if not fields:
                line = reader.line_num + 1
                continue
            if problem := _not_utf8(raw):
                yield BadRow(line, problem, raw)
            elif len(fields) != len(header):
                yield BadRow(line, f"wrong field count: {len(fields)} fields where the header has {len(header)}", raw)
            else:
                values = {key: (fields[i] if i is not None else None) for key, i in pick.items()}
                try:
                    yield ReviewRow(
                        review_id=values["review_id"] or None,
                        movie_id=values["movie_id"] or None,
                        text=values["text"],
                        label=parse_label(values["label"]),
                        rating=parse_rating(values["rating"]),
                        title=values["title"] or None,
                        line=line,
                    )
                except ValueError as exc:
                    yield BadRow(line, str(exc), raw)
            line = reader.line_num + 1


def read_jsonl(path: Path) -> Iterator[ReviewRow | BadRow]:
    """JSON Lines in the shape of the ``review`` event (``text`` or ``review``; ``label``, ``title`` optional)."""
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            raw = _without_newline(line)
            if problem := _not_utf8(raw):
                yield BadRow(number, problem, raw)
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield BadRow(number, f"not JSON: {str(exc)[:200]}", raw)
                continue
            if not isinstance(obj, dict):
                yield BadRow(number, f"not an object: a JSON {type(obj).__name__}", raw)
                continue
            try:
                yield ReviewRow(
                    review_id=_text_or_none(obj.get("review_id", obj.get("id"))),
                    movie_id=_text_or_none(obj.get("movie_id")),
                    text=obj["text"] if "text" in obj else obj.get("review"),
                    label=parse_label(obj.get("label")),
                    rating=parse_rating(obj.get("rating")),
                    title=obj.get("title") if isinstance(obj.get("title"), str) else None,
                    line=number,
                )
            except ValueError as exc:
                yield BadRow(number, str(exc), raw)


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
            movie_id=found.group(1) if found else None,
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


def read_records(path: Path | str, split: str = "test") -> Iterator[ReviewRow | BadRow]:
    """Rows of a CSV(.gz), JSON Lines (.jsonl/.ndjson, optionally .gz), an aclImdb folder/tarball, or ``-`` (JSON
    Lines on standard input), with a :class:`BadRow` for each row that could not be read.

    ``split`` picks train, test or unsup from an aclImdb tree; files hold one split already.
    """
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if str(path) == "-":
        return read_jsonl(path)
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


def read_reviews(path: Path | str, split: str = "test") -> Iterator[ReviewRow]:
    """The rows of :func:`read_records`; a row that cannot be read is an error naming its line (nothing is dropped)."""
    records = read_records(path, split)  # a missing file or an unknown format fails here, not at the first row

    def good_rows() -> Iterator[ReviewRow]:
        for record in records:
            if isinstance(record, BadRow):
                raise ValueError(f"{path}:{record.line}: {record.reason}")
            yield record

    return good_rows()


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
        return list(read_reviews(source / f"imdb_{split}.csv.gz"))
    return list(read_reviews(source, split))


def write_csv(rows: Iterable[ReviewRow], path: Path, labelled: bool = True) -> int:
    """Rows as a gzipped CSV in the shared data's format (``id,movie_id,review[,label,rating]``)."""
    count = 0
    tmp = path.with_suffix(path.suffix + ".part")
    with gzip.open(tmp, "wt", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "movie_id", "review", "label", "rating"] if labelled else ["id", "movie_id", "review"])
        for r in rows:
            fields = [r.review_id, r.movie_id or "", r.text]
            writer.writerow(fields + ([r.label, r.rating] if labelled else []))
            count += 1
    tmp.replace(path)
    return count


def prepare_cache(source: Path, dest: Path) -> dict[str, int]:
    """Turn the original aclImdb folder or ``aclImdb_v1.tar.gz`` into ``imdb_{train,test,unsup}.csv.gz`` in
    ``dest``, the files the tests, the demo and training read. Returns the row count of each split."""
    if not is_acl_imdb(source):
        raise ValueError(f"{source} is not an aclImdb folder or aclImdb_v1.tar.gz")
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("test", "unsup", "train"):  # train last: its file marks the cache as complete
        counts[split] = write_csv(read_reviews(source, split), dest / f"imdb_{split}.csv.gz", labelled=split != "unsup")
    return counts
