"""What a sweep writes beside its run directories: sweep.json (the grid, and per cell its settings,
each seed's figures and the across-seed verdict with its intervals, computed by `--repeats`' own
`summarize`), sweep.md (a row per cell) and sweep.png (the accuracy difference with its interval
against each axis). sweep.json also holds what `--resume` needs: the base config, the axes, the
repeats and the failures recorded so far; everything else is read back from the run directories.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ValidationError

from ensemble.analysis.repeats import RepeatsSummary, headline_figures, summarize
from ensemble.builders import run_name
from ensemble.report import RunReport
from ensemble.sweeps.grid import Axis, Cell
from workers.errors import InputError
from workers.layout import REPORT_JSON, SWEEP_JSON, SWEEP_PNG

Status = Literal["pending", "running", "done", "failed"]


class SweepRun(BaseModel):
    name: str
    seed: int
    status: Status = "pending"
    reason: Optional[str] = None                          # why it failed (failed runs only)
    figures: Optional[dict[str, Optional[float]]] = None  # the headline figures --repeats averages
    chance_accuracy: Optional[float] = None               # the majority-class share of its test labels


class SweepCell(BaseModel):
    name: str
    settings: dict[str, Any]
    status: Status = "pending"
    runs: list[SweepRun]
    summary: Optional[RepeatsSummary] = None  # every seed done: the across-seed verdict, as --repeats computes it


class SweepRecord(BaseModel):
    name: str
    axes: list[Axis]
    repeats: int
    base_config: dict[str, Any]  # the config every cell starts from (as config.json records a run's)
    cells: list[SweepCell]

    @classmethod
    def read(cls, sweep_dir: Path) -> "SweepRecord":
        path = Path(sweep_dir) / SWEEP_JSON
        if not path.is_file():
            raise InputError(f"{str(sweep_dir)!r} is not a sweep directory (no {SWEEP_JSON}); nothing to resume.")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as err:
            raise InputError(f"{str(path)!r} cannot be read as a sweep record ({str(err).splitlines()[0]}); "
                             "restore it, or start a new sweep.") from None

    def failures(self) -> dict[str, str]:
        return {run.name: run.reason or "failed" for cell in self.cells for run in cell.runs if run.status == "failed"}


def read_run(run_dir: Path, seed: int, failure: Optional[str], running: bool) -> SweepRun:
    """One run as its directory (and the sweep's record of a failure) shows it."""
    if (run_dir / REPORT_JSON).is_file():
        report = RunReport.read(run_dir)
        chance = report.comparison.chance_accuracy if report.comparison is not None else None
        return SweepRun(name=run_dir.name, seed=seed, status="done", figures=headline_figures(report),
                        chance_accuracy=chance)
    if failure is not None:
        return SweepRun(name=run_dir.name, seed=seed, status="failed", reason=failure)
    return SweepRun(name=run_dir.name, seed=seed, status="running" if running else "pending")


def cell_record(cell: Cell, sweep_dir: Path, failures: dict[str, str], running: set[str]) -> SweepCell:
    """A cell as its run directories show it; with every seed done, the verdict across seeds by the
    very function `ensemble run --repeats` summarises with (so the two agree, figure for figure)."""
    named = [(run_name(c), c.seed) for c in cell.runs]
    runs = [read_run(sweep_dir / name, seed, failures.get(name), name in running) for name, seed in named]
    states = {run.status for run in runs}
    status: Status = ("done" if states == {"done"} else "failed" if "failed" in states and states <= {"done", "failed"}
                      else "pending" if states == {"pending"} else "running")
    summary = None
    if status == "done":
        reports = [RunReport.read(sweep_dir / name) for name, _ in named]
        summary = summarize(cell.name, reports, [c.seed for c in cell.runs])
    return SweepCell(name=cell.name, settings=cell.settings, status=status, runs=runs, summary=summary)


def _interval(pair: Optional[tuple[float, float]], fmt: str) -> str:
    return "" if pair is None else " [" + ", ".join(fmt.format(v) for v in pair) + "]"


def cell_row(cell: SweepCell, axes: list[Axis]) -> list[str]:
    settings = [json.dumps(cell.settings[axis.key]) for axis in axes]
    if cell.summary is None:
        reasons = "; ".join(f"{run.name}: {run.reason}" for run in cell.runs if run.status == "failed")
        return [*settings, cell.status, "", "", "", "", "", reasons]
    figures, comparison = cell.summary.figures, cell.summary.comparison
    difference = figures["accuracy_difference"]
    gain = figures["training_gain"]

    def mean(key: str) -> str:
        value = figures[key].mean
        return "n/a" if value is None else f"{value:.4f}"

    speedup = comparison.geometric_mean_speedup
    return [*settings, "done", mean("ensemble_test_accuracy"), mean("baseline_test_accuracy"),
            "n/a" if difference.mean is None else f"{difference.mean:+.4f}" + _interval(difference.ci95, "{:+.4f}"),
            "n/a" if speedup is None else f"{speedup:.2f}x" + _interval(comparison.speedup_ci95, "{:.2f}"),
            "n/a" if gain.mean is None else f"{gain.mean:+.4f}" + _interval(gain.ci95, "{:+.4f}"),
            comparison.outcome]


def sweep_table(record: SweepRecord) -> str:
    head = [axis.key for axis in record.axes] + [
        "status", "ensemble", "baseline", "ensemble - baseline [95% CI]", "speed-up [95% CI]",
        "ensemble - untrained [95% CI]", "outcome across seeds"]
    rows = [head, ["---"] * len(head)] + [cell_row(cell, record.axes) for cell in record.cells]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def sweep_markdown(record: SweepRecord) -> str:
    return "\n".join([
        f"# Sweep {record.name}", "",
        f"{len(record.cells)} cells x {record.repeats} seed(s); accuracies are means over the seeds; intervals are "
        "95% t intervals across seeds (the speed-up's: of the geometric mean), as `ensemble run --repeats` computes "
        "them; each cell's full verdict is in sweep.json. A row per cell:", "",
        sweep_table(record), "", f"![sweep]({SWEEP_PNG})", ""])
