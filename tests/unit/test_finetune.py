"""Fine-tuning on a tiny real model: artifact contents, bad data, LoRA + merge, kill and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import read_manifest
from embedops.cli import main
from embedops.models import load, resolve
from embedops.train.finetune import work_dir_for

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer"]


def pairs_file(path: Path, count: int, *, negatives: bool = False) -> Path:
    lines = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        row = [
            f"how do I fix {topic} problem number {i}",
            f"to repair {topic} issue {i}, restart the service",
        ]
        if negatives:
            row.append(f"{TOPICS[(i + 1) % len(TOPICS)]} settings page {i}")
        lines.append("\t".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune(*args: str) -> int:
    return main(["finetune", "--device", "cpu", *args])


@pytest.mark.slow
def test_full_finetune_writes_a_complete_artifact(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 48)
    out = tmp_path / "ft"
    code = finetune(
        "--data",
        str(data),
        "--base-model",
        str(tiny_model_dir),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--eval-sample-size",
        "8",
    )
    assert code == 0
    manifest = read_manifest(out)
    training = manifest.training
    assert manifest.kind == "finetuned" and manifest.dim == 32 and manifest.parent == str(tiny_model_dir)
    assert training["pairs"] == 40 and training["steps"] == 10 and training["epochs"] == 2
    assert set(training["sanity_eval"]["before"]) == {"mrr@10", "hit@1"}
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in log)
    assert "## License and attribution" in (out / "README.md").read_text()
    assert not work_dir_for(out).exists()
    embeddings = load(out, device="cpu").encode(["printer jam"])
    assert embeddings.shape == (1, 32)


def test_hard_negatives_are_trained_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "triplets.tsv", 16, negatives=True)
    out = tmp_path / "ft"
    assert (
        finetune(
            "--data",
            str(data),
            "--base-model",
            str(tiny_model_dir),
            "--output",
            str(out),
            "--batch-size",
            "8",
            "--loss",
            "cached-mnrl",
            "--mini-batch-size",
            "4",
        )
        == 0
    )
    training = read_manifest(out).training
    assert training["hard_negatives"] is True and training["loss"] == "cached-mnrl"


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("q1\tp1\nbroken line\n", "pairs.tsv:2:"),
        ("", "pairs.tsv:1: file is empty"),
        ("q\t \n", "pairs.tsv:1: empty"),
    ],
)
def test_bad_data_exits_2_with_location_and_writes_nothing(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], content: str, where: str
) -> None:
    data = tmp_path / "pairs.tsv"
    data.write_text(content)
    out = tmp_path / "models" / "ft"
    assert finetune("--data", str(data), "--base-model", str(tiny_model_dir), "--output", str(out)) == 2
    assert where in capsys.readouterr().err
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_skip_invalid_trains_on_the_rest(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = tmp_path / "pairs.tsv"
    data.write_text(pairs_file(tmp_path / "good.tsv", 8).read_text() + "bad line\n")
    out = tmp_path / "ft"
    assert (
        finetune("--data", str(data), "--base-model", str(tiny_model_dir), "--output", str(out), "--skip-invalid") == 0
    )
    assert "skipped 1 invalid line(s)" in capsys.readouterr().out
    assert read_manifest(out).training["skipped_lines"] == 1


def test_existing_output_fails_before_training(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 8)
    (tmp_path / "ft").mkdir()
    assert finetune("--data", str(data), "--base-model", str(tiny_model_dir), "--output", str(tmp_path / "ft")) == 2
    assert "already exists" in capsys.readouterr().err


def test_invalid_flags_exit_2(tmp_path: Path, capsys) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 8)
    assert finetune("--data", str(data), "--output", str(tmp_path / "ft"), "--epochs", "0") == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert finetune("--data", str(data), "--output", str(tmp_path / "ft"), "--eval-sample-size", "8") == 2
    assert "leaves nothing to train on" in capsys.readouterr().err


@pytest.mark.slow
def test_lora_adapter_loads_and_merge_matches(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 32)
    adapter, merged = tmp_path / "lora", tmp_path / "merged"
    seed_script = ROOT / "fine_tuning" / "training" / "scripts" / "train_embedding_model.py"
    result = subprocess.run(
        [
            sys.executable,
            str(seed_script),
            "--data",
            str(data),
            "--base-model",
            str(tiny_model_dir),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "1e-2",
            "--output",
            str(adapter),
            "--use-lora",
            "--lora-r",
            "4",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ref = resolve(adapter)
    assert ref.manifest.adapter["r"] == 4 and ref.manifest.adapter["merged"] is False
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()

    texts = ["restart the storage service", "billing page", "how do I fix login"]
    base_vectors = load(tiny_model_dir, device="cpu").encode(texts)
    adapter_vectors = load(ref, device="cpu").encode(texts)
    assert not np.allclose(base_vectors, adapter_vectors, atol=1e-4), "the adapter changed nothing"

    assert main(["merge", str(adapter), "--output", str(merged)]) == 0
    merged_ref = resolve(merged)
    assert merged_ref.manifest.kind == "merged" and not (merged / "adapter_config.json").exists()
    merged_vectors = load(merged_ref, device="cpu").encode(texts)
    cosine = (adapter_vectors * merged_vectors).sum(axis=1)
    assert cosine.min() > 0.9999


def test_merge_refuses_a_non_adapter(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    assert main(["merge", str(tiny_model_dir), "--output", str(tmp_path / "m")]) == 2
    assert "is not a LoRA adapter artifact" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_step_count(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 120)
    out = tmp_path / "ft"
    command = [
        sys.executable,
        "-m",
        "embedops",
        "finetune",
        "--data",
        str(data),
        "--base-model",
        str(tiny_model_dir),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--save-every",
        "20",
        "--device",
        "cpu",
    ]
    checkpoints = work_dir_for(out) / "checkpoints"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed run must not leave an artifact"

    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 2, "restart without --resume"
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_manifest(out).training["steps"] == 120
    assert " 0/120 steps" not in bar_states(result.stderr)[0], "the bar starts where the run resumed"
    assert not work_dir_for(out).exists()


def bar_states(stderr: str) -> list[str]:
    """Every state a progress bar was drawn in: tqdm redraws a line after a carriage return."""
    return [part for part in re.split(r"[\r\n]", stderr) if re.search(r"\d+%\|", part)]


def test_training_shows_one_labeled_bar_and_no_log_dicts(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 16)
    command = [sys.executable, "-m", "embedops", "finetune", "--device", "cpu", "--data", str(data)]
    command += ["--base-model", str(tiny_model_dir), "--output", str(tmp_path / "ft"), "--epochs", "2"]
    result = subprocess.run([*command, "--batch-size", "8"], capture_output=True, timeout=300)  # bytes: keep \r
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr[-2000:]
    assert "{'" not in stdout + stderr  # no raw trainer log dicts
    assert stdout.lstrip().startswith("saved finetuned model to")
    states = bar_states(stderr)
    assert len([line for line in stderr.split("\n") if re.search(r"\d+%\|", line)]) == 1, "one bar, kept"
    assert {state.split(":")[0] for state in states} == {"epoch 1/2", "epoch 2/2"}  # labeled, nothing else
    assert states[-1].startswith("epoch 2/2: 100%|") and "4/4 steps" in states[-1]
    assert re.search(r"elapsed, \S+ left, loss \d+\.\d{4}\]$", states[-1])


def test_resume_without_interrupted_run(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 8)
    assert (
        finetune(
            "--data",
            str(data),
            "--base-model",
            str(tiny_model_dir),
            "--output",
            str(tmp_path / "ft"),
            "--resume",
        )
        == 2
    )
    assert "no interrupted run to continue" in capsys.readouterr().err


def test_help_is_fast_because_nothing_heavy_is_imported() -> None:
    code = (
        "import sys\nfrom embedops.cli import build_parser\nbuild_parser()\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers', 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
