"""A sweep's own files beside its runs: sweep.json, sweep.md and sweep.png, each written atomically."""

from __future__ import annotations

from pathlib import Path

from ensemble.sweeps.record import SweepRecord, sweep_markdown
from workers.layout import SWEEP_JSON, SWEEP_MD, SWEEP_PNG, write_atomic


def write_record(record: SweepRecord, sweep_dir: Path, plot: bool = True) -> None:
    """sweep.json and sweep.md (every time a run ends), sweep.png (when asked: it takes a moment)."""
    write_atomic(sweep_dir / SWEEP_JSON, record.model_dump_json(indent=2))
    write_atomic(sweep_dir / SWEEP_MD, sweep_markdown(record))
    if plot and any(cell.summary is not None for cell in record.cells):
        from ensemble.sweeps.plot import sweep_plot  # matplotlib: only once there is something to draw
        sweep_plot(record, sweep_dir / SWEEP_PNG)
