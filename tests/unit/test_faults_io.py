"""I/O failures end in one `error:` line and exit 2, leaving nothing half-written: a full disk, a read-only
output directory, a closed pipe."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest
from faults_common import EMBEDOPS, write_pairs


def run_limited(
    command: list[str], *, file_bytes: int | None = None, read_only: bool = False
) -> subprocess.CompletedProcess:
    """Run a command with files capped at `file_bytes` (a full disk, as writes see it) or without the
    privilege to write into read-only directories (root otherwise writes anywhere)."""

    def limit() -> None:
        if file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))

    if read_only and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(word in result.stderr for word in words), result.stderr[-1000:]


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "writer"), [("int8", "onnx"), ("fp16", "safetensors")])
def test_quantize_on_a_full_disk_fails_in_one_line_and_leaves_nothing(
    tmp_path: Path, tiny_model_dir: Path, dtype: str, writer: str
) -> None:
    """Both writers: ONNX's (an OSError) and safetensors' (a SafetensorError carrying the OS message)."""
    out = tmp_path / "out"
    out.mkdir()
    command = [*EMBEDOPS, "quantize", "--model-path", str(tiny_model_dir), "--output", str(out / "q"), "--dtype", dtype]
    result = run_limited(command, file_bytes=64 << 10)
    assert_one_line_error(result, "File too large", *(["model weights"] if writer == "safetensors" else []))
    assert list(out.iterdir()) == [], "no artifact and no staging directory is left behind"


def test_prep_into_a_read_only_directory_fails_in_one_line(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv", 20)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        command = [*EMBEDOPS, "prep", "--data", str(data), "--output", str(locked / "clean.tsv")]
        assert_one_line_error(run_limited(command, read_only=True), "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_prep_on_a_full_disk_fails_in_one_line(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv", 2000)
    out = tmp_path / "out"
    out.mkdir()
    command = [*EMBEDOPS, "prep", "--data", str(data), "--output", str(out / "clean.tsv")]
    assert_one_line_error(run_limited(command, file_bytes=4 << 10), "File too large")
    assert not (out / "clean.tsv").exists()


def test_info_into_a_closed_pipe_is_one_line_not_a_traceback(tiny_model_dir: Path) -> None:
    info = subprocess.Popen(
        [*EMBEDOPS, "info", str(tiny_model_dir), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert info.stdout is not None and info.stderr is not None
    info.stdout.close()  # what `| head` does once it has its lines
    err = info.stderr.read().decode()
    assert info.wait(timeout=120) == 2
    assert "Traceback" not in err and "broken pipe" in err
