"""Quality gates for `embedops eval` and `embedops pipeline`: one `Gate` type, written in either of two forms.

- `embedops eval --fail-below ndcg@10=0.5` is a floor on the metric's own scale (0..1) for the models under
  test (every model after the first, or the only one); `--max-drop ndcg@10=1.0` is how many points (x100),
  as the comparison table shows them, a model may lose against the first.
- `embedops pipeline --gate ndcg@10>=+0.5` (signed: a change in points against the base model) or
  `--gate ndcg@10>=0.6` (unsigned: the 0..1 scale), one expression per flag so a CI line reads like the
  requirement.

Both forms parse to the same Gate, so what a threshold means and how it is compared is written once.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from embedops.errors import ConfigError, GateFailedError

_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_BROKEN = {">=": "<", ">": "<=", "<=": ">", "<": ">="}
_EXPRESSION = re.compile(r"^\s*([a-z]+(?:@\d+)?)\s*(>=|<=|>|<)\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


@dataclass(frozen=True)
class GateOutcome:
    """One gate checked on one model, as pipeline.json records it."""

    gate: str
    model: str
    value: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Gate:
    text: str  # as given, for messages
    metric: str
    op: str
    threshold: float
    relative: bool  # True: the threshold is a change in points (x100) against the baseline model

    def measure(self, scores: Mapping[str, float], baseline: Mapping[str, float]) -> float:
        """The gated value: the score itself, or its change in points against the baseline."""
        if self.relative:
            return (scores[self.metric] - baseline[self.metric]) * 100
        return scores[self.metric]

    def holds(self, value: float) -> bool:
        """Whether `value` meets the threshold; NaN never does."""
        return bool(_OPERATORS[self.op](value, self.threshold))

    def check(self, model: str, scores: Mapping[str, float], baseline: Mapping[str, float]) -> GateOutcome:
        """The outcome for one model: its value, whether it passed, and a sentence saying by how much."""
        value = self.measure(scores, baseline)
        if self.relative:
            shown, unit = f"{self.metric} {value:+.2f} points vs base", " points"
        else:
            shown, unit = f"{self.metric} {value:.4f}", ""
        passed = self.holds(value)
        how = f"{abs(value - self.threshold):.4g}{unit} {'to spare' if passed else 'short'}"
        return GateOutcome(self.text, model, round(value, 6), passed, f"{model}: {shown} ({how})")


def parse_gate(text: str) -> Gate:
    """Parse one pipeline `--gate`; a threshold with a sign is relative (points), without one absolute (0..1)."""
    match = _EXPRESSION.match(text.lower())
    if match is None:
        raise ConfigError(
            f"--gate {text!r}: expected METRIC OP NUMBER, e.g. ndcg@10>=+0.5 (gain in points over the base "
            "model) or ndcg@10>=0.6 (absolute, 0..1)"
        )
    metric, op, sign, number = match.groups()
    relative = bool(sign)
    threshold = float(sign + number)
    if relative and abs(threshold) > 100:
        raise ConfigError(f"--gate {text!r}: a change in points lies within -100..+100")
    if not relative and threshold > 1:
        raise ConfigError(
            f"--gate {text!r}: absolute thresholds are on the metric's 0..1 scale; "
            f"for a gain in points write {metric}{op}+{number}"
        )
    return Gate(text.strip(), metric, op, threshold, relative)


def check_metrics_available(gates: Iterable[Gate], available: list[str], task_kind: str) -> None:
    """Refuse a gate on a metric the evaluation does not report, before any training starts."""
    for gate in gates:
        if gate.metric not in available:
            raise ConfigError(
                f"--gate {gate.text!r}: a {task_kind} evaluation reports {', '.join(available)}; "
                f"{gate.metric} is not among them"
            )


@dataclass(frozen=True)
class Gates:
    """`embedops eval`'s gates: floors on the models under test, drops against the first model."""

    floors: tuple[Gate, ...] = ()
    drops: tuple[Gate, ...] = ()

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(gate.metric for gate in (*self.floors, *self.drops)))


def _parse_assignments(values: Iterable[str], flag: str) -> dict[str, tuple[str, float]]:
    """`["ndcg@10=0.5"]` -> {"ndcg@10": ("ndcg@10=0.5", 0.5)}, the last one per metric winning, with a
    message naming the flag on bad input."""
    parsed: dict[str, tuple[str, float]] = {}
    for value in values:
        metric, sep, number = value.partition("=")
        try:
            threshold = float(number)
        except ValueError:
            threshold = None
        if not sep or not metric.strip() or threshold is None:
            raise ConfigError(f"{flag} {value!r}: expected METRIC=NUMBER, e.g. {flag} ndcg@10=0.5")
        parsed[metric.strip().lower()] = (value.strip(), threshold)
    return parsed


def make_gates(fail_below: Iterable[str] = (), max_drop: Iterable[str] = (), *, models: int) -> Gates:
    """Parse and sanity-check `embedops eval`'s gate flags before any model is loaded."""
    floors, drops = _parse_assignments(fail_below, "--fail-below"), _parse_assignments(max_drop, "--max-drop")
    for metric, (_, value) in floors.items():
        if abs(value) > 1:
            raise ConfigError(
                f"--fail-below {metric}={value:g}: floors are on the metric's 0..1 scale "
                f"(did you mean {value / 100:g}?)"
            )
    for metric, (_, value) in drops.items():
        if value < 0:
            raise ConfigError(f"--max-drop {metric}={value:g}: a drop is a non-negative number of points")
    if drops and models < 2:
        raise ConfigError("--max-drop compares against the first --model; pass at least two --model")
    return Gates(
        tuple(Gate(text, metric, ">=", value, relative=False) for metric, (text, value) in floors.items()),
        # A drop of at most N points is a change of at least -N.
        tuple(Gate(text, metric, ">=", -value, relative=True) for metric, (text, value) in drops.items()),
    )


def violations(scores: Sequence[tuple[str, Mapping[str, float]]], gates: Gates) -> list[str]:
    """Every broken threshold, as short phrases; `scores` is (model name, metrics), baseline first."""
    found: list[str] = []
    (baseline_name, baseline), candidates = scores[0], scores[1:]
    for name, metrics in candidates or scores:
        for gate in gates.floors:
            value = gate.measure(metrics, baseline)
            if not gate.holds(value):
                found.append(f"{name} {gate.metric} {value:.4f} {_BROKEN[gate.op]} {gate.threshold:g}")
    for name, metrics in candidates:
        for gate in gates.drops:
            change = gate.measure(metrics, baseline)
            if not gate.holds(change):
                found.append(
                    f"{name} {gate.metric} dropped {-change:.2f} points vs {baseline_name} (max {-gate.threshold:g})"
                )
    return found


def enforce(scores: Sequence[tuple[str, Mapping[str, float]]], gates: Gates) -> None:
    """Raise GateFailedError (exit 1) with one line naming every violation."""
    broken = violations(scores, gates)
    if broken:
        raise GateFailedError("gate failed: " + "; ".join(broken))
