"""Step 5, write the report: report.json, report.md and the plots, with the verdict and each side's
accuracy interval when a test split was held out; report.json last, so its presence means the run
finished."""

from __future__ import annotations

from pathlib import Path

from ensemble.config import recorded_config
from ensemble.job.evaluate import Evaluation
from ensemble.job.prepare import Plan
from ensemble.job.train_members import Phases
from ensemble.report import RunReport
from ensemble.report.entries import dataset_report
from ensemble.report.files import write_report_files
from ensemble.report.plots import write_plots
from ensemble.report.verdict import verdict, with_accuracy_intervals


def run(plan: Plan, run_dir: Path, phases: Phases, evaluation: Evaluation, plots: bool = True) -> RunReport:
    """report.json, report.md and the plots (when `plots`); report.json last, so its presence means finished."""
    ensemble, baseline = evaluation.ensemble, evaluation.baseline
    comparison, text = None, "No test split was held out (data.test_size=0), so this run cannot test the claim."
    if evaluation.predictions is not None:
        ensemble, baseline = with_accuracy_intervals(evaluation.predictions, ensemble, baseline)
        comparison, text = verdict(evaluation.predictions, ensemble, baseline)
        evaluation.predictions.write(run_dir)
    report = RunReport(
        name=run_dir.name, members=evaluation.members, baseline=baseline, ensemble=ensemble,
        speedup=(baseline.wall_seconds / ensemble.wall_seconds) if baseline else None,
        verdict=text, comparison=comparison, dataset=dataset_report(plan.splits),
        config=recorded_config(plan.config), run_id=plan.run_id)
    if plots:
        write_plots(report, run_dir)
    write_report_files(report, run_dir, plots)
    if plan.mirror is not None:
        plan.mirror.push(final=True)
    return report
