"""One-line messages for people: the first line of an error, and text without its secrets."""

from __future__ import annotations

import re

MASK = "***"

# A secret given as key=value: a URL's query (password=, sslpassword=, ...), libpq's key=value form, a setting
# printed as NAME=value (SENTIMENT_SASL_PASSWORD=...); an unquoted value ends at a separator or at white space,
# less the punctuation of the sentence around it. JSON's "password": "..." is the quoted form below.
_SECRET_KEY = r"[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|credentials?)[A-Za-z0-9_.\-]*"
_KEY_VALUE = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9])(?P<key>{_SECRET_KEY})\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;#'\"]+?(?=[:,.)]*(?:\s|$|[&;#'\"])))",
    re.IGNORECASE,
)
_QUOTED = re.compile(rf"(?P<head>[\"'](?P<key>{_SECRET_KEY})[\"']\s*:\s*)(?P<secret>\"[^\"]*\"|'[^']*')", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password-like secret replaced by ``***``: a URL's ``user:password@``, and any
    ``password=...``, ``sslpassword=...``, ``token=...`` (query parameters, libpq key=value strings, settings)."""
    if not text:
        return text
    text = _userinfo_masked(text)
    text = _KEY_VALUE.sub(_mask_value, text)
    return _QUOTED.sub(_mask_value, text)


def _userinfo_masked(text: str) -> str:
    out = []
    for token in re.split(r"(\s+)", text):
        if "://" in token and "@" in token:
            scheme, rest = token.split("://", 1)
            authority_end = len(rest)
            for stop in "/?#":
                # the authority ends at the first /, ? or # after the last @ (a password may hold / ? #)
                at = rest.rfind("@")
                position = rest.find(stop, at + 1) if at >= 0 else -1
                if position >= 0:
                    authority_end = min(authority_end, position)
            authority, tail = rest[:authority_end], rest[authority_end:]
            if "@" in authority:
                userinfo, host = authority.rsplit("@", 1)
                if ":" in userinfo:
                    userinfo = f"{userinfo.split(':', 1)[0]}:{MASK}"
                token = f"{scheme}://{userinfo}@{host}{tail}"
        out.append(token)
    return "".join(out)


def _mask_value(match: re.Match) -> str:
    secret = match.group("secret")
    quote = secret[0] if secret[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{MASK}{quote}"


def first_line(exc: BaseException) -> str:
    """The first line of an error (a database driver's own, not SQLAlchemy's wrapper), for one-line messages,
    with any secret it quotes masked."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return redact(text[0]) if text else type(cause).__name__


def redact_log_records() -> None:
    """Mask secrets in every log record from now on, whoever logs it (a driver, Faust, aiokafka, our own code):
    the record's message is formatted and redacted when it is made. Records are only made for enabled levels."""
    import logging

    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not fit its format is logged as it is
            return record
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        return record

    redacting_factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
