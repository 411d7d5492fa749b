"""Quality gates: `embedops eval`'s floors and drops and the pipeline's expressions parse to one Gate type;
floors apply to the models under test, drops and signed thresholds are points against the baseline."""

from __future__ import annotations

import pytest

from embedops.errors import ConfigError, GateFailedError
from embedops.evaluate.gate import (
    Gate,
    GateOutcome,
    check_metrics_available,
    enforce,
    make_gates,
    parse_gate,
    violations,
)

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


def test_both_forms_parse_to_the_same_gate() -> None:
    floor = make_gates(["NDCG@10=0.6"], models=1).floors[0]
    expression = parse_gate("ndcg@10 >= 0.6")
    assert isinstance(floor, Gate) and isinstance(expression, Gate)
    assert (floor.metric, floor.op, floor.threshold, floor.relative) == ("ndcg@10", ">=", 0.6, False)
    assert (expression.metric, expression.op, expression.threshold, expression.relative) == (
        "ndcg@10",
        ">=",
        0.6,
        False,
    )
    drop, signed = make_gates(max_drop=["ndcg@10=1.5"], models=2).drops[0], parse_gate("ndcg@10>=-1.5")
    assert (
        (drop.op, drop.threshold, drop.relative) == (signed.op, signed.threshold, signed.relative) == (">=", -1.5, True)
    )
    base = {"ndcg@10": 0.60}
    for tuned, allowed in ((0.58, False), (0.59, True), (0.62, True), (float("nan"), False)):
        for gate in (drop, signed):
            assert gate.holds(gate.measure({"ndcg@10": tuned}, base)) is allowed, (gate, tuned)


def test_pipeline_gate_outcomes_say_by_how_much() -> None:
    gained = parse_gate("ndcg@10>=+50").check("fine-tuned", {"ndcg@10": 0.8054}, {"ndcg@10": 0.74})
    assert gained == GateOutcome(
        "ndcg@10>=+50", "fine-tuned", 6.54, False, "fine-tuned: ndcg@10 +6.54 points vs base (43.46 points short)"
    )
    absolute = parse_gate("ndcg@10>0.6").check("quantized", {"ndcg@10": 0.7}, {"ndcg@10": 0.9})
    assert absolute.passed and absolute.detail == "quantized: ndcg@10 0.7000 (0.1 to spare)"
    assert not parse_gate("mrr@10<=0.5").check("m", {"mrr@10": 0.7}, {"mrr@10": 0.1}).passed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ndcg@10>=60", r"for a gain in points write ndcg@10>=\+60"),
        ("ndcg@10>=+200", r"within -100\.\.\+100"),
        ("ndcg@10=0.5", "expected METRIC OP NUMBER"),
        ("ndcg@10 at least 0.5", "expected METRIC OP NUMBER"),
    ],
)
def test_bad_pipeline_gates_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_gate(text)
    assert error.value.exit_code == 2


def test_a_gate_on_a_metric_the_evaluation_lacks_is_refused() -> None:
    check_metrics_available([parse_gate("ndcg@10>=+1")], ["mrr@10", "ndcg@10"], "beir")
    with pytest.raises(ConfigError, match="a beir evaluation reports mrr@10, ndcg@10; recall@5 is not among them"):
        check_metrics_available([parse_gate("recall@5>=0.5")], ["mrr@10", "ndcg@10"], "beir")
