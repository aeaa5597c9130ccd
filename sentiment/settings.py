"""One settings object for every part of the scorer.

Every field is read from an environment variable named ``SENTIMENT_<FIELD>``
(``SENTIMENT_BROKER``, ``SENTIMENT_BATCH_SIZE`` ...); command-line options of
``sentiment`` override them. The defaults run on one laptop.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "model" / "default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore")

    broker: str = Field("kafka://127.0.0.1:9092", description="Faust broker URL (kafka://host:port;host2:port).")
    database_url: str = Field(
        "sqlite:///.sentiment/sentiment.db",
        description="SQLAlchemy URL of the database that holds review_scores and movie_sentiment.",
    )
    model: Path = Field(DEFAULT_MODEL, description="Folder of the model artifact; the committed default when unset.")
    batch_size: int = Field(256, ge=1, le=10_000, description="Most reviews scored in one model call.")
    batch_wait: float = Field(0.5, gt=0, le=60, description="Seconds to wait for a batch to fill before scoring it.")
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
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint (0: off).")
    metrics_host: str = Field("0.0.0.0", description="Address the /metrics endpoint listens on.")
    drift_window: int = Field(1000, ge=10, description="Most recent scores compared with the reference for drift.")
    psi_threshold: float = Field(
        0.07, gt=0, description="PSI above which score drift is alerted (0.07: see README, Drift)."
    )
    log_level: str = Field("info", description="Worker log level.")

    def faust_broker_url(self) -> str:
        return self.broker if "://" in self.broker else f"kafka://{self.broker}"

    def bootstrap_servers(self) -> list[str]:
        """The broker URL as host:port strings for kafka-python."""
        url = self.faust_broker_url()
        hosts = url.split("://", 1)[1]
        return [h.strip() for h in hosts.replace(",", ";").split(";") if h.strip()]


def kafka_client_options(settings: Settings) -> dict:
    """Security options for kafka-python clients (producer, consumer, admin), from the settings."""
    options: dict = {"security_protocol": settings.security_protocol}
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


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for README and --help."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append((f"SENTIMENT_{name.upper()}", str(field.default), field.description or ""))
    return rows
