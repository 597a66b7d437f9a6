"""sweep.png: per axis, the cells' accuracy difference (ensemble - baseline) with its 95% interval
across seeds, zero marked (top row); below, each side's mean accuracy with the chance level marked.
Cells that share their other settings are joined by a line."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ensemble.analysis.repeats import RepeatsSummary
from ensemble.report.plots import plt, save
from ensemble.sweeps.record import SweepRecord


def _series(record: SweepRecord, axis_index: int) -> dict[str, list[tuple[int, RepeatsSummary]]]:
    """The finished cells' summaries grouped by their other axes' values: {label: [(position on this axis,
    summary)]}."""
    axis = record.axes[axis_index]
    groups: dict[str, list[tuple[int, RepeatsSummary]]] = defaultdict(list)
    for cell in record.cells:
        if cell.summary is None:
            continue
        others = ", ".join(f"{a.key}={json.dumps(cell.settings[a.key])}" for i, a in enumerate(record.axes)
                           if i != axis_index)
        position = [json.dumps(v) for v in axis.values].index(json.dumps(cell.settings[axis.key]))
        groups[others or "all cells"].append((position, cell.summary))
    return groups


def _difference_panel(ax, record: SweepRecord, axis_index: int) -> None:
    for label, points in _series(record, axis_index).items():
        xs, means, low, high = [], [], [], []
        for x, summary in sorted(points, key=lambda p: p[0]):
            figure = summary.figures["accuracy_difference"]
            if figure.mean is None:
                continue
            lo, hi = figure.ci95 if figure.ci95 is not None else (figure.mean, figure.mean)
            xs.append(x)
            means.append(figure.mean)
            low.append(figure.mean - lo)
            high.append(hi - figure.mean)
        ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=5, label=label)
    ax.axhline(0.0, color="black", linewidth=1, linestyle="--", label="no difference")
    axis = record.axes[axis_index]
    ax.set_xticks(range(len(axis.values)), [json.dumps(v) for v in axis.values])
    ax.set(xlabel=axis.key, ylabel="ensemble - baseline accuracy", title=f"difference (95% CI) by {axis.key}")
    ax.legend(fontsize=7)


def _accuracy_panel(ax, record: SweepRecord, axis_index: int) -> None:
    chance = [run.chance_accuracy for cell in record.cells for run in cell.runs if run.chance_accuracy is not None]
    styles = {"ensemble_test_accuracy": ("ensemble", "tab:blue"), "baseline_test_accuracy": ("baseline", "black"),
              "untrained_test_accuracy": ("untrained", "tab:red")}
    for group, (label, points) in enumerate(_series(record, axis_index).items()):
        points = sorted(points, key=lambda p: p[0])
        line = {"marker": "os^Dv"[group % 5], "linestyle": ["-", "--", "-.", ":"][group % 4]}  # tells groups apart
        for key, (side, color) in styles.items():
            values = [(x, summary.figures[key].mean) for x, summary in points
                      if summary.figures[key].mean is not None]
            ax.plot([x for x, _ in values], [v for _, v in values], color=color, alpha=0.7, label=f"{side} ({label})",
                    **line)
    if chance:
        ax.axhline(max(chance), color="gray", linestyle=":", label="chance (majority class)")
    axis = record.axes[axis_index]
    ax.set_xticks(range(len(axis.values)), [json.dumps(v) for v in axis.values])
    ax.set(xlabel=axis.key, ylabel="test accuracy (mean over seeds)", ylim=(0.0, 1.0))
    ax.legend(fontsize=6)


def sweep_plot(record: SweepRecord, path: Path) -> None:
    count = len(record.axes)
    fig, axes = plt.subplots(2, count, figsize=(5.5 * count, 7.5), squeeze=False)
    for index in range(count):
        _difference_panel(axes[0][index], record, index)
        _accuracy_panel(axes[1][index], record, index)
    save(fig, path)
