"""How an ONNX Runtime CPU engine shares out its cores: lanes, threads per lane, sessions."""

from __future__ import annotations

import pytest

from embedops.serve.lanes import MAX_AUTO_LANES, batch_job_lanes, cores_per_worker, lanes_on


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
