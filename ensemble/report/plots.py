"""The run's PNG plots: loss curves, the timing diagram, accuracy and wall-clock side by side."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters and CI without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, LogFormatter, NullFormatter, NullLocator, ScalarFormatter  # noqa: E402

from ensemble.report.schema import MemberReport, RunReport  # noqa: E402
from ensemble.report.tables import side_name  # noqa: E402
from workers.layout import PLOTS, write_atomic  # noqa: E402


def save(fig, path: Path) -> None:
    """Render to memory, then write atomically: a reader never sees half a PNG."""
    buffer = io.BytesIO()
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, and any engine makes savefig lay the
    # whole figure out once more before drawing it: the same pixels for a third more CPU
    fig.set_layout_engine(None)
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def legend_labels(report: RunReport) -> dict[str, str]:
    """Each side's name in the loss plot's legend, with its architecture when the members differ."""
    differ = len({side_name(m) for m in report.members}) > 1
    return {m.name: f"{m.name} ({side_name(m)})" if differ and side_name(m) else m.name for m in report.sides}


def _curve(ax, member: MemberReport, style: dict, label: str) -> None:
    epochs = [h.epoch for h in member.history]
    losses = [h.val_loss if h.val_loss is not None else float("nan") for h in member.history]
    (line,) = ax.plot(epochs, losses, marker=".", label=label, **style)
    if member.selected_epoch is not None:
        chosen = next(h.val_loss for h in member.history if h.epoch == member.selected_epoch)
        ax.plot([member.selected_epoch], [chosen], marker="*", markersize=14, color=line.get_color())


def loss_curves(report: RunReport, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = legend_labels(report)
    for member in report.members:
        _curve(ax, member, {"alpha": 0.8}, labels[member.name])
    if report.baseline is not None:
        _curve(ax, report.baseline, {"color": "black", "linewidth": 2}, labels[report.baseline.name])
    ax.set(xlabel="epoch", ylabel="validation reconstruction loss", yscale="log",
           title="Validation loss per epoch (star: selected checkpoint; one run, no error bars)")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter())
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
    ax.set(xlabel="wall-clock seconds", title="Epochs over time (orange: selected epoch; one measurement)")
    save(fig, path)


ERROR_BARS = "error bars: Wilson 95% CI"


def accuracy_time(report: RunReport, path: Path) -> None:
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(9, 3.8))
    if report.ensemble.test_accuracy is None:  # data.test_size=0: nothing was held out to score on
        acc_ax.text(0.5, 0.5, "no test split held out", ha="center", va="center", transform=acc_ax.transAxes)
        acc_ax.set(xticks=[], yticks=[], title="test accuracy")
    else:
        draw_accuracy_panel(acc_ax, report)
    sides = [("ensemble", report.ensemble)] + ([("baseline", report.baseline)] if report.baseline else [])
    labels, train = [name for name, _ in sides], [side.train_wall_seconds for _, side in sides]
    time_ax.bar(labels, train, label="training", color="tab:gray")
    time_ax.bar(labels, [side.combiner_seconds for _, side in sides], bottom=train, label="combiner",
                color="tab:green")
    time_ax.set(title="wall-clock seconds\n(one measurement: no error bars)")
    time_ax.legend(fontsize=8)
    save(fig, path)


def accuracy_bars(report: RunReport) -> list[tuple[str, float, tuple[float, float] | None]]:
    """(label, test accuracy, Wilson 95% interval) of each side the accuracy panel shows."""
    e, b = report.ensemble, report.baseline
    bars = [] if e.test_accuracy is None else [("ensemble", e.test_accuracy, e.test_accuracy_ci95)]
    if b is not None and b.test_accuracy is not None:
        bars.append(("baseline", b.test_accuracy, b.test_accuracy_ci95))
    if e.untrained_test_accuracy is not None:
        bars.append(("untrained\nencoders", e.untrained_test_accuracy, e.untrained_test_accuracy_ci95))
    return bars


def draw_accuracy_panel(ax, report: RunReport) -> None:
    """Each side's accuracy with its interval, on an axis from 0 with the chance level drawn: a gap
    between two bars is never magnified, and a run at chance looks like one."""
    bars = accuracy_bars(report)
    values = [value for _, value, _ in bars]
    errors = [[value - (ci or (value, value))[0] for _, value, ci in bars],
              [(ci or (value, value))[1] - value for _, value, ci in bars]]
    ax.bar([f"{label}\n{value:.4f}" for label, value, _ in bars], values, yerr=errors, capsize=6,
           color=["tab:blue", "black", "tab:red"][:len(bars)], alpha=0.8)
    if report.comparison is not None:
        ax.axhline(report.comparison.chance_accuracy, color="tab:orange", linestyle="--",
                   label=f"chance (majority class) {report.comparison.chance_accuracy:.4f}")
        ax.legend(fontsize=8, loc="upper right")
    ax.set(ylim=(0.0, 1.0), title=f"test accuracy (axis from 0)\n{ERROR_BARS}")


def write_plots(report: RunReport, run_dir: Path) -> list[Path]:
    paths = [Path(run_dir) / name for name in PLOTS]
    for draw, path in zip((loss_curves, timeline, accuracy_time), paths, strict=True):
        draw(report, path)
    return paths


def accuracy_vs_time_plot(curves: dict[str, list[tuple[float, float, int, float, float]]], untrained: Optional[float],
                          chance: float, path: Path) -> None:
    """Test accuracy per saved epoch against each side's training wall-clock, each point with its Wilson
    band: {side: [(seconds, accuracy, epoch, low, high)]}; the side `selected` (the run's own ensemble) is
    one marked point."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for side, color in (("ensemble", "tab:blue"), ("baseline", "black")):
        points = curves.get(side, [])
        if points:
            seconds = [p[0] for p in points]
            ax.plot(seconds, [p[1] for p in points], marker="o", color=color,
                    label="ensemble of the members' checkpoints at each epoch" if side == "ensemble" else side)
            ax.fill_between(seconds, [p[3] for p in points], [p[4] for p in points], color=color, alpha=0.15)
            for second, accuracy, epoch, _, _ in points:
                ax.annotate(str(epoch), (second, accuracy), textcoords="offset points", xytext=(3, 4), fontsize=7)
    for second, accuracy, _, low, high in curves.get("selected", []):
        ax.errorbar([second], [accuracy], yerr=[[accuracy - low], [high - accuracy]], marker="*", markersize=14,
                    color="tab:green", capsize=5, linestyle="none", label="the run's selected ensemble")
    if untrained is not None:  # None: the run scored no untrained encoders
        ax.axhline(untrained, color="tab:red", linestyle="--", label="untrained encoders (ensemble)")
    ax.axhline(chance, color="tab:orange", linestyle=":", label="chance (majority class)")
    ax.set_xlim(left=0)  # start-up time before the first epoch is part of what each side costs
    ax.set_ylim(0.0, 1.0)  # from 0: a gap is never magnified
    ax.set(xlabel="training wall-clock seconds (each side from the start of its phase)", ylabel="test accuracy",
           title=f"Test accuracy per saved epoch (labels: epoch)\n{ERROR_BARS} (bands and the star)")
    ax.legend(fontsize=7, loc="lower right")
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
        ax.set(title=f"{title}\n(bars: mean; error bars: +- one sd; dots: runs)")
        if "accuracy" in title and series:
            ax.set_ylim(0.0, 1.0)  # from 0: a gap between the sides is never magnified
    save(fig, path)


def labels_plot(series: dict[str, list[tuple[int, float, float, float]]], chance: float, path: Path) -> None:
    """Test accuracy against labelled images per class, one line per side with its 95% band over
    draws: {side: [(per_class, mean, low, high)]} (low = high = mean where no interval exists), the
    chance level drawn and the accuracy axis from 0."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"ensemble": "tab:blue", "untrained": "tab:red", "baseline": "black"}
    for side, points in series.items():
        counts = [p[0] for p in points]
        ax.plot(counts, [p[1] for p in points], marker="o", color=colors.get(side), label=side)
        ax.fill_between(counts, [p[2] for p in points], [p[3] for p in points], color=colors.get(side), alpha=0.2)
    ax.set_xscale("log")  # counts span orders of magnitude (1 ... 100 per class)
    plain_ticks(ax.xaxis, sorted({p[0] for points in series.values() for p in points}))
    ax.axhline(chance, color="tab:orange", linestyle=":", label="chance (majority class)")
    ax.set_ylim(0.0, 1.0)
    ax.set(xlabel="labelled training images per class (log scale)", ylabel="test accuracy",
           title="Test accuracy against the number of labels (bands: 95% CI over label draws)")
    ax.legend(fontsize=8)
    save(fig, path)


class PlainLogFormatter(LogFormatter):
    """A log axis's labels as plain numbers ("0.2", "15"), on the ticks matplotlib's log formatter
    labels. Its default writes mathtext (1.5x10^1), whose parsing costs more CPU than the rest of
    the plot."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_ticks(axis, values: list[int]) -> None:
    """Ticks at exactly these values, written as plain numbers (a log axis would write 6x10^0)."""
    axis.set_major_locator(FixedLocator(values))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
