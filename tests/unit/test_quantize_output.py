"""What `embedops quantize` shows while it runs: each stage numbered as it starts, named bars on a terminal
for the stages that loop over texts, and ONNX Runtime's own logging only with --verbose."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from embedops.cli import main

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so bars meant for people are drawn into it."""

    def isatty(self) -> bool:
        return True


def stages(stderr: str) -> list[tuple[int, int, str]]:
    return [
        (int(n), int(total), text) for n, total, text in re.findall(r"^quantize \[(\d+)/(\d+)\] (.*)$", stderr, re.M)
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--dtype", "int8"], ["loading", "exporting", "calibrating", "quantizing to int8", "checking", "measuring"]),
        (["--int8-scheme", "dynamic"], ["loading", "exporting", "quantizing to int8", "checking", "measuring"]),
        (["--dtype", "int4"], ["loading", "exporting", "quantizing to int4", "checking", "measuring"]),
        (["--dtype", "fp16"], ["loading", "converting the weights to fp16", "checking", "measuring"]),
    ],
)
def test_every_stage_is_announced_in_order(
    flags: list[str], expected: list[str], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "int4" in flags:
        pytest.importorskip("onnx_ir", reason="ONNX Runtime's 4-bit quantizer needs onnx-ir")
    argv = ["quantize", "--model-path", str(tiny_model_dir), "--output", str(tmp_path / "q"), "--check-samples", "8"]
    assert main([*argv, *flags]) == 0
    captured = capsys.readouterr()
    announced = stages(captured.err)
    assert [(n, total) for n, total, _ in announced] == [(n, len(expected)) for n in range(1, len(expected) + 1)]
    assert all(text.startswith(start) for (_, _, text), start in zip(announced, expected, strict=True))
    assert captured.err.count("\n") == len(expected), "nothing but the stages (bars are drawn on terminals only)"
    assert "drift check measured" in captured.out


def test_the_stages_that_loop_draw_named_bars_on_a_terminal(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["quantize", "--model-path", str(tiny_model_dir), "--output", str(tmp_path / "q")]) == 0
    drawn = terminal.getvalue()
    bars = {match.group(1) for match in re.finditer(r"(?:^|[\r\n])([^\r\n]+?): +\d+%\|", drawn)}
    assert bars == {
        "quantize: calibrating",
        "quantize: drift, source",
        "quantize: drift, quantized",
        "quantize: output ranges",
    }
    assert "Batches" not in drawn


def quantize_int4(model: Path, output: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """int4 in a fresh process: ONNX Runtime's 4-bit quantizer is imported (and configures logging) there."""
    code = (
        "import logging, sys\nfrom embedops.cli import main\n"
        "root = logging.getLogger(); before = (root.level, list(root.handlers))\n"
        "code = main(sys.argv[1:])\n"
        "print('root logger kept' if (root.level, root.handlers) == before else 'root logger changed')\n"
        "sys.exit(code)\n"
    )
    argv = ["quantize", "--model-path", str(model), "--output", str(output), "--dtype", "int4", *flags]
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_onnx_runtime_logs_only_with_verbose(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx_ir", reason="ONNX Runtime's 4-bit quantizer needs onnx-ir")
    quiet = quantize_int4(tiny_model_dir, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "root logger kept" in quiet.stdout  # its import's logging.basicConfig(level=INFO) is undone
    assert [line for line in quiet.stderr.splitlines() if not line.startswith("quantize [")] == []

    verbose = quantize_int4(tiny_model_dir, tmp_path / "verbose", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "onnxruntime.quantization.matmul_nbits_quantizer: The opset of the input model" in verbose.stderr
    assert len([line for line in verbose.stderr.splitlines() if line.startswith("onnxruntime.")]) > 100
