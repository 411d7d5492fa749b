"""The seed's make targets expand to `embedops` commands whose every flag the CLI accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from embedops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def embedops_command(target: str, *variables: str) -> list[str]:
    """The `embedops …` line that `make TARGET` would run, with its continuation lines joined."""
    printed = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, *variables], capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    lines = [line for line in printed.splitlines() if "/embedops " in line]
    assert lines, printed
    return shlex.split(lines[-1])[1:]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("target", "variables", "command"),
    [
        ("demo", [], "demo"),
        ("embed-finetune", ["DATA=d.tsv", "OUTPUT=o", "EPOCHS=2", "BATCH=128", "LR=2e-5", "USE_LORA=1"], "finetune"),
        ("embed-finetune", ["DATA=d.tsv", "OUTPUT=o", "EPOCHS=1", "BATCH=8"], "finetune"),
        ("embed-quantize", ["MODEL=m", "OUTPUT=o", "DTYPE=int4"], "quantize"),
        ("embed-serve", ["MODEL=m", "PORT=8010", "NORMALIZE=1"], "serve"),
        ("embed-eval", ["MODEL=m", "DATA=d"], "eval"),
        ("embed-merge", ["MODEL=m", "OUTPUT=o"], "merge"),
        ("pipeline", ["DATA=d.tsv", "OUTPUT=runs/x", "GATE=ndcg@10>=+0.5", "SERVE=1", "PORT=8001"], "pipeline"),
        ("pipeline", ["DATA=d.tsv", "OUTPUT=runs/x", "EVAL_DATA=beir", "QUANTIZE=none", "USE_LORA=1"], "pipeline"),
    ],
)
def test_make_target_runs_a_valid_command(target: str, variables: list[str], command: str) -> None:
    args = build_parser().parse_args(embedops_command(target, *variables))
    assert args.command == command


def test_make_variables_reach_the_flags() -> None:
    args = build_parser().parse_args(
        embedops_command(
            "embed-finetune", "DATA=d.tsv", "OUTPUT=o", "EPOCHS=2", "BATCH=128", "LR=2e-5", "USE_LORA=1", "NPROC=2"
        )
    )
    assert (args.epochs, args.batch_size, args.lr, args.use_lora, args.nproc) == (2, 128, 2e-5, True, 2)
    serve = build_parser().parse_args(embedops_command("embed-serve", "MODEL=m", "PORT=8010", "NORMALIZE=1"))
    assert (serve.model, serve.port, serve.normalize) == ("m", 8010, True)
    pipeline = build_parser().parse_args(
        embedops_command("pipeline", "DATA=d.tsv", "OUTPUT=o", "TIME_BUDGET=45m", "NPROC=2")
    )
    assert (pipeline.time_budget, pipeline.nproc) == ("45m", 2)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_smoke_tests_data_directory_ships_with_a_clone() -> None:
    # The seed's smoke test starts with `echo … > data/finetune/pairs.tsv`, with no mkdir before it.
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "data/finetune"], capture_output=True, text=True)
    assert tracked.stdout.split() == ["data/finetune/.gitkeep"]
    probe = ROOT / "data" / "finetune" / "pairs.tsv"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(probe)])
    assert ignored.returncode == 0  # users' pairs files there stay out of version control
