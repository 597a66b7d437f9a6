"""A sweep's decisions, as pure functions tested without Ray: what each run still needs (nothing,
a resume, a new start), which failures belong to a cell (recorded, the sweep goes on) and which stop
the sweep (resumable), how many cells fit side by side, how long the rest will take, and the
progress line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from ensemble.errors import MemberFailed
from ensemble.job.failures import NeedsNewRun
from workers.errors import InputError

RunState = Literal["done", "failed", "resume", "new"]

# A run's cost before any is measured: seconds = START_S + RATE_S * image-epochs (members' and the
# baseline's, the baseline's weighted by its width squared). A small run is almost all start-up (Ray
# actors, the combiner fits), so the start dominates; the tiny run these came from is in
# docs/performance.md ("what a sweep's runs cost"). Finished runs' own seconds replace them.
START_S = 20.0
RATE_S = 3e-4
FIRST_MEASURES = "a rough guess before any run is measured"


def run_state(has_report: bool, has_config: bool, recorded_failure: Optional[str]) -> RunState:
    """What a run needs: `done` (its report.json is there), `failed` (the sweep recorded why, and
    running it again would fail the same way), `resume` (interrupted: config.json but no report;
    finished members are kept, the others continue from their newest checkpoint), else `new`
    (never started, or stopped before it wrote its config)."""
    if has_report:
        return "done"
    if recorded_failure is not None:
        return "failed"
    return "resume" if has_config else "new"


def cell_failure(error: BaseException) -> Optional[str]:
    """Why a run failed, when the failure belongs to its cell's settings (bad input for them, a
    divergence, the autoencoder's own code, too few usable members): recorded, and the sweep goes on.
    None for what stops the sweep instead (Ctrl-C, SIGTERM, a lost cluster, a full disk): it can be resumed."""
    if isinstance(error, KeyboardInterrupt) or not isinstance(error, Exception):
        return None
    if isinstance(error, MemberFailed) and isinstance(error.cause, OSError):  # a full disk: free it, then resume
        return None
    if isinstance(error, (InputError, NeedsNewRun, MemberFailed)):
        return f"{type(error).__name__}: {error}"
    if type(error) is RuntimeError and "min_members" in str(error):  # the driver's "too few usable members"
        return f"{error}"
    return None


def run_work(members: int, epochs: int, train_images: int, baseline_epochs: int, baseline_width: float) -> float:
    """A run's training work in image-epochs (the baseline's weighted by its parameters, ~ width^2)."""
    return float(train_images) * (members * epochs + baseline_epochs * baseline_width ** 2)


def seconds_per_work(measured: Sequence[tuple[float, float]]) -> float:
    """Seconds per image-epoch beyond start-up, from finished runs' (work, seconds); RATE_S before any."""
    if not measured:
        return RATE_S
    return max(sum(max(seconds - START_S, 0.0) for _, seconds in measured) / max(sum(w for w, _ in measured), 1.0),
               0.0)


def estimate_seconds(works: Sequence[float], measured: Sequence[tuple[float, float]], side_by_side: int = 1) -> float:
    """Time the runs of `works` take: each START_S plus its work at the measured rate, `side_by_side`
    at a time (cells in parallel share the cluster, so the saving is taken at face value only for
    start-up)."""
    rate = seconds_per_work(measured)
    starts = START_S * math.ceil(len(works) / max(side_by_side, 1))
    return starts + rate * sum(works)


def cells_side_by_side(requested: int, available: dict[str, float], run_demand: dict[str, float]) -> int:
    """How many cells run at once: `requested` (--parallel-cells), but no more than the cluster's free
    resources hold whole runs (each run's members at once), and at least 1 (Ray queues what does not fit)."""
    fits = min((math.floor(available.get(kind, 0.0) / amount) for kind, amount in run_demand.items() if amount > 0),
               default=requested)
    return max(1, min(requested, fits))


@dataclass(frozen=True)
class Counts:
    cells_done: int
    cells_running: int
    cells_left: int
    runs_done: int
    runs_total: int


def counts(cell_states: Sequence[Sequence[str]]) -> Counts:
    """Cells done (every run done or failed), running (some finished or started), left (none yet);
    `cell_states` holds each cell's run states: done, failed, running, or anything else (pending)."""
    finished = [sum(s in ("done", "failed") for s in runs) for runs in cell_states]
    running = [any(s == "running" for s in runs) for runs in cell_states]
    done = sum(f == len(runs) for f, runs in zip(finished, cell_states, strict=True))
    busy = sum((r or f > 0) and f < len(runs) for r, f, runs in zip(running, finished, cell_states, strict=True))
    return Counts(done, busy, len(cell_states) - done - busy, sum(finished), sum(len(r) for r in cell_states))


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def progress_line(run_name: str, outcome: str, state: Counts, eta_seconds: Optional[float]) -> str:
    """One line per finished run: what it gave, then the count of cells and the time left."""
    eta = "" if eta_seconds is None else f"; about {duration_text(eta_seconds)} left"
    return (f"[sweep] {run_name}: {outcome} | cells {state.cells_done} done, {state.cells_running} running, "
            f"{state.cells_left} left; runs {state.runs_done}/{state.runs_total}{eta}")


DATASET_IMAGES = {"digits": 1797, "mnist-5k": 5000, "mnist": 70000, "cifar10": 60000}  # others: unknown here
AUTO_TRAIN, AUTO_SHARE = 3000, 0.6


def train_images(name: str, train_size) -> int:
    """The training images a run will use, for the estimate only (the run resolves the real count)."""
    total = DATASET_IMAGES.get(name)
    if isinstance(train_size, int):
        return train_size
    if isinstance(train_size, float):
        return round(train_size * (total or AUTO_TRAIN / AUTO_SHARE))
    if total is None:
        return AUTO_TRAIN
    return round(AUTO_SHARE * total) if train_size is None or total < AUTO_TRAIN / AUTO_SHARE else AUTO_TRAIN
