"""One settings object for every part of the scorer.

Every field is read from an environment variable named ``SENTIMENT_<FIELD>``
(``SENTIMENT_BROKER``, ``SENTIMENT_BATCH_SIZE`` ...); command-line options of
``sentiment`` override them. The defaults run on one laptop.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import UserError
from core.messages import redact

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "model" / "default"

# How the worker and the page may compute the model (SENTIMENT_SCORING); the scorer accepts exactly these.
SCORING_CHOICES = ("compiled", "tensorflow")


def default_data_home() -> Path:
    """Where local state lives when no setting says otherwise: ``$XDG_DATA_HOME/sentiment`` (``~/.local/share``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sentiment"


def default_cache_home() -> Path:
    """Where rebuildable files live: ``$XDG_CACHE_HOME/sentiment`` (``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sentiment"


# An absolute path, so that every command finds the same database whatever folder it runs in.
DEFAULT_DATABASE_URL = f"sqlite:///{default_data_home() / 'sentiment.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore")

    broker: str = Field("kafka://127.0.0.1:9092", description="Faust broker URL (kafka://host:port;host2:port).")
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the database that holds review_scores and movie_sentiment.",
    )
    db_password: SecretStr | None = Field(
        None,
        description="The database password, when SENTIMENT_DATABASE_URL holds none: written as it is (no "
        "percent-encoding, whatever characters it holds) and put into the URL quoted; never logged.",
    )
    model: Path = Field(DEFAULT_MODEL, description="Folder of the model artifact; the committed default when unset.")
    batch_size: int = Field(
        1024,
        ge=1,
        le=10_000,
        description="Most reviews scored in one model call (a backlog's batches are this size; a live stream's close "
        "after SENTIMENT_BATCH_WAIT).",
    )
    scoring: str = Field(
        "compiled",
        pattern=f"^({'|'.join(SCORING_CHOICES)})$",
        description="How the worker and the page compute the model: compiled (numba, checked against TensorFlow when "
        "its tables are built, about 4-5x faster) or tensorflow.",
    )
    scoring_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Cores the compiled scorer spreads one batch over; 0: the CPUs this process may use, at most 4.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_home,
        description="Where the compiled scorer keeps the tables it builds from a model (rebuilt when missing).",
    )
    canary_min_accuracy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Accuracy on the labelled sample reviews below which a worker refuses a new model version "
        "(README, Model store).",
    )
    model_max_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="Most bytes of a model version's files: `sentiment model add` refuses a larger run folder and a "
        "worker a larger stored version before reading it (the default, 128 MB, is about 7x the largest model trained "
        "here, the 18.6 MB default).",
    )
    model_poll_interval: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Seconds between a worker's looks at the model store for a new live or shadow version.",
    )
    batch_wait: float = Field(
        0.02, gt=0, le=60, description="Most seconds a review waits for its batch to fill (the floor of the latency)."
    )
    lean_path: bool = Field(
        True,
        description="Drain each fetched batch straight into micro-batches (stream/ingest/consumer.py); false: Faust's own "
        "per-message path, with the same fetch settings (for comparison).",
    )
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=60_000, description="Most milliseconds a fetch waits at the broker when no record is there."
    )
    fetch_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Most bytes one fetch brings per partition (a larger message still comes).",
    )
    fetch_max_records: int = Field(0, ge=0, description="Most records handed over per fetch (0: no limit).")
    stream_buffer: int = Field(
        4096, ge=1, le=1_000_000, description="Messages buffered per topic before its partitions are paused."
    )
    topic_reviews: str = Field("reviews", description="Topic the worker reads reviews from.")
    topic_sentiments: str = Field("sentiments", description="Topic the worker writes one result per review to.")
    topic_dlq: str = Field("reviews.dlq", description="Dead-letter topic for rejected reviews.")
    topic_partitions: int = Field(4, ge=1, description="Partitions used when the scorer creates its topics.")
    security_protocol: str = Field(
        "PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$", description="Kafka security protocol."
    )
    sasl_mechanism: str = Field(
        "PLAIN", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$", description="SASL mechanism (with SASL_*)."
    )
    sasl_username: str | None = Field(None, description="SASL user name (with SASL_*).")
    sasl_password: SecretStr | None = Field(None, description="SASL password (with SASL_*); never logged.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates (with *SSL).")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS (with *SSL).")
    ssl_keyfile: Path | None = Field(None, description="Client certificate's private key (with *SSL).")
    app_id: str = Field("sentiment-scorer", description="Faust app id, also the Kafka consumer group.")
    session_timeout: float = Field(
        10.0, gt=0, description="Consumer group session timeout in seconds (Kafka accepts 6 to 1800 by default)."
    )
    commit_interval: float = Field(
        1.0, gt=0, description="Seconds between offset commits: after a crash, at most this much work is redone."
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="Consumer heartbeat interval in seconds.")
    max_text_chars: int = Field(50_000, ge=1, description="Longer review texts are rejected to the dead-letter topic.")
    max_message_bytes: int = Field(1_000_000, ge=1, description="Larger messages are rejected unread.")
    dlq_max_payload_bytes: int = Field(
        65_536,
        ge=0,
        le=1_000_000,
        description="Most bytes of a rejected message copied to the dead-letter topic (headers give its full size).",
    )
    undeliverable_file: Path = Field(
        default_factory=lambda: default_data_home() / "undeliverable.jsonl",
        description="Where a rejected message that cannot even be dead-lettered is recorded (one JSON line) before "
        "it is skipped.",
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the worker's /metrics, /healthz and /readyz (0: off)."
    )
    metrics_host: str = Field("0.0.0.0", description="Address the /metrics endpoint listens on.")
    web_port: int = Field(
        8088, ge=0, le=65535, description="Port of the scoring page and its HTTP API (worker and serve; 0: off)."
    )
    web_host: str = Field("127.0.0.1", description="Address the page and API listen on (0.0.0.0: every interface).")
    web_token: SecretStr | None = Field(
        None,
        description="Bearer token the API requires (Authorization: Bearer <token>, the scheme in any case; the page: "
        "open it as /#token=<token>, never ?token=); needed when SENTIMENT_WEB_HOST is not loopback; never logged.",
    )
    http_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds a client of either HTTP server has to send a whole request."
    )
    http_max_connections: int = Field(
        100, ge=1, le=100_000, description="Most open connections per HTTP server; more get a 503 and are closed."
    )
    http_client_connections: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Most open connections to the page and API from one client address; more get a 429 and are closed.",
    )
    http_client_rate: float = Field(
        20.0,
        gt=0,
        le=1_000_000,
        description="Requests per second one client address may send to the page and API (bursts of twice as many); "
        "more get a 429 with Retry-After. Behind a proxy every client is the proxy's address.",
    )
    http_client_body_rate: float = Field(
        4_000_000.0,
        gt=0,
        description="Request body bytes per second one client address may send to the API (bursts of one largest "
        "request); a request over it gets a 429 with Retry-After before its body is read.",
    )
    access_log: bool = Field(False, description="Log every HTTP request (off: scrapes and polls are not worth a line).")
    api_max_concurrent: int = Field(
        1, ge=1, le=64, description="Most /api/score requests computed at once; the others wait their turn."
    )
    api_cpu_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Most share of the wall clock that /api/score work may take (the stream keeps the rest); a request "
        "waits until the one before has been paid for.",
    )
    uncertain_band: float = Field(
        0.1, ge=0, lt=0.5, description="A score within this distance of 0.5 is flagged uncertain."
    )
    min_known_share: float = Field(
        0.4,
        ge=0,
        le=1,
        description="A review whose share of n-grams the model knows is below this is marked unreadable: published "
        "and stored with readable false, kept out of its film's mean (0.4: see README, Events).",
    )
    api_max_texts: int = Field(64, ge=1, le=10_000, description="Most texts one POST /api/score may carry.")
    drift_window: int = Field(1000, ge=10, description="Most recent scores compared with the reference for drift.")
    drift_min_scores: int = Field(
        1000, ge=10, description="Scores needed in the window before PSI and KS are exported (README, Drift)."
    )
    psi_threshold: float = Field(
        0.07, gt=0, description="PSI above which score drift is alerted (0.07: see README, Drift)."
    )
    drift_oov_scale: float = Field(
        0.015, gt=0, description="Rise in the share of unknown n-grams that puts the drift verdict at 1 (its alert)."
    )
    drift_length_scale: float = Field(
        0.19, gt=0, description="Change in mean log review length (n-grams) that puts the drift verdict at 1."
    )
    accuracy_window: int = Field(
        2000,
        ge=10,
        description="Most recent rated reviews (rating 7-10 positive, 1-4 negative) live accuracy and "
        "calibration error are measured on, per model version.",
    )
    accuracy_min_reviews: int = Field(
        200,
        ge=1,
        description="Rated reviews a version's window needs before its accuracy is exported (at most the window).",
    )
    accuracy_margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Live accuracy is alerted on below the model's validation accuracy (its metrics.json) minus this "
        "(exported as sentiment_accuracy_floor).",
    )
    accuracy_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The live accuracy floor itself, whatever model the worker starts with (unset: the model's "
        "validation accuracy minus SENTIMENT_ACCURACY_MARGIN).",
    )
    connect_timeout: float = Field(
        5.0, gt=0, le=120, description="Seconds to wait for the broker or the database before giving up."
    )
    shutdown_grace: float = Field(
        10.0, gt=0, le=600, description="Seconds the worker takes at most to stop on SIGTERM or Ctrl-C."
    )
    stall_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds without any offset advancing, while reviews wait, after which the worker is not ready.",
    )
    progress_interval: float = Field(
        30.0, ge=0, description="Seconds between the worker's one-line progress summaries in its log (0: off)."
    )
    log_level: str = Field(
        "info",
        pattern="^(?i:debug|info|warn|warning|error|critical)$",
        description="Log level; debug also shows tracebacks.",
    )
    data_dir: Path | None = Field(
        None, description="Folder with imdb_*.csv.gz for the demo, the tests and training (default: ../shared/data)."
    )

    @field_validator("data_dir", "web_token", "accuracy_floor", "db_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _database_password(self) -> Settings:
        self.database_url = database_url_with(self.database_url, self.db_password)
        return self

    def faust_broker_url(self) -> str:
        return self.broker if "://" in self.broker else f"kafka://{self.broker}"

    def bootstrap_servers(self) -> list[str]:
        """The broker URL as host:port strings for kafka-python."""
        url = self.faust_broker_url()
        hosts = url.split("://", 1)[1]
        return [h.strip() for h in hosts.replace(",", ";").split(";") if h.strip()]


ENV_PREFIX = "SENTIMENT_"

DB_PASSWORD_HINT = (
    "percent-encode the password in the URL (@ is %40, % is %25), or leave it out of the URL and set "
    "SENTIMENT_DB_PASSWORD, which takes it as it is"
)


def database_url_with(url: str, password: SecretStr | None) -> str:
    """``url`` checked for a password it cannot hold as written, with ``password`` (SENTIMENT_DB_PASSWORD) put into
    it, quoted. A raw ``@`` in a URL's password ends the password there, and what follows is read as the host (the
    driver then reported a host made of the rest of the password): that is refused, naming the character and
    nothing else of the secret. (``: / ? #`` as written, and ``%`` not followed by two hex digits, are read as
    written; ``%XX`` is read as percent-encoding.)"""
    from sqlalchemy.engine import make_url

    scheme, sep, rest = url.partition("://")
    written = None  # the password as written in the URL, if any
    if sep and "@" in rest:
        userinfo = rest[: rest.rfind("@")]
        if ":" in userinfo:
            written = userinfo.split(":", 1)[1]
    if written is not None and "@" in written:
        raise UserError(
            "the password in SENTIMENT_DATABASE_URL holds a '@', which ends a URL's password: the rest of it "
            "would be read as the host",
            DB_PASSWORD_HINT,
            exit_code=2,
        )
    if password is None:
        return url
    if written is not None:
        raise UserError(
            "both SENTIMENT_DATABASE_URL and SENTIMENT_DB_PASSWORD give a database password",
            "keep one of them (SENTIMENT_DB_PASSWORD needs no percent-encoding)",
            exit_code=2,
        )
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - said in our words below
        parsed = None
    if parsed is None or parsed.drivername.startswith("sqlite"):
        raise UserError(
            "SENTIMENT_DB_PASSWORD is set, but SENTIMENT_DATABASE_URL is no database URL that takes a password",
            "unset SENTIMENT_DB_PASSWORD, or point SENTIMENT_DATABASE_URL at PostgreSQL (postgresql://user@host/db)",
            exit_code=2,
        )
    return parsed.set(password=password.get_secret_value()).render_as_string(hide_password=False)


# Variables read outside the Settings object, listed by `sentiment settings` too.
OTHER_VARIABLES = {
    "SENTIMENT_TEST_DATABASE_URL": "PostgreSQL server the tests use instead of starting their own (tests only).",
    "SENTIMENT_PG_BIN": "Folder(s) of the PostgreSQL server binaries for local clusters (default: found on the system).",
}


# Settings whose value is never shown, even in an error about it.
SECRET_FIELDS = {"web_token", "sasl_password", "db_password"}


def load_settings(overrides: dict | None = None, options: dict[str, str] | None = None) -> Settings:
    """Settings from the environment and ``overrides``; a bad value is a :class:`UserError` naming its source.

    ``options`` maps a field to the command-line option that set it, so that the error names that option.
    """
    overrides = overrides or {}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            source = (options or {}).get(field) if field in overrides else None
            source = source or f"{ENV_PREFIX}{field.upper()}"
            value = overrides.get(field, os.environ.get(f"{ENV_PREFIX}{field.upper()}"))
            if isinstance(value, SecretStr) or field in SECRET_FIELDS:
                value = "***"
            elif isinstance(value, str):
                value = redact(value)
            problems.append(f"{source}={value!r}: {error['msg']}")
        raise UserError(
            "invalid setting " + "; ".join(problems),
            "fix or unset it (`sentiment settings` lists every setting with its allowed values)",
            exit_code=2,
        ) from exc


def settings_in_effect(settings: Settings, overrides: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(variable, value in effect, where it came from, description) for every setting; secrets masked."""
    overrides = overrides or {}
    rows = []
    for name, field in Settings.model_fields.items():
        env = f"{ENV_PREFIX}{name.upper()}"
        value = getattr(settings, name)
        shown = "***" if isinstance(value, SecretStr) else ("" if value is None else str(value))
        if name in overrides:
            source = "command line"
        elif env in os.environ:
            source = "environment"
        else:
            source = "default"
        rows.append((env, shown, source, field.description or ""))
    for env, description in OTHER_VARIABLES.items():
        rows.append((env, os.environ.get(env, ""), "environment" if env in os.environ else "unset", description))
    return rows


def kafka_client_options(settings: Settings) -> dict:
    """Options for kafka-python clients (producer, consumer, admin): security, and how long to wait for the broker."""
    options: dict = {
        "security_protocol": settings.security_protocol,
        "bootstrap_timeout_ms": int(settings.connect_timeout * 1000),
    }
    if settings.security_protocol.startswith("SASL"):
        options |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value() if settings.sasl_password else None,
        }
    if settings.security_protocol.endswith("SSL"):
        options |= {
            "ssl_cafile": str(settings.ssl_cafile) if settings.ssl_cafile else None,
            "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
            "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        }
    return options


def ssl_context(settings: Settings):
    """An SSL context for the Faust app (aiokafka), or None without TLS."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    import ssl

    context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
    return context


def faust_credentials(settings: Settings):
    """Faust's ``broker_credentials`` for the security settings (None for PLAINTEXT)."""
    import faust

    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
