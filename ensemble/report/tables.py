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
    lines = ["| | test accuracy | wall seconds | train seconds | combiner seconds | parameters | resources |",
             "|---|---|---|---|---|---|---|",
             f"| ensemble ({len(e.members_used)} members) | {accuracy(e.test_accuracy)} | {e.wall_seconds:.1f} | "
             f"{e.train_wall_seconds:.1f} | {e.combiner_seconds:.1f} | {count(e.parameters)} | {e.resources} |"]
    if b is not None:
        lines.append(f"| baseline ({side_name(b)}) | {accuracy(b.test_accuracy)} | {b.wall_seconds:.1f} | "
                     f"{b.train_wall_seconds:.1f} | {b.combiner_seconds:.1f} | {count(parameters(b))} | "
                     f"{b.resources} |")
    if e.untrained_test_accuracy is not None:
        lines.append(f"| untrained encoders (epoch 0) | {e.untrained_test_accuracy:.4f} | | | | | |")
    speed = f"{report.speedup:.2f}x" if report.speedup is not None else "n/a"
    lines += ["", f"Speed-up (baseline wall / ensemble wall): {speed}", "",
              "| member | epochs | selected | test accuracy (alone) | architecture | parameters | stopped because |",
              "|---|---|---|---|---|---|---|"]
    rows = report.sides
    lines += [f"| {m.name} | {m.epochs_trained} | {m.selected_epoch if m.selected_epoch is not None else 'excluded'} "
              f"| {'' if m.test_accuracy is None else f'{m.test_accuracy:.4f}'} | {side_name(m)} "
              f"| {count(parameters(m))} | {m.stop_reason} |" for m in rows]
    if e.diversity is not None:
        lines += ["", f"Diversity: {e.diversity.sentence}"]
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


def count(value: Optional[int]) -> str:
    return "" if value is None else f"{value:,}"


def parameters(side) -> Optional[int]:
    return (side.architecture or {}).get("parameters")


def side_name(side) -> str:
    """A member's or the baseline's architecture in a few words: its class (the last part of the
    name), the CAE's channels and kernel, and its width when not 1."""
    record = side.architecture
    width = getattr(side, "width", None) if record is None else record.get("width")
    if record is None:
        return f"width x{width:.2f}" if width is not None else ""
    name = record["class"].rpartition(":")[2]
    settings = record.get("settings")
    if settings:
        name += f" {settings['channels']} k{settings['kernel_size']}"
    return name + (f" width x{width:.2f}" if width not in (None, 1.0) else "")


def markdown(report: RunReport) -> str:
    d = report.dataset
    return "\n".join([
        f"# Run {report.name}", "",
        f"Data: {d.source}; {d.train} train / {d.val} validation / {d.test} test images of shape "
        f"{'x'.join(map(str, d.image_shape))}, {d.num_classes} classes.{labels_caption(d)}", "",
        summary_table(report), "", *disagreement_table(report),
        "![validation loss](loss_curves.png)", "", "![timeline](timeline.png)", "",
        "![accuracy and wall-clock](accuracy_time.png)", ""])


def disagreement_table(report: RunReport) -> list[str]:
    """report.md's pairwise disagreement matrix: the share of test images two members' own heads disagree on."""
    d = report.ensemble.diversity
    if d is None or len(d.members) < 2:
        return []
    names = [f"member {i}" for i in d.members]
    lines = ["Pairwise disagreement of the members' own heads (fraction of test images):", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{value:.3f}" for value in row) + " |"
              for name, row in zip(names, d.matrix, strict=True)]
    return lines + [""]
