"""How many engine batches run at once on a CPU, how many ONNX Runtime threads each one gets, and
how many tokens a batch holds.

A transformer forward on a short batch is many small operators, and ONNX Runtime parallelizes each of
them over its intra-op threads: on two cores the second thread mostly waits at the operators' ends.
Two batches at once, one thread each, keep both cores busy instead. Measured on a 2-core AVX-512
VNNI/AMX Xeon (all-MiniLM-L6-v2, batches of 8 x 54 tokens, medians of 5 alternating 3 s windows):
the batch-invariant int8 graph ran 323 texts/s as one batch on two threads and 432 as two batches on
one thread each (1.34x); ONNX Runtime's dynamic int8 graph 435 and 488 (1.12x). One text alone took
5.3 ms on one thread against 4.8 ms on two. Lanes stop at `MAX_AUTO_LANES` so that, on a large
machine, one batch still spreads over several cores when the server is not busy; lanes of several
threads each have a session of their own, and a batch that runs alone takes one more session on every
core (serve/onnx_forward.py). Served, against one batch at a time on both cores with 2048-token
batches (3 alternating rounds): 395 against 299 texts/s at 16 clients of 8 texts, one text alone 5.7
against 5.9 ms p50.

A batch job (`embedops embed`, a Ray actor, `eval`; embed/encoder.py) runs a one-thread lane per
core on one session (`batch_job_lanes`): 10,000 WikiQA passages in batches of 32, three alternating
rounds, 682 against 802 passages/s median (one batch at a time on both cores against two lanes),
shards byte-identical; peak RSS 361 against 426 MiB.

Small batches are faster on a CPU, for long inputs and short alike. Served on the same machine with
two lanes (16 clients of 8 texts of about 50 tokens, three alternating rounds): 315 texts/s at 2048
padded tokens a batch, 332 at 1024 and 359 at 512, the same order in every round; in process, two
one-thread lanes ran batches of 8 such texts at 445 texts/s and of 32 at 384. Inputs of 256 tokens
ran at 11,300 tokens/s in batches of 2 against 7,300 in batches of 32 (one batch on two threads).
An accelerator keeps 2048.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MAX_AUTO_LANES = 4
CPU_BATCH_TOKENS = 512
ACCELERATOR_BATCH_TOKENS = 2048


def cores_per_worker(workers: int = 1) -> int:
    """The cores this process may run on (its CPU affinity, lowered to its cgroup's CPU quota), shared
    out between `workers` processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores // max(1, workers))


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use (a Kubernetes CPU limit, `docker run --cpus`), or None when
    it has no quota. Affinity does not show a quota: lanes sized by it alone would run more threads than
    the quota lets run at once, and every batch would wait for CFS throttling."""
    groups: dict[str, str] = {}  # controller ("" for cgroup v2) -> this process's group path
    try:
        for line in membership.read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            for controller in controllers.split(","):
                groups[controller] = group.lstrip("/")
    except (OSError, ValueError):
        pass
    for directory in (root / groups.get("", ""), root):  # cgroup v2: "max 100000" or "200000 100000"
        try:
            limit, period = (directory / "cpu.max").read_text().split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        except (OSError, ValueError):
            continue
    for directory in (root / "cpu" / groups.get("cpu", ""), root / "cpu"):  # cgroup v1: -1 when unlimited
        try:
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
    return None


def auto_lanes(cores: int) -> int:
    """Batches at once on an ONNX Runtime CPU engine when `--concurrency` is not given."""
    return max(1, min(cores, MAX_AUTO_LANES))


@dataclass(frozen=True)
class CpuLanes:
    """An ONNX Runtime CPU engine's layout: batches at once, and intra-op threads for each."""

    lanes: int
    threads: int
    cores: int
    # Whether a batch that runs alone gets a session on every core: a server's lone request does; a
    # batch job's batches always have company, so the session's memory would be spent for nothing.
    wide: bool = True

    @property
    def sessions(self) -> int:
        """Sessions to open: one per lane when lanes have several threads (concurrent runs of one
        session share its thread pool), else one that every lane shares."""
        return self.lanes if self.threads > 1 else 1

    @property
    def wide_threads(self) -> int | None:
        """Threads of one more session, on every core, for a batch that runs alone (none with one lane)."""
        return self.cores if self.wide and self.cores > self.threads else None


def lanes_on(cores: int, concurrency: int | None = None) -> CpuLanes:
    """A server's `concurrency` lanes (default: one per core, at most `MAX_AUTO_LANES`) sharing `cores`."""
    lanes = concurrency or auto_lanes(cores)
    return CpuLanes(lanes, max(1, cores // lanes), cores)


def cpu_lanes(concurrency: int | None, workers: int = 1) -> CpuLanes:
    """The lanes of one of `workers` server processes, on its share of this process's cores."""
    return lanes_on(cores_per_worker(workers), concurrency)


def batch_job_lanes(cores: int | None = None) -> CpuLanes:
    """A batch job's layout (`embedops embed`, a Ray actor, `eval`): a one-thread lane per core, all on
    one session (one copy of the weights) and none for lone batches. Throughput is what counts there,
    and one thread per batch gave the most of it (above); no request waits on one batch's latency, so
    lanes are not capped at `MAX_AUTO_LANES`. `cores`: this process's, unless given (a Ray actor's)."""
    cores = cores or cores_per_worker()
    return CpuLanes(lanes=cores, threads=1, cores=cores, wide=False)


def batch_tokens(max_batch_tokens: int | None, device: str) -> int:
    """Most padded tokens in one engine batch: as asked, else by where the engine runs."""
    return max_batch_tokens or (CPU_BATCH_TOKENS if device == "cpu" else ACCELERATOR_BATCH_TOKENS)
