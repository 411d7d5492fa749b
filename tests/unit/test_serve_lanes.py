"""How an ONNX Runtime CPU engine shares out its cores: lanes, threads per lane, sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedops.serve.lanes import MAX_AUTO_LANES, batch_job_lanes, cgroup_cpu_quota, cores_per_worker, lanes_on


@pytest.mark.parametrize(
    ("cores", "concurrency", "expected"),
    [
        (2, None, (2, 1, 1, 2)),  # a lane per core sharing one session, and a wide one for a lone batch
        (1, None, (1, 1, 1, None)),  # one core: nothing to widen to
        (8, None, (MAX_AUTO_LANES, 2, MAX_AUTO_LANES, 8)),  # lanes of two threads each own a session
        (2, 1, (1, 2, 1, None)),  # one lane already runs on every core
        (4, 3, (3, 1, 1, 4)),  # a core left over goes to the wide session only
    ],
)
def test_lanes_share_out_the_cores(
    cores: int, concurrency: int | None, expected: tuple[int, int, int, int | None]
) -> None:
    layout = lanes_on(cores, concurrency)
    assert (layout.lanes, layout.threads, layout.sessions, layout.wide_threads) == expected


def test_a_batch_job_runs_a_one_thread_lane_per_core_on_one_session() -> None:
    """Throughput, not one batch's latency: every core a lane, one copy of the weights, no wide session."""
    layout = batch_job_lanes(8)
    assert (layout.lanes, layout.threads, layout.sessions, layout.wide_threads) == (8, 1, 1, None)
    assert batch_job_lanes().cores == cores_per_worker()


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        ("0::/kubepods/pod1\n", {"kubepods/pod1/cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, in its group
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # v2 without a quota
        (
            "2:cpu,cpuacct:/docker/abc\n",
            {"cpu/docker/abc/cpu.cfs_quota_us": "200000", "cpu/docker/abc/cpu.cfs_period_us": "100000"},
            2.0,
        ),
        ("2:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1, none
        ("0::/\n", {}, None),  # no cpu controller mounted
    ],
)
def test_the_cgroup_cpu_quota_is_read_in_either_layout(
    tmp_path: Path, membership: str, files: dict[str, str], expected: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(membership)
    assert cgroup_cpu_quota(tmp_path, tmp_path / "self-cgroup") == expected


def test_a_process_under_a_cpu_quota_sizes_its_lanes_by_the_quota() -> None:
    """A real cgroup (v1 cpu controller, as root) limited to one CPU: the process in it sees one core."""
    group = Path("/sys/fs/cgroup/cpu") / f"embedops-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"no cgroup v1 cpu controller to write to here: {exc}")
    try:
        (group / "cpu.cfs_quota_us").write_text(str(int((group / "cpu.cfs_period_us").read_text())))
        probe = "from embedops.serve.lanes import *; print(cores_per_worker(), cpu_lanes(None).lanes)"
        shell = f'echo $$ > {group}/tasks && exec {sys.executable} -c "{probe}"'
        out = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout.split()
        assert out == ["1", "1"]
    finally:
        group.rmdir()
