"""The run's summary tables (console and report.md)."""

from __future__ import annotations

from typing import Optional

from ensemble.report.schema import RunReport


def accuracy(value: Optional[float]) -> str:
    """An accuracy as the tables show it; a run without a test split has none."""
    return "n/a (no test split)" if value is None else f"{value:.4f}"


def with_interval(value: Optional[float], interval) -> str:
    """An accuracy and its 95% interval, '0.9480 [0.9327, 0.9600]', as report.md and the console show it."""
    return accuracy(value) + ("" if value is None or interval is None else " [{:.4f}, {:.4f}]".format(*interval))


def seconds(value: float) -> str:
    """Seconds as every table and sentence spells them: one decimal, thousands separated."""
    return f"{value:,.1f}"


def summary_table(report: RunReport) -> str:
    """The console's and report.md's summary: what each side scored and cost, how each member stopped,
    each side's architecture, diversity and the verdict; every line but the prose fits 120 columns."""
    e, b = report.ensemble, report.baseline
    lines = ["| | test accuracy [95% CI] | wall s | train s | combiner s | parameters |", "|---|---|---|---|---|---|",
             f"| ensemble ({len(e.members_used):,} members) | {with_interval(e.test_accuracy, e.test_accuracy_ci95)} | "
             f"{seconds(e.wall_seconds)} | {seconds(e.train_wall_seconds)} | {seconds(e.combiner_seconds)} | "
             f"{count(e.parameters)} |"]
    if b is not None:
        lines.append(f"| baseline | {with_interval(b.test_accuracy, b.test_accuracy_ci95)} | "
                     f"{seconds(b.wall_seconds)} | {seconds(b.train_wall_seconds)} | {seconds(b.combiner_seconds)} | "
                     f"{count(parameters(b))} |")
    if e.untrained_test_accuracy is not None:
        lines.append(f"| untrained encoders (epoch 0) | "
                     f"{with_interval(e.untrained_test_accuracy, e.untrained_test_accuracy_ci95)} | | | | |")
    lines += ["", f"Resources: ensemble {e.resources}" + (f"; baseline {b.resources}." if b is not None else "."),
              speed_line(report), "", *member_table(report), "", *architecture_table(report)]
    if e.diversity is not None:
        lines += ["", f"Diversity: {e.diversity.sentence}"]
    skipped = [f"{m.name} resumed past {len(m.skipped_checkpoints):,} corrupt checkpoint(s): "
               + "; ".join(m.skipped_checkpoints) for m in report.sides if m.skipped_checkpoints]
    lines += (["", *skipped] if skipped else []) + ["", report.verdict]
    return "\n".join(lines)


def speed_line(report: RunReport) -> str:
    """The speed-up end to end, and on the training phases alone when the comparison split them."""
    if report.speedup is None:
        return "Speed-up (baseline wall / ensemble wall): n/a"
    training = report.comparison.training_speedup if report.comparison is not None else None
    return (f"Speed-up (baseline wall / ensemble wall): {report.speedup:.2f}x"
            + (f"; on training alone: {training:.2f}x" if training is not None else ""))


def member_table(report: RunReport) -> list[str]:
    lines = ["| member | epochs | selected | accuracy alone | stopped because |", "|---|---|---|---|---|"]
    for m in report.sides:
        selected = "excluded" if m.selected_epoch is None else f"{m.selected_epoch:,}"
        alone = "" if m.test_accuracy is None else accuracy(m.test_accuracy)
        lines.append(f"| {m.name} | {m.epochs_trained:,} | {selected} | {alone} | {m.stop_reason} |")
    return lines


def architecture_table(report: RunReport) -> list[str]:
    """Each side's architecture and trainable parameters; members that share one share a row."""
    rows: dict[str, list[str]] = {}
    for m in report.members:
        rows.setdefault(f"{side_name(m)} | {count(parameters(m))}", []).append(m.name)
    named = [(", ".join(names) if len(rows) > 1 else "every member", row) for row, names in rows.items()]
    if report.baseline is not None:
        named.append(("baseline", f"{side_name(report.baseline)} | {count(parameters(report.baseline))}"))
    return ["| | architecture | parameters |", "|---|---|---|", *(f"| {who} | {row} |" for who, row in named)]


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


def markdown(report: RunReport, plots: bool = True) -> str:
    """report.md; `plots`: whether it shows the run's plots (a run that drew none links none)."""
    d = report.dataset
    return "\n".join([
        f"# Run {report.name}", "",
        f"Data: {d.source}; {d.train:,} train / {d.val:,} validation / {d.test:,} test images of shape "
        f"{'x'.join(map(str, d.image_shape))}, {d.num_classes:,} classes.{labels_caption(d)}", "",
        summary_table(report), "", *disagreement_table(report),
        *(["![validation loss](loss_curves.png)", "", "![timeline](timeline.png)", "",
           "![accuracy and wall-clock](accuracy_time.png)"] if plots else []), ""])


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
