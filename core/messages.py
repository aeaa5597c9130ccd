"""One-line messages for people: the first line of an error, and URLs without their secrets."""

from __future__ import annotations


def redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def first_line(exc: BaseException) -> str:
    """The first line of an error (a database driver's own, not SQLAlchemy's wrapper), for one-line messages."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__
