"""Pipeline gates: `ndcg@10>=+0.5` (signed: fine-tuned minus base, in points) or `ndcg@10>=0.6` (unsigned:
the metric's own 0..1 scale). One expression per `--gate`, so a CI line reads like the requirement."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embedops.errors import ConfigError

_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_EXPRESSION = re.compile(r"^\s*([a-z]+(?:@\d+)?)\s*(>=|<=|>|<)\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float
    relative: bool  # True: threshold is a change in points against the base model

    def check(self, model: str, scores: Mapping[str, float], base: Mapping[str, float]) -> dict[str, Any]:
        """The outcome for one model: its value, whether it passed, and a sentence saying by how much."""
        if self.relative:
            value = (scores[self.metric] - base[self.metric]) * 100
            shown = f"{self.metric} {value:+.2f} points vs base"
            unit = " points"
        else:
            value = scores[self.metric]
            shown = f"{self.metric} {value:.4f}"
            unit = ""
        passed = bool(_OPERATORS[self.op](value, self.threshold))
        margin = abs(value - self.threshold)
        how = f"{margin:.4g}{unit} {'to spare' if passed else 'short'}"
        return {
            "gate": self.text,
            "model": model,
            "value": round(value, 6),
            "passed": passed,
            "detail": f"{model}: {shown} ({how})",
        }


def parse_gate(text: str) -> Gate:
    """Parse one `--gate`; a threshold with a sign is relative (points), without one absolute (0..1)."""
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


def check_metrics_available(gates: list[Gate], available: list[str], task_kind: str) -> None:
    """Refuse a gate on a metric the evaluation does not report, before any training starts."""
    for gate in gates:
        if gate.metric not in available:
            raise ConfigError(
                f"--gate {gate.text!r}: a {task_kind} evaluation reports {', '.join(available)}; "
                f"{gate.metric} is not among them"
            )
