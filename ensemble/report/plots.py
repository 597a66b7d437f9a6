"""The run's PNG plots: loss curves, the timing diagram, accuracy and wall-clock side by side."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters and CI without a display
import matplotlib.pyplot as plt  # noqa: E402

from ensemble.report.models import MemberReport, RunReport  # noqa: E402
from workers.layout import PLOTS, write_atomic  # noqa: E402


def save(fig, path: Path) -> None:
    """Render to memory, then write atomically: a reader never sees half a PNG."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def _curve(ax, member: MemberReport, style: dict) -> None:
    epochs = [h.epoch for h in member.history]
    losses = [h.val_loss if h.val_loss is not None else float("nan") for h in member.history]
    (line,) = ax.plot(epochs, losses, marker=".", label=member.name, **style)
    if member.selected_epoch is not None:
        chosen = next(h.val_loss for h in member.history if h.epoch == member.selected_epoch)
        ax.plot([member.selected_epoch], [chosen], marker="*", markersize=14, color=line.get_color())


def loss_curves(report: RunReport, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for member in report.members:
        _curve(ax, member, {"alpha": 0.8})
    if report.baseline is not None:
        _curve(ax, report.baseline, {"color": "black", "linewidth": 2})
    ax.set(xlabel="epoch", ylabel="validation reconstruction loss", yscale="log",
           title="Validation loss per epoch (star: selected checkpoint)")
    ax.legend(fontsize=8)
    save(fig, path)


def timeline(report: RunReport, path: Path) -> None:
    """The paper's timing diagram: each member's epochs as bars; the baseline runs afterwards."""
    rows = report.sides
    offset_baseline = report.ensemble.train_wall_seconds
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for row, member in enumerate(rows):
        shift = offset_baseline if member.kind == "baseline" else 0.0
        bars = [(span.start + shift, span.end - span.start) for span in member.timeline]
        colors = ["tab:orange" if span.epoch == member.selected_epoch else
                  ("black" if member.kind == "baseline" else "tab:blue") for span in member.timeline]
        ax.broken_barh(bars, (row - 0.35, 0.7), facecolors=colors, edgecolor="white")
    ax.set_yticks(range(len(rows)), [m.name for m in rows])
    ax.invert_yaxis()
    ax.set(xlabel="wall-clock seconds", title="Epochs over time (orange: selected epoch)")
    save(fig, path)


def accuracy_time(report: RunReport, path: Path) -> None:
    labels = ["ensemble"] + (["baseline"] if report.baseline is not None else [])
    sides = [report.ensemble] + ([report.baseline] if report.baseline is not None else [])
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(8, 3.5))
    if report.ensemble.test_accuracy is None:  # data.test_size=0: nothing was held out to score on
        acc_ax.text(0.5, 0.5, "no test split held out", ha="center", va="center", transform=acc_ax.transAxes)
        acc_ax.set(xticks=[], yticks=[], title="test accuracy")
    else:
        _accuracy_bars(acc_ax, labels, sides, report.ensemble.untrained_test_accuracy)
    train = [s.train_wall_seconds for s in sides]
    combine = [s.combiner_seconds for s in sides]
    time_ax.bar(labels, train, label="training", color="tab:gray")
    time_ax.bar(labels, combine, bottom=train, label="combiner", color="tab:green")
    time_ax.set(title="wall-clock seconds")
    time_ax.legend(fontsize=8)
    save(fig, path)


def _accuracy_bars(ax, labels: list[str], sides: list, untrained: float) -> None:
    bars = ax.bar(labels, [s.test_accuracy for s in sides], color=["tab:blue", "black"][:len(sides)])
    ax.axhline(untrained, color="tab:red", linestyle="--", label="untrained encoders")
    ax.bar_label(bars, fmt="%.4f")
    low = min([s.test_accuracy for s in sides] + [untrained])
    ax.set(ylim=(max(0.0, low - 0.05), 1.0), title="test accuracy")
    ax.legend(fontsize=8, loc="upper right")


def write_plots(report: RunReport, run_dir: Path) -> list[Path]:
    paths = [Path(run_dir) / name for name in PLOTS]
    for draw, path in zip((loss_curves, timeline, accuracy_time), paths, strict=True):
        draw(report, path)
    return paths


def accuracy_vs_time_plot(curves: dict[str, list[tuple[float, float, int]]], untrained: float, path: Path) -> None:
    """Test accuracy per saved epoch against each side's training wall-clock: (seconds, accuracy, epoch)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for side, color in (("ensemble", "tab:blue"), ("baseline", "black")):
        points = curves.get(side, [])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color, label=side)
            for seconds, accuracy, epoch in points:
                ax.annotate(str(epoch), (seconds, accuracy), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.axhline(untrained, color="tab:red", linestyle="--", label="untrained encoders (ensemble)")
    ax.set_xlim(left=0)  # start-up time before the first epoch is part of what each side costs
    ax.set(xlabel="training wall-clock seconds (each side from the start of its phase)", ylabel="test accuracy",
           title="Test accuracy per saved epoch against wall-clock (labels: epoch)")
    ax.legend(fontsize=8)
    save(fig, path)


def repeats_plot(panels: list[tuple[str, dict[str, list[float]]]], path: Path) -> None:
    """Each panel: (title, {label: one value per repeat}); a dot per repeat, a bar at the mean with
    +- one standard deviation. Accuracy panels zoom in on the range the values span."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        series = {label: runs for label, runs in series.items() if runs}
        for x, runs in enumerate(series.values()):
            sd = statistics.stdev(runs) if len(runs) > 1 else 0.0
            ax.bar(x, statistics.fmean(runs), yerr=sd, capsize=6, color="tab:gray", alpha=0.5)
            ax.plot([x] * len(runs), runs, "o", color="tab:blue")
        ax.set_xticks(range(len(series)), list(series))
        ax.set(title=f"{title} (mean +- sd, dots: runs)")
        if "accuracy" in title and series:
            ax.set_ylim(max(0.0, min(min(runs) for runs in series.values()) - 0.05), 1.0)
    save(fig, path)


def labels_plot(series: dict[str, list[tuple[int, float, float, float]]], path: Path) -> None:
    """Test accuracy against labelled images per class, one line per side with its 95% band over
    draws: {side: [(per_class, mean, low, high)]} (low = high = mean where no interval exists)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"ensemble": "tab:blue", "untrained": "tab:red", "baseline": "black"}
    for side, points in series.items():
        counts = [p[0] for p in points]
        ax.plot(counts, [p[1] for p in points], marker="o", color=colors.get(side), label=side)
        ax.fill_between(counts, [p[2] for p in points], [p[3] for p in points], color=colors.get(side), alpha=0.2)
    ax.set_xscale("log")  # counts span orders of magnitude (1 ... 100 per class)
    ax.set(xlabel="labelled training images per class (log scale)", ylabel="test accuracy",
           title="Test accuracy against the number of labels (bands: 95% CI over label draws)")
    ax.legend(fontsize=8)
    save(fig, path)
