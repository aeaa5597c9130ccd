"""Secrets never reach a message: every form a user may write a password in is masked."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.messages import first_line, redact

SECRET = "s3cr:et@/x?y#z"  # holds every character that ends a part of a URL

FORMS = [
    "postgresql://scorer:{s}@db.example:5432/reviews",
    "postgresql+psycopg://scorer:{s}@db/reviews?sslmode=require",
    "postgresql://scorer@db/reviews?password={q}",
    "postgresql://scorer@db/reviews?sslmode=require&sslpassword={q}&application_name=x",
    "postgresql:///reviews?host=/run/postgresql&user=scorer&PASSWORD={q}",
    "host=db user=scorer password={q} dbname=reviews",
    "host=db user=scorer password='{s}' dbname=reviews",
    "SENTIMENT_SASL_PASSWORD={q}",
    "kafka://user:{s}@broker:9092",
    '{{"password": "{s}"}}',
    "sasl_plain_password={q} token={q}",
]


def quoted(secret: str) -> str:
    """The secret as it would stand in a query string or key=value list (no separator inside)."""
    return "".join(c for c in secret if c not in "&;#?/ ")


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_a_password_is_masked(form):
    text = form.format(s=SECRET, q=quoted(SECRET))
    shown = redact(f"cannot reach the database at {text}: timeout")
    assert quoted(SECRET) not in shown and "s3cr" not in shown, shown
    assert "***" in shown
    assert shown.startswith("cannot reach the database at ") and shown.endswith(": timeout")


def test_what_is_not_secret_stays_readable():
    url = "postgresql://scorer:pw@db.example:5432/reviews?sslmode=require"
    assert redact(url) == "postgresql://scorer:***@db.example:5432/reviews?sslmode=require"
    assert redact("postgresql://scorer@db/reviews?password=pw&sslmode=require") == (
        "postgresql://scorer@db/reviews?password=***&sslmode=require"
    )
    for plain in ("sqlite:////home/me/.local/share/sentiment/sentiment.db", "kafka://127.0.0.1:9092", "a@b.c", ""):
        assert redact(plain) == plain


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=4, max_size=30))
def test_any_password_in_user_info_or_query_is_masked(password):
    from urllib.parse import quote

    encoded = quote(password, safe="")
    for url in (f"postgresql://me:{encoded}@host/db", f"postgresql://me@host/db?password={encoded}&x=1"):
        assert encoded not in redact(url).replace("***", "")


def test_a_driver_error_that_quotes_the_dsn_is_masked():
    error = RuntimeError('connection failed: password="hunter22" host=db\nDETAIL: more')
    assert first_line(error) == 'connection failed: password="***" host=db'


def test_log_records_are_masked_whoever_logs_them(caplog):
    import logging

    from core.messages import redact_log_records

    redact_log_records()
    redact_log_records()  # twice is once
    logging.getLogger("some.driver").warning("connecting to %s", "postgresql://u:hunter22@db/x?sslpassword=pw2")
    assert "hunter22" not in caplog.text and "pw2" not in caplog.text
    assert "postgresql://u:***@db/x?sslpassword=***" in caplog.text
