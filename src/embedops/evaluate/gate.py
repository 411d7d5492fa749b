"""The regression gate: absolute floors (`--fail-below`) and drops against the baseline (`--max-drop`).

Floors take the metric's own scale (0..1); drops are in points (x100), as the comparison table shows.
A floor applies to the models under test: every model after the first, or the only one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from embedops.errors import ConfigError, GateFailedError


@dataclass(frozen=True)
class Gates:
    fail_below: dict[str, float] = field(default_factory=dict)
    max_drop: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys([*self.fail_below, *self.max_drop]))


def parse_thresholds(values: Iterable[str], flag: str) -> dict[str, float]:
    """`["ndcg@10=0.5"]` -> {"ndcg@10": 0.5}, with a message naming the flag on bad input."""
    parsed: dict[str, float] = {}
    for value in values:
        metric, sep, number = value.partition("=")
        try:
            threshold = float(number)
        except ValueError:
            threshold = None
        if not sep or not metric.strip() or threshold is None:
            raise ConfigError(f"{flag} {value!r}: expected METRIC=NUMBER, e.g. {flag} ndcg@10=0.5")
        parsed[metric.strip().lower()] = threshold
    return parsed


def make_gates(fail_below: Iterable[str] = (), max_drop: Iterable[str] = (), *, models: int) -> Gates:
    """Parse and sanity-check gate flags before any model is loaded."""
    gates = Gates(parse_thresholds(fail_below, "--fail-below"), parse_thresholds(max_drop, "--max-drop"))
    for metric, value in gates.fail_below.items():
        if abs(value) > 1:
            raise ConfigError(
                f"--fail-below {metric}={value:g}: floors are on the metric's 0..1 scale "
                f"(did you mean {value / 100:g}?)"
            )
    for metric, value in gates.max_drop.items():
        if value < 0:
            raise ConfigError(f"--max-drop {metric}={value:g}: a drop is a non-negative number of points")
    if gates.max_drop and models < 2:
        raise ConfigError("--max-drop compares against the first --model; pass at least two --model")
    return gates


def violations(scores: Sequence[tuple[str, Mapping[str, float]]], gates: Gates) -> list[str]:
    """Every broken threshold, as short phrases; `scores` is (model name, metrics), baseline first."""
    found: list[str] = []
    (baseline_name, baseline), candidates = scores[0], scores[1:]
    for name, metrics in candidates or scores:
        for metric, floor in gates.fail_below.items():
            if not metrics[metric] >= floor:
                found.append(f"{name} {metric} {metrics[metric]:.4f} < {floor:g}")
    for name, metrics in candidates:
        for metric, allowed in gates.max_drop.items():
            drop = (baseline[metric] - metrics[metric]) * 100
            if not drop <= allowed:
                found.append(f"{name} {metric} dropped {drop:.2f} points vs {baseline_name} (max {allowed:g})")
    return found


def enforce(scores: Sequence[tuple[str, Mapping[str, float]]], gates: Gates) -> None:
    """Raise GateFailedError (exit 1) with one line naming every violation."""
    broken = violations(scores, gates)
    if broken:
        raise GateFailedError("gate failed: " + "; ".join(broken))
