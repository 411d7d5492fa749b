"""The bundled real model on real data, and the seed's training commands exactly as printed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedops.artifact import read_manifest
from embedops.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_wikiqa_finetune_improves_held_out_mrr(tmp_path: Path, shared_data: Path, capsys) -> None:
    out = tmp_path / "wikiqa-ft"
    code = main(
        [
            "finetune",
            "--data",
            str(shared_data / "wikiqa" / "train-pairs.tsv"),
            "--output",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--eval-sample-size",
            "200",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    sanity = read_manifest(out).training["sanity_eval"]
    print(printed)
    assert sanity["pairs"] == 200
    assert sanity["after"]["mrr@10"] > sanity["before"]["mrr@10"], sanity


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_seed_smoke_test_training_half(tmp_path: Path) -> None:
    """`make embed-finetune … EPOCHS=1 BATCH=8` on the seed's one-line pairs file, with this checkout's .venv."""
    if not (ROOT / ".venv" / "bin" / "embedops").exists() or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs the Makefile against this checkout's .venv; run the suite through `make test`")
    pairs = tmp_path / "data" / "finetune" / "pairs.tsv"
    pairs.parent.mkdir(parents=True)
    subprocess.run(["bash", "-c", f'echo -e "hello\\tworld" > {pairs}'], check=True)
    output = tmp_path / "models" / "test-embed"
    result = subprocess.run(
        [
            "make",
            "-C",
            str(ROOT),
            "embed-finetune",
            f"DATA={pairs}",
            f"OUTPUT={output}",
            "EPOCHS=1",
            "BATCH=8",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = read_manifest(output)
    assert manifest.training["pairs"] == 1 and manifest.training["epochs"] == 1 and manifest.dim == 384
