"""deploy/kubernetes/ cannot rot: every built-in object is checked against the Kubernetes schemas, offline
(``kubernetes-validate`` ships them), KEDA's objects against the fields KEDA's Kafka scaler reads, and the parts
against each other (names, ports, probes, the partition budget, secrets only in the Secret)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for (policy/v1, batch/v1, apps/v1 are GA there)
KEDA = "keda.sh/v1alpha1"


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def one(kind: str) -> dict:
    matches = [doc for _, doc in documents() if doc["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} objects of kind {kind}"
    return matches[0]


@pytest.mark.parametrize(
    "name,doc", [d for d in documents() if d[1]["apiVersion"] != KEDA], ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_built_in_object_matches_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)  # strict: an unknown field is an error too


def test_a_misspelt_field_is_caught():
    broken = one("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_deployment_runs_every_core_with_probes_scrapes_and_secrets_from_the_secret():
    deployment, secret, config = one("Deployment"), one("Secret"), one("ConfigMap")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["worker", "--processes", "auto"]
    port = int(config["data"]["SENTIMENT_METRICS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port and ports["web"] == int(config["data"]["SENTIMENT_WEB_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    sources = {
        next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]
    }  # configMapRef / secretRef -> name
    assert sources == {"configMapRef": config["metadata"]["name"], "secretRef": secret["metadata"]["name"]}
    grace = float(config["data"]["SENTIMENT_SHUTDOWN_GRACE"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace  # the worker stops before Kubernetes kills it
    # every setting in the ConfigMap and the Secret is one the worker knows, and nothing secret is in the ConfigMap
    known = {f"SENTIMENT_{name.upper()}" for name in Settings.model_fields}
    assert set(config["data"]) <= known and set(secret["stringData"]) <= known
    secret_fields = {"SENTIMENT_DATABASE_URL", "SENTIMENT_SASL_PASSWORD", "SENTIMENT_WEB_TOKEN"}
    assert not secret_fields & set(config["data"]) and secret_fields <= set(secret["stringData"])


def test_the_pod_disruption_budget_selects_the_worker_pods():
    deployment, budget = one("Deployment"), one("PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_keda_scales_the_deployment_on_lag_up_to_the_partitions():
    deployment, config, scaled = one("Deployment"), one("ConfigMap"), one("ScaledObject")
    auth = one("TriggerAuthentication")
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                         "triggers", "idleReplicaCount", "fallback", "advanced"}  # fmt: skip
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    data = config["data"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == data["SENTIMENT_APP_ID"] and meta["topic"] == data["SENTIMENT_TOPIC_REVIEWS"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA's trigger metadata is a map of strings"
    assert int(meta["lagThreshold"]) > 0
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secret = one("Secret")
    assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= set(secret["stringData"])
    # --processes auto on a pod of N whole CPUs runs N consumers: the most pods that all get partitions
    cpus = int(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert spec["maxReplicaCount"] * cpus <= int(data["SENTIMENT_TOPIC_PARTITIONS"])
    bootstrap = data["SENTIMENT_BROKER"].split("://", 1)[1]
    assert meta["bootstrapServers"] == bootstrap.replace(";", ",")
