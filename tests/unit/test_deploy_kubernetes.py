"""The Kubernetes manifests: every kustomize overlay rendered with `kubectl kustomize` and validated
offline against the Kubernetes schemas (kubernetes-validate, strict), and the settings that must agree
across them (ports, probes, shutdown timing, the key file, the scaling metric) checked on the rendered
output.

Custom resources have no schema in kubernetes-validate: KEDA's ScaledObject and the Prometheus adapter's
rule are checked field by field against the HPA they stand in for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

KUSTOMIZE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes these manifests target (kubectl here is 1.32) and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")


@cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; it renders the kustomize overlays (kubectl kustomize)")
    result = subprocess.run([kubectl, "kustomize", target], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _overlay(name: str) -> dict[str, dict[str, Any]]:
    documents = _render(str(KUSTOMIZE / "overlays" / name))
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents), "one object of each kind expected"
    return by_kind


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    objects = _overlay(overlay)
    assert set(objects) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    }
    for version in KUBERNETES_VERSIONS:
        for document in objects.values():
            kubernetes_validate.validate(document, version, strict=True)  # raises ValidationError


def test_the_validation_rejects_what_it_should() -> None:
    """The check above can fail: a misspelt field in a rendered Deployment is refused in strict mode."""
    import kubernetes_validate

    deployment = _overlay("cpu")["Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_readyz_and_healthz_on_the_served_port(overlay: str) -> None:
    container = _container(_overlay(overlay)["Deployment"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": int(_env(container)["SERVE_PORT"])}
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("readiness", "liveness", "startup")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "readiness": "/readyz",
        "liveness": "/healthz",
        "startup": "/healthz",
    }
    assert all(probe["port"] == "http" for probe in probes.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_prestop_and_the_graceful_timeout(overlay: str) -> None:
    deployment = _overlay(overlay)["Deployment"]
    container = _container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    graceful = int(_env(container)["SERVE_GRACEFUL_TIMEOUT"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(command[1]) + graceful, (grace, command, graceful)
    from embedops.serve.settings import ServeSettings

    assert graceful == ServeSettings.model_fields["graceful_timeout"].default  # the flag's documented default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_key_comes_from_a_secret_file(overlay: str) -> None:
    pod = _overlay(overlay)["Deployment"]["spec"]["template"]["spec"]
    container = _container(_overlay(overlay)["Deployment"])
    env = _env(container)
    assert "SERVE_API_KEY" not in env
    key_file = Path(env["SERVE_API_KEY_FILE"])
    mount = next(m for m in container["volumeMounts"] if key_file.parent == Path(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert [item["path"] for item in volume["secret"]["items"]] == [key_file.name]


@pytest.mark.parametrize(("overlay", "tag"), [("cpu", "embedops:cpu"), ("gpu", "embedops:cuda")])
def test_overlay_image_and_resources(overlay: str, tag: str) -> None:
    container = _container(_overlay(overlay)["Deployment"])
    assert container["image"] == tag
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert (resources["limits"].get("nvidia.com/gpu") == "1") == (overlay == "gpu")
    assert _env(container)["SERVE_DEVICE"] == ("cuda" if overlay == "gpu" else "cpu")
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    pod = _overlay(overlay)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/tmp" in mounts and Path(_env(container)["SERVE_MODEL"]).parent.as_posix() in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_and_budget_select_the_pods(overlay: str) -> None:
    objects = _overlay(overlay)
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        objects["PodDisruptionBudget"]["spec"]["maxUnavailable"]
        < objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    )


def _queue_metric(hpa: dict[str, Any]) -> dict[str, Any]:
    return next(m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")


def _exposed_metric_names() -> str:
    from embedops.serve.metrics import ServeMetrics

    return ServeMetrics().exposition().decode()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_cpu_and_on_the_queue_depth_the_server_exposes(overlay: str) -> None:
    objects = _overlay(overlay)
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "embedops"}
    assert objects["Deployment"]["metadata"]["name"] == "embedops"
    cpu = next(m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource")
    assert cpu["name"] == "cpu" and cpu["target"]["type"] == "Utilization"
    queue = _queue_metric(hpa)
    assert re.search(rf"^# TYPE {queue['metric']['name']} gauge$", _exposed_metric_names(), re.MULTILINE)
    # One full batch waiting per replica is the documented trigger.
    from embedops.serve.settings import ServeSettings

    env = _env(_container(objects["Deployment"]))
    batch = int(env.get("SERVE_BATCH_SIZE", ServeSettings.model_fields["batch_size"].default))
    assert queue["target"] == {"type": "AverageValue", "averageValue": str(batch)}


def test_prometheus_adapter_rule_feeds_the_hpa_metric() -> None:
    values = yaml.safe_load((KUSTOMIZE / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    metric = _queue_metric(_overlay("cpu")["HorizontalPodAutoscaler"])["metric"]["name"]
    assert rule["seriesQuery"].startswith(metric + "{")
    assert re.fullmatch(rule["name"]["matches"], metric) and rule["name"]["as"] == metric
    # A Pods metric: each series must name its pod and namespace.
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
    # The series exist because the pods ask to be scraped on the port and path that serve /metrics.
    annotations = _overlay("cpu")["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_keda_component_replaces_the_hpa_with_the_same_signals(tmp_path: Path) -> None:
    import kubernetes_validate

    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(KUSTOMIZE / "overlays" / "cpu", tmp_path)],
                "components": [os.path.relpath(KUSTOMIZE / "components" / "keda", tmp_path)],
            }
        )
    )
    documents = _render(str(tmp_path))
    kinds = [doc["kind"] for doc in documents]
    assert "HorizontalPodAutoscaler" not in kinds and kinds.count("ScaledObject") == 1
    hpa = _overlay("cpu")["HorizontalPodAutoscaler"]
    scaled = next(doc for doc in documents if doc["kind"] == "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    triggers = {trigger["type"]: trigger for trigger in scaled["spec"]["triggers"]}
    queue = _queue_metric(hpa)
    assert queue["metric"]["name"] in triggers["prometheus"]["metadata"]["query"]
    assert triggers["prometheus"]["metricType"] == "AverageValue"
    assert triggers["prometheus"]["metadata"]["threshold"] == queue["target"]["averageValue"]
    cpu = next(m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource")
    assert triggers["cpu"]["metadata"]["value"] == str(cpu["target"]["averageUtilization"])
    for document in documents:
        if document["kind"] != "ScaledObject":  # a CRD: kubernetes-validate has no schema for it
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)
