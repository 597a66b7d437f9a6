"""A finished run's report files: report.md (the tables), then report.json (the schema)."""

from __future__ import annotations

from pathlib import Path

from ensemble.report.schema import RunReport
from ensemble.report.tables import markdown
from workers.layout import REPORT_JSON, REPORT_MD, write_atomic


def write_report_files(report: RunReport, run_dir: Path, plots: bool = True) -> None:
    """report.md first, then report.json: a run directory with report.json is a finished run.
    `plots`: whether report.md shows the run's plots (`ensemble.report.plots`)."""
    write_atomic(Path(run_dir) / REPORT_MD, markdown(report, plots))
    write_atomic(Path(run_dir) / REPORT_JSON, report.model_dump_json(indent=2))
