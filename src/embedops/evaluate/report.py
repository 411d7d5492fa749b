"""Present an EvalResult: the terminal table, `--json`, and `--report` (markdown plus a PNG chart)."""

from __future__ import annotations

import json
from pathlib import Path

from embedops.errors import ConfigError, MissingDependencyError
from embedops.evaluate.runner import EvalResult

# At most this many metrics in the chart: the main ones, which every task lists first.
_CHART_METRICS = 6


def _header(result: EvalResult) -> str:
    size = ", ".join(f"{value} {key}" for key, value in result.size.items())
    return f"{result.dataset} ({result.kind}: {size})"


def _rows(result: EvalResult) -> list[list[str]]:
    """Metric rows, scores x100; later models also show their delta in points against the first."""
    baseline = result.models[0].metrics
    rows = []
    for metric in result.metrics:
        row = [metric, f"{baseline[metric] * 100:.2f}"]
        for model in result.models[1:]:
            delta = (model.metrics[metric] - baseline[metric]) * 100
            row.append(f"{model.metrics[metric] * 100:.2f} ({delta:+.2f})")
        rows.append(row)
    rows.append(["seconds", *(f"{model.seconds:.1f}" for model in result.models)])
    return rows


def format_table(result: EvalResult) -> str:
    """Side-by-side comparison for the terminal, first model as baseline."""
    header = ["metric", *(model.name for model in result.models)]
    rows = [header, *_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{_header(result)} - scores x100, (delta) in points vs {result.models[0].name}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(result: EvalResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")


def check_report_path(path: str | Path) -> Path:
    """Refuse a report name we cannot honour before the models run, not after."""
    path = Path(path)
    if path.suffix.lower() != ".md":
        raise ConfigError(f"--report {path}: expected a .md file (the chart is written beside it as .png)")
    return path


def write_report(result: EvalResult, path: str | Path) -> Path:
    """A markdown report with the table and a bar chart saved beside it as PNG; returns the chart path."""
    path = check_report_path(path)
    chart = path.with_suffix(".png")
    _bar_chart(result, chart)
    header = ["metric", *(f"`{model.name}`" for model in result.models)]
    lines = [
        f"# Evaluation: {_header(result)}",
        "",
        f"Scores x100; (delta) in points against the baseline `{result.models[0].name}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in _rows(result)),
        "",
        f"![main metrics]({chart.name})",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return chart


def _bar_chart(result: EvalResult, path: Path) -> None:
    """Grouped bars: the main metrics on the x axis, one bar per model."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "train") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = result.metrics[:_CHART_METRICS]
    x = np.arange(len(metrics))
    width = 0.8 / len(result.models)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) + 2), 4.5))
    for index, model in enumerate(result.models):
        values = [model.metrics[m] * 100 for m in metrics]
        bars = axes.bar(x + (index - (len(result.models) - 1) / 2) * width, values, width, label=model.name)
        axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(x, metrics)
    axes.set_ylabel("score x100")
    axes.set_title(_header(result))
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
