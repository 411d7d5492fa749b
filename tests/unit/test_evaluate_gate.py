"""The regression gate: parsing, floors on the models under test, drops against the baseline."""

from __future__ import annotations

import pytest

from embedops.errors import ConfigError, GateFailedError
from embedops.evaluate.gate import enforce, make_gates, violations

BASE = ("base", {"ndcg@10": 0.60, "mrr@10": 0.55})
BETTER = ("better", {"ndcg@10": 0.62, "mrr@10": 0.56})
WORSE = ("worse", {"ndcg@10": 0.58, "mrr@10": 0.549})


def test_floor_applies_to_models_under_test_not_the_baseline() -> None:
    gates = make_gates(["ndcg@10=0.61"], models=2)
    assert violations([BASE, BETTER], gates) == []
    assert violations([BASE, WORSE], gates) == ["worse ndcg@10 0.5800 < 0.61"]
    assert violations([BASE], make_gates(["ndcg@10=0.61"], models=1)) == ["base ndcg@10 0.6000 < 0.61"]


def test_drop_is_measured_in_points_against_the_first_model() -> None:
    gates = make_gates(max_drop=["ndcg@10=1.5", "mrr@10=0.5"], models=2)
    assert violations([BASE, WORSE], gates) == ["worse ndcg@10 dropped 2.00 points vs base (max 1.5)"]
    with pytest.raises(GateFailedError, match=r"^gate failed: worse ndcg@10 dropped") as failure:
        enforce([BASE, WORSE], gates)
    assert failure.value.exit_code == 1
    enforce([BASE, BETTER], gates)


def test_nan_never_passes_a_floor() -> None:
    gates = make_gates(["spearman=0.1"], models=1)
    assert violations([("m", {"spearman": float("nan")})], gates) == ["m spearman nan < 0.1"]


@pytest.mark.parametrize(
    ("fail_below", "max_drop", "models", "message"),
    [
        (["ndcg@10"], [], 1, "expected METRIC=NUMBER"),
        (["ndcg@10=high"], [], 1, "expected METRIC=NUMBER"),
        (["ndcg@10=55"], [], 1, r"did you mean 0\.55"),
        ([], ["ndcg@10=-1"], 2, "non-negative"),
        ([], ["ndcg@10=1"], 1, "at least two --model"),
    ],
)
def test_bad_gate_flags_are_config_errors(fail_below: list, max_drop: list, models: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_gates(fail_below, max_drop, models=models)
