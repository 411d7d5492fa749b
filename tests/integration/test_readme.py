"""Every command in README.md, run in order on a copy of the project, so the page cannot rot.

The `bash` blocks become one script (`set -euo pipefail`) run in a scratch copy of the checkout (its
files, the installed .venv linked in); each `python` block runs with the venv's interpreter at its
place in the sequence. A command that starts a server runs in the background until a later server
takes its port or the script ends; the harness waits for the port to open. Five lines are shown
but not run here: the manual install (CI's `make test` performs exactly that install before this
suite starts), `make test` (this suite) and `embed --engine ray` against a remote cluster; the test
checks they are still on the page.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHOWN_ONLY = {
    "python -m venv .venv",
    "pip install -r requirements.txt            # runtime: serving and ONNX Runtime",
    "pip install -r requirements-train.txt      # training: peft, datasets, accelerate, matplotlib",
    "make test",
    # Needs a Ray cluster and a shared filesystem; tests/integration/test_embed_ray.py runs the same on a real one.
    "embedops embed --model /shared/models/v2 --input /shared/corpus.jsonl --output embeddings/v2 --engine ray "
    "--ray-address 10.0.0.5:6379 --num-gpus 1",
}
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SERVES = re.compile(r"make embed-serve|embedops serve|serve_embedding_model\.py|embedops pipeline .*--serve")
PORT = re.compile(r"(?:PORT=|--port )(\d+)")

HARNESS = """set -euo pipefail
declare -A SERVERS=()
wait_port() {
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done
  echo "port $1 never opened" >&2; return 1
}
serve_bg() {  # serve_bg PORT COMMAND: replace whatever serves PORT, wait until it listens
  local port=$1; shift
  if [[ -n "${SERVERS[$port]:-}" ]]; then
    kill -- "-${SERVERS[$port]}" 2>/dev/null || true; wait "${SERVERS[$port]}" 2>/dev/null || true
    for _ in $(seq 1 120); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break; sleep 0.5; done
  fi
  setsid bash -c "$1" & SERVERS[$port]=$!
  wait_port "$port"
}
stop_servers() { for pid in "${SERVERS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; }
trap stop_servers EXIT
"""


def commands(block: str) -> list[str]:
    """Logical command lines of a bash block: continuations joined, blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in joined.splitlines() if line.strip()]


def script(readme: str, scratch: Path) -> str:
    parts = [HARNESS]
    for number, (language, body) in enumerate(BLOCK.findall(readme)):
        if language == "python":
            path = scratch / f"block{number}.py"
            path.write_text(body, encoding="utf-8")
            parts.append(f"echo '+ python block {number}'\npython {shlex.quote(str(path))}")
            continue
        for line in commands(body):
            parts.append(f"echo {shlex.quote('+ ' + line)}")
            if line in SHOWN_ONLY:
                continue
            if SERVES.search(line):
                port = PORT.search(line)
                command = line.rstrip().removesuffix("&").rstrip()
                parts.append(f"serve_bg {port.group(1) if port else 8000} {shlex.quote(command)}")
            else:
                parts.append(line)
    return "\n".join(parts) + "\n"


def project_copy(destination: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) with the installed .venv linked in."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to(ROOT / ".venv")
    return destination


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("jq") is None, reason="needs make and jq")
def test_every_readme_command_runs(tmp_path: Path, postgres_dsn: str) -> None:
    if not (ROOT / ".venv" / "bin" / "embedops").is_file():
        pytest.skip("the project's .venv is not installed (make test installs it)")
    readme = README.read_text(encoding="utf-8")
    for line in SHOWN_ONLY:
        assert line in readme, f"README no longer shows {line!r}; update SHOWN_ONLY"
    project = project_copy(tmp_path / "project")
    runner = tmp_path / "readme.sh"
    runner.write_text(script(readme, tmp_path), encoding="utf-8")
    env = {**os.environ, "PATH": f"{project / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    # `embedops index` and the workers' SQL read $EMBEDOPS_DB: a database on the PostgreSQL the session started.
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", EMBEDOPS_DB=postgres_dsn)
    result = subprocess.run(["bash", str(runner)], cwd=project, env=env, capture_output=True, text=True, timeout=2300)
    output = result.stdout
    assert result.returncode == 0, output[-4000:] + result.stderr[-4000:]

    assert "embedops demo: bundled all-MiniLM-L6-v2 tuned on a photo-app help center" in output
    after_make_pipeline = output.split("+ make pipeline", 1)[1]
    assert "finetune: reused" in after_make_pipeline and "quantize: reused" in after_make_pipeline
    assert "gate ndcg@10>=+2: passed" in output
    assert "swapped passages to passages_v1" in output and "rolled back passages" in output
    assert "\n2 384\n" in output  # the openai SDK against /v1
    smoke = output.split("+ curl -s -X POST localhost:8010/embed", 1)[1].split("\n", 1)[1]
    assert smoke.strip().splitlines()[0] == "384"  # the seed's smoke test: what follows the echoed command
    demo = json.loads((project / "runs" / "demo" / "pipeline.json").read_text())
    base, tuned = (demo["stages"][stage]["result"]["metrics"]["ndcg@10"] for stage in ("eval-base", "eval-finetuned"))
    assert tuned > base, (base, tuned)  # fine-tuning the real model on the sample data helps held-out retrieval
    assert (project / "runs" / "demo" / "report.html").is_file()
