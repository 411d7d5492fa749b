"""Admission places: a full server refuses the next request at once, with Retry-After."""

from __future__ import annotations

import pytest

from embedops.errors import RequestError
from embedops.serve.admission import Places
from embedops.serve.metrics import ServeMetrics


def test_a_full_server_refuses_at_once_with_retry_after() -> None:
    places = Places(2, ServeMetrics())
    with places.hold(), places.hold():
        with pytest.raises(RequestError) as refused, places.hold():
            pass
        assert refused.value.http_status == 429 and refused.value.retry_after == 1
        assert refused.value.code == "queue_full"
    with places.hold():
        assert places.taken == 1
    assert places.taken == 0


def test_in_flight_gauge_counts_holders_only() -> None:
    metrics = ServeMetrics()
    places = Places(1, metrics)
    seen = []
    with places.hold():
        with pytest.raises(RequestError), places.hold():
            pass
        seen.append(metrics.registry.get_sample_value("embedops_in_flight_requests"))
    seen.append(metrics.registry.get_sample_value("embedops_in_flight_requests"))
    assert seen == [1.0, 0.0]
