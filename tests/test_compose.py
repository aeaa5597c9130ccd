"""docker-compose.yml cannot run here (no Docker engine): check what can be checked without it."""

import re

import yaml

from core.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_part():
    assert {"kafka", "postgres", "migrate", "worker", "producer", "prometheus", "grafana"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft


def test_every_port_is_bound_to_loopback():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_long_running_services_have_health_checks():
    for name in ("kafka", "postgres", "worker", "prometheus", "grafana"):
        assert "healthcheck" in SERVICES[name], name


def test_worker_scales_it_has_no_fixed_name_or_host_port():
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert (ROOT / worker.get("build", ".") / "Dockerfile").exists()


def test_every_sentiment_variable_is_a_setting():
    known = {f"SENTIMENT_{name.upper()}" for name in Settings.model_fields}
    for name, service in SERVICES.items():
        for variable in service.get("environment", {}) or {}:
            if variable.startswith("SENTIMENT_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_every_mounted_file_exists():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    producer_file = SERVICES["producer"]["command"][1]
    assert (ROOT / producer_file).exists()


def test_the_worker_metrics_port_matches_prometheus_and_the_health_check():
    port = SERVICES["worker"]["environment"]["SENTIMENT_METRICS_PORT"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["dns_sd_configs"][0]["port"] == int(port)
    # the health check asks /healthz (alive) on the same port; /readyz would restart a worker whose database is away
    assert re.search(rf"{port}/healthz", yaml.safe_dump(SERVICES["worker"]["healthcheck"]))
