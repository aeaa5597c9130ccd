"""Kafka security settings reach the Faust app and the kafka-python clients; secrets stay secret."""

import ssl

import faust
import pytest
from kafka import KafkaProducer

from core.settings import Settings, faust_credentials, kafka_client_options


def test_plaintext_by_default():
    settings = Settings()
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl", "ssl")) for key in options)
    assert options["bootstrap_timeout_ms"] == settings.connect_timeout * 1000  # fail fast on a wrong address
    assert faust_credentials(settings) is None


def test_sasl_ssl_reaches_both_clients(monkeypatch, tmp_path):
    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("SENTIMENT_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SENTIMENT_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SENTIMENT_SASL_USERNAME", "scorer")
    monkeypatch.setenv("SENTIMENT_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SENTIMENT_SSL_CAFILE", ca)
    settings = Settings()
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())

    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "scorer" and options["sasl_plain_password"] == "s3cret"
    assert options["ssl_cafile"] == ca
    producer_config = KafkaProducer.DEFAULT_CONFIG | options  # what `sentiment produce` passes on
    assert producer_config["security_protocol"] == "SASL_SSL"

    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "scorer" and credentials.password == "s3cret"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_the_faust_app_gets_the_credentials(monkeypatch):
    from stream.app import create_app

    monkeypatch.setenv("SENTIMENT_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SENTIMENT_SASL_USERNAME", "scorer")
    monkeypatch.setenv("SENTIMENT_SASL_PASSWORD", "pw")
    app = create_app(Settings(database_url="sqlite:///:memory:"))
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.username == "scorer"


def test_unknown_protocol_is_refused(monkeypatch):
    monkeypatch.setenv("SENTIMENT_SECURITY_PROTOCOL", "KERBEROS_OVER_CARRIER_PIGEON")
    with pytest.raises(ValueError):
        Settings()
