"""`ensemble run --repeats K`: K runs with seeds seed, seed+1, ..., then mean and sd of the headlines.

Each repeat is an ordinary run directory (`<name>-r0`, `<name>-r1`, ...); the summary goes to
`<name>-summary/` (summary.json, summary.md, repeats.png). The paper averaged three runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from pydantic import BaseModel

from ensemble.builders import run_name
from ensemble.config import EnsembleConfig, default_run_name
from ensemble.job.driver import run
from ensemble.observers.progress import progress_watch
from ensemble.report import RunReport
from ensemble.report.comparison import RepeatsComparison, compare_repeats
from ensemble.report.plots import repeats_plot
from ensemble.report.statistics import mean_test
from ensemble.result import RunResult
from ensemble.scheduling.session import ray_session
from workers.errors import InputError
from workers.events import Event
from workers.layout import SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG, write_atomic
from workers.models import AutoencoderFactory

# key -> (label, format of one value); the headline figures a summary averages
FIGURES = {
    "ensemble_test_accuracy": ("ensemble test accuracy", "{:.4f}"),
    "baseline_test_accuracy": ("baseline test accuracy", "{:.4f}"),
    "untrained_test_accuracy": ("untrained encoders test accuracy", "{:.4f}"),
    "accuracy_difference": ("ensemble - baseline test accuracy", "{:+.4f}"),
    "training_gain": ("ensemble - untrained test accuracy", "{:+.4f}"),
    "ensemble_wall_seconds": ("ensemble wall seconds", "{:.1f}"),
    "baseline_wall_seconds": ("baseline wall seconds", "{:.1f}"),
    "speedup": ("speed-up (baseline wall / ensemble wall)", "{:.2f}x"),
    "training_speedup": ("speed-up on training alone", "{:.2f}x"),
    "mean_selected_epoch": ("members' mean selected epoch", "{:.2f}"),
    "baseline_selected_epoch": ("baseline selected epoch", "{:.2f}"),
}


# --- pure decisions ---

def repeat_configs(config: EnsembleConfig, repeats: int, base_name: str) -> list[EnsembleConfig]:
    return [config.model_copy(update={"seed": config.seed + i, "name": f"{base_name}-r{i}"}) for i in range(repeats)]


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def headline_figures(report: RunReport) -> dict[str, Optional[float]]:
    e, b = report.ensemble, report.baseline
    selected = [m.selected_epoch for m in report.members if m.selected_epoch is not None]
    return {
        "ensemble_test_accuracy": e.test_accuracy,
        "baseline_test_accuracy": b.test_accuracy if b else None,
        "untrained_test_accuracy": e.untrained_test_accuracy,
        "accuracy_difference": _minus(e.test_accuracy, b.test_accuracy) if b else None,
        "training_gain": _minus(e.test_accuracy, e.untrained_test_accuracy),
        "ensemble_wall_seconds": e.wall_seconds,
        "baseline_wall_seconds": b.wall_seconds if b else None,
        "speedup": report.speedup,
        "training_speedup": report.comparison.training_speedup if report.comparison is not None else None,
        "mean_selected_epoch": statistics.fmean(selected) if selected else None,
        "baseline_selected_epoch": b.selected_epoch if b else None,
    }


class FigureSummary(BaseModel):
    mean: Optional[float]        # None: no run had this figure (no baseline)
    sd: Optional[float]          # sample standard deviation; None with fewer than two values
    values: list[Optional[float]]
    ci95: Optional[tuple[float, float]] = None  # t interval of the mean; None: fewer than two values or no spread


def mean_sd(values: Sequence[Optional[float]]) -> FigureSummary:
    present = [v for v in values if v is not None]
    interval = mean_test(present)[1] if present else None
    return FigureSummary(mean=statistics.fmean(present) if present else None,
                         sd=statistics.stdev(present) if len(present) > 1 else None, values=list(values),
                         ci95=interval)


def plus_minus(figure: FigureSummary, fmt: str) -> str:
    if figure.mean is None:
        return "n/a"
    return fmt.format(figure.mean) + (" ± " + fmt.format(figure.sd).lstrip("+") if figure.sd is not None else " ± n/a")


def repeats_verdict(comparison: RepeatsComparison, figures: dict[str, FigureSummary]) -> str:
    """The claim across seeds (the paired differences tested across seeds, see `compare_repeats`),
    then what autoencoder training changed, as mean ± sd over the runs."""
    return (f"{comparison.sentence} Autoencoder training changed the ensemble's accuracy by "
            f"{plus_minus(figures['training_gain'], FIGURES['training_gain'][1])} (mean ± sd over the runs) against "
            "the same combiner on the untrained encoders.")


class RepeatsSummary(BaseModel):
    name: str
    runs: list[str]
    seeds: list[int]
    figures: dict[str, FigureSummary]
    claim_outcomes: list[str]    # each run's own outcome key (ensemble.report.comparison.OUTCOMES)
    comparison: RepeatsComparison
    verdict: str

    def table(self) -> str:
        lines = ["| figure | mean ± sd | per run |", "|---|---|---|"]
        for key, (label, fmt) in FIGURES.items():
            figure = self.figures[key]
            runs = ", ".join("n/a" if v is None else fmt.format(v) for v in figure.values)
            lines.append(f"| {label} | {plus_minus(figure, fmt)} | {runs} |")
        return "\n".join(lines + ["", self.verdict])

    def to_markdown(self) -> str:
        return "\n".join([f"# {len(self.runs)} repeats of {self.name}", "",
                          f"Runs (seeds {', '.join(map(str, self.seeds))}): "
                          + ", ".join(f"`{r}`" for r in self.runs), "", self.table(), "",
                          f"![repeats]({SUMMARY_PNG})", ""])


def summarize(name: str, reports: Sequence[RunReport], seeds: Sequence[int]) -> RepeatsSummary:
    per_run = [headline_figures(r) for r in reports]
    figures = {key: mean_sd([run_figures[key] for run_figures in per_run]) for key in FIGURES}
    comparisons = [r.comparison for r in reports if r.comparison is not None]
    assert len(comparisons) == len(reports), "repeats hold a test split out (refused before the runs)"
    comparison = compare_repeats(comparisons, seeds)
    return RepeatsSummary(name=name, runs=[r.name for r in reports], seeds=list(seeds), figures=figures,
                          claim_outcomes=comparison.outcomes, comparison=comparison,
                          verdict=repeats_verdict(comparison, figures))


# --- the command ---

@dataclass(frozen=True)
class RepeatsResult:
    results: list[RunResult]
    summary: RepeatsSummary
    summary_dir: Path


def run_repeats(config: EnsembleConfig, repeats: int, autoencoder: Optional[AutoencoderFactory] = None,
                dataset=None, on_event: Optional[Callable[[Event], None]] = None, watch=None,
                tracker=None, progress=None) -> RepeatsResult:
    """Run `repeats` runs with consecutive seeds on one Ray session, then summarise them. `progress`
    is each run's display, as `ensemble.run` takes it (`watch`: its deprecated old name)."""
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, not {repeats}.")
    if config.data.test_size == 0:
        raise InputError("--repeats compares test accuracies across seeds; data.test_size=0 holds no test split out.")
    base_name = config.name or default_run_name()
    configs = repeat_configs(config, repeats, base_name)
    summary_dir = Path(config.output) / f"{base_name}-summary"
    taken = [str(d) for d in [Path(config.output) / run_name(c) for c in configs] + [summary_dir]
             if d.exists() and any(d.iterdir())]
    if taken:  # checked for all before the first run starts, not when the third one would fail
        raise InputError(f"run directories already exist and are not empty: {', '.join(taken)}; choose another "
                         "--name (or --output). Nothing was changed.")
    shown = progress_watch(progress, on_event is not None, watch)
    with ray_session(log_to_driver=shown.verbose, dashboard=shown.dashboard):
        results = [run(c, autoencoder, dataset, on_event, progress=shown, tracker=tracker)  # one Ray start for all
                   for c in configs]
    summary = summarize(base_name, [r.report for r in results], [c.seed for c in configs])
    _write(summary, summary_dir)
    return RepeatsResult(results, summary, summary_dir)


def _write(summary: RepeatsSummary, summary_dir: Path) -> None:
    summary_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(summary_dir / SUMMARY_JSON, summary.model_dump_json(indent=2))
    write_atomic(summary_dir / SUMMARY_MD, summary.to_markdown())

    def runs(key: str) -> list[float]:
        return [v for v in summary.figures[key].values if v is not None]

    repeats_plot([("test accuracy", {"ensemble": runs("ensemble_test_accuracy"),
                                     "baseline": runs("baseline_test_accuracy"),
                                     "untrained": runs("untrained_test_accuracy")}),
                  ("wall-clock seconds", {"ensemble": runs("ensemble_wall_seconds"),
                                          "baseline": runs("baseline_wall_seconds")})],
                 summary_dir / SUMMARY_PNG)
