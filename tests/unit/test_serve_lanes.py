"""How an ONNX Runtime CPU engine shares out its cores: lanes, threads per lane, sessions."""

from __future__ import annotations

import pytest

from embedops.serve.lanes import MAX_AUTO_LANES, CpuLanes, lanes_on


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
def test_lanes_share_out_the_cores(cores: int, concurrency: int | None, expected: tuple) -> None:
    layout = lanes_on(cores, concurrency)
    assert (layout.lanes, layout.threads, layout.sessions, layout.wide_threads) == expected


def test_a_layout_without_a_wide_session_opens_none() -> None:
    """A corpus job's batches always have company, so it asks for no session on every core."""
    assert lanes_on(2, wide=False) == CpuLanes(lanes=2, threads=1, cores=2, wide=False)
    assert lanes_on(2, wide=False).wide_threads is None
