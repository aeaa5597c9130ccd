"""Review files in every format a user has: the project's CSVs, JSON Lines, an aclImdb folder or tarball."""

import json
import tarfile

import pytest

from training.datasets import imdb_split, read_reviews


@pytest.fixture()
def acl_folder(tmp_path):
    """A tiny tree in the layout of the original aclImdb_v1 tarball."""
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for kind, texts in (("pos", ["Great<br />film", "Loved it"]), ("neg", ["Awful", "Boring"])):
            folder = root / split / kind
            folder.mkdir(parents=True)
            for n, body in enumerate(texts):
                rating = 9 if kind == "pos" else 2
                (folder / f"{n}_{rating}.txt").write_text(f"{split} {body}")
            urls = [f"http://www.imdb.com/title/tt000{n}{kind == 'pos':d}/usercomments" for n in range(len(texts))]
            (root / split / f"urls_{kind}.txt").write_text("\n".join(urls) + "\n")
    return tmp_path


def _check(rows):
    assert [r.review_id for r in rows] == ["test_pos_0", "test_pos_1", "test_neg_0", "test_neg_1"]
    assert [r.label for r in rows] == [1, 1, 0, 0]
    assert rows[0].movie_id == "tt00001" and rows[2].movie_id == "tt00000"
    assert rows[0].text == "test Great<br />film" and rows[0].rating == 9


def test_acl_imdb_folder(acl_folder):
    _check(list(read_reviews(acl_folder, split="test")))
    _check(list(read_reviews(acl_folder / "aclImdb", split="test")))


def test_acl_imdb_tarball(acl_folder, tmp_path):
    tarball = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(acl_folder / "aclImdb", arcname="aclImdb")
    _check(list(read_reviews(tarball, split="test")))
    assert len(imdb_split("train", tarball)) == 4


def test_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"review_id": "a", "movie_id": "m", "text": "hi", "label": 1}) + "\n\n")
    [row] = read_reviews(path)
    assert (row.review_id, row.movie_id, row.text, row.label) == ("a", "m", "hi", 1)


def test_shared_csv(data_dir):
    rows = list(read_reviews(data_dir / "imdb_test.csv.gz"))
    assert len(rows) == 25_000
    assert rows[0].movie_id.startswith("tt") and rows[0].label in (0, 1)


def test_unknown_format_is_a_clear_error(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_text("")
    with pytest.raises(ValueError, match="expected .csv, .jsonl"):
        read_reviews(path)


@pytest.mark.parametrize(
    "header, says, hint",
    [
        ("id,film,review", "no 'movie_id' column (it has 'id', 'film', 'review')", "is 'film' that column?"),
        ("review_id,movie_id,body", "no 'review' or 'text' column", "is 'body' that column?"),
        ("rid,movie_id,review", "no 'id' or 'review_id' column", "is 'rid' that column?"),
        ("id,movie_id,body_text", "no 'review' or 'text' column", "add a column 'review'"),
        ("id;movie_id;review", "looks separated by semicolons, not commas", "comma-separated"),
        ("id\tmovie_id\treview", "looks separated by tabs, not commas", "comma-separated"),
    ],
)
def test_a_csv_header_the_reader_cannot_use_is_one_error_not_a_skip_per_row(tmp_path, header, says, hint):
    from core.errors import UserError
    from training.datasets import read_records

    path = tmp_path / "reviews.csv"
    sep = ";" if ";" in header else "\t" if "\t" in header else ","
    path.write_text(header + "\n" + "\n".join(sep.join(["r1", "tt1", "Great film"]) for _ in range(3000)) + "\n")
    with pytest.raises(UserError) as refused:
        list(read_records(path))
    assert says in refused.value.message and hint in refused.value.hint and refused.value.exit_code == 2


def test_a_csv_without_a_film_column_is_still_read(tmp_path):
    """Files for evaluation (the Amazon shift set: id,review,label) have no film: that is no error."""
    from training.datasets import read_records

    path = tmp_path / "amazon.csv"
    path.write_text("id,review,label\na1,Works well,1\na2,Broke in a week,0\n")
    rows = list(read_records(path))
    assert [(r.review_id, r.movie_id, r.label) for r in rows] == [("a1", None, 1), ("a2", None, 0)]
