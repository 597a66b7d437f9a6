"""The run's summary tables (console and report.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ensemble.report.models import RunReport


def accuracy(value: Optional[float]) -> str:
    """An accuracy as the tables show it; a run without a test split has none."""
    return "n/a (no test split)" if value is None else f"{value:.4f}"


def summary_table(report: RunReport) -> str:
    e, b = report.ensemble, report.baseline
    lines = ["| | test accuracy | wall seconds | train seconds | combiner seconds | resources |",
             "|---|---|---|---|---|---|",
             f"| ensemble ({len(e.members_used)} members) | {accuracy(e.test_accuracy)} | {e.wall_seconds:.1f} | "
             f"{e.train_wall_seconds:.1f} | {e.combiner_seconds:.1f} | {e.resources} |"]
    if b is not None:
        lines.append(f"| baseline (width x{b.width:.2f}) | {accuracy(b.test_accuracy)} | {b.wall_seconds:.1f} | "
                     f"{b.train_wall_seconds:.1f} | {b.combiner_seconds:.1f} | {b.resources} |")
    if e.untrained_test_accuracy is not None:
        lines.append(f"| untrained encoders (epoch 0) | {e.untrained_test_accuracy:.4f} | | | | |")
    speed = f"{report.speedup:.2f}x" if report.speedup is not None else "n/a"
    lines += ["", f"Speed-up (baseline wall / ensemble wall): {speed}", "",
              "| member | epochs | selected | stopped because |", "|---|---|---|---|"]
    rows = report.sides
    lines += [f"| {m.name} | {m.epochs_trained} | {m.selected_epoch if m.selected_epoch is not None else 'excluded'} "
              f"| {m.stop_reason} |" for m in rows]
    skipped = [f"{m.name} resumed past {len(m.skipped_checkpoints)} corrupt checkpoint(s): "
               + "; ".join(m.skipped_checkpoints) for m in rows if m.skipped_checkpoints]
    lines += (["", *skipped] if skipped else []) + ["", report.verdict]
    return "\n".join(lines)


def labels_caption(d) -> str:
    """How many labels the combiner used and how many images the autoencoders trained on, when not all."""
    text = ""
    if d.labels_per_class is not None:
        text += (f" The combiners fitted on {d.labelled:,} labelled images ({d.labels_per_class:,} per class) of the "
                 f"{d.train:,} training images.")
    if d.unlabelled:
        text += (f" The autoencoders also trained on {d.unlabelled:,} unlabelled images "
                 f"({d.train + d.unlabelled:,} in all).")
    return text


def markdown(report: RunReport) -> str:
    d = report.dataset
    return "\n".join([
        f"# Run {report.name}", "",
        f"Data: {d.source}; {d.train} train / {d.val} validation / {d.test} test images of shape "
        f"{'x'.join(map(str, d.image_shape))}, {d.num_classes} classes.{labels_caption(d)}", "",
        summary_table(report), "",
        "![validation loss](loss_curves.png)", "", "![timeline](timeline.png)", "",
        "![accuracy and wall-clock](accuracy_time.png)", ""])
