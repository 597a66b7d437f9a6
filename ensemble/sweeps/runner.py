"""`ensemble sweep` / `ensemble.sweep(...)`: a base config, a grid of axes and K seeds per cell, every
cell x seed an ordinary run directory under OUTPUT/SWEEP_NAME/, summarised in sweep.json, sweep.md and
sweep.png (see `record`). Resumable: the run directories are the truth (a report.json: done; a
config.json alone: interrupted, resumed by the run's own resume, so no epoch trains twice), and
sweep.json adds the failures recorded so far. One writer: the sweep directory's lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ensemble.builders import run_name
from ensemble.config import EnsembleConfig, build_config, recorded_config, resume_config
from ensemble.runs.rundir import holds_files
from ensemble.runs.runlock import run_lock
from ensemble.storage import is_uri
from ensemble.sweeps import decisions
from ensemble.sweeps.files import write_record
from ensemble.sweeps.grid import Axis, Cell, cells, parse_axis
from ensemble.sweeps.record import SweepRecord, cell_record
from workers.errors import InputError
from workers.layout import CONFIG_JSON, REPORT_JSON, SWEEP_JSON

Grid = Union[Mapping[str, Sequence[Any]], Sequence[Union[str, Axis]]]


@dataclass(frozen=True)
class SweepPlan:
    name: str
    sweep_dir: Path
    base: EnsembleConfig
    axes: list[Axis]
    repeats: int
    cells: list[Cell]
    failures: dict[str, str]  # run name -> reason, as recorded before (a resumed sweep)
    resume: bool


def as_axes(grid: Grid) -> list[Axis]:
    """`{"members": [1, 5]}`, `["members=1,5"]` or Axis objects, as the axes they name."""
    if isinstance(grid, Mapping):
        return [Axis(key=str(key), values=list(values)) for key, values in grid.items()]
    return [axis if isinstance(axis, Axis) else parse_axis(str(axis)) for axis in grid]


def plan_sweep(config: Optional[EnsembleConfig], grid: Grid = (), repeats: int = 1, name: Optional[str] = None,
               resume: Optional[str | Path] = None) -> SweepPlan:
    """Every check that needs no Ray: the axes against the config, the sweep directory (new: not there
    yet; resumed: its sweep.json), and each cell's runs."""
    if resume is not None:
        sweep_dir = Path(resume)
        record = SweepRecord.read(sweep_dir)
        base = build_config(record.base_config, [f"output={sweep_dir.parent}"])
        axes, repeats, name, failures = record.axes, record.repeats, sweep_dir.name, record.failures()
    else:
        base = config or EnsembleConfig()
        name = name or base.name or datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
        if is_uri(base.output):
            raise InputError(f"a sweep writes its record next to its runs and needs a local or shared --output "
                             f"directory, not the URI {base.output!r}.")
        sweep_dir, axes, failures = Path(base.output) / name, as_axes(grid), {}
        if holds_files(sweep_dir):
            hint = (f"continue it with: ensemble sweep --resume {sweep_dir}" if (sweep_dir / SWEEP_JSON).is_file()
                    else "choose another --name (or --output)")
            raise InputError(f"{str(sweep_dir)!r} already exists and is not empty; {hint}. Nothing was changed.")
    base = base.model_copy(update={"name": None})
    return SweepPlan(name, sweep_dir, base, axes, repeats, cells(base, axes, repeats, str(sweep_dir)), failures,
                     resume is not None)


def run_work(config: EnsembleConfig) -> float:
    baseline = config.baseline
    width = baseline.width if baseline.width is not None else config.members ** 0.5
    return decisions.run_work(config.members, config.train.epochs,
                              decisions.train_images(config.data.name, config.data.train_size),
                              baseline.max_epochs if baseline.enabled else 0, width)


def dry_run_text(plan: SweepPlan, side_by_side: int = 1) -> str:
    """The cells, their runs, what each run still needs and an estimate of the time (no Ray started)."""
    lines = [f"Sweep {plan.name} in {plan.sweep_dir}: {len(plan.cells)} cell(s) x {plan.repeats} seed(s) = "
             f"{len(plan.cells) * plan.repeats} run(s)" + (" (resumed)" if plan.resume else "") + "."]
    remaining, measured = [], []
    for cell in plan.cells:
        settings = ", ".join(f"{key}={value!r}" for key, value in cell.settings.items())
        lines.append(f"  {cell.name}: {settings}")
        for config in cell.runs:
            state = state_of(plan, config)
            seconds = finished_seconds(plan.sweep_dir / run_name(config)) if state == "done" else None
            if seconds is not None:
                measured.append((run_work(config), seconds))
            elif state in ("new", "resume"):
                remaining.append(run_work(config))
            lines.append(f"    {run_name(config)}  seed {config.seed}: {state}")
    how = "from the runs measured so far" if measured else decisions.FIRST_MEASURES
    lines.append(f"{len(remaining)} run(s) to train; estimated time about "
                 f"{decisions.duration_text(decisions.estimate_seconds(remaining, measured, side_by_side))} ({how}, "
                 f"{side_by_side} cell(s) at a time). Dry run: Ray was not started, nothing was written.")
    return "\n".join(lines)


def state_of(plan: SweepPlan, config: EnsembleConfig) -> decisions.RunState:
    run_dir = plan.sweep_dir / run_name(config)
    return decisions.run_state((run_dir / REPORT_JSON).is_file(), (run_dir / CONFIG_JSON).is_file(),
                               plan.failures.get(run_name(config)))


def finished_seconds(run_dir: Path) -> Optional[float]:
    """A finished run's wall-clock: its ensemble's and its baseline's (what the sweep waited for)."""
    from ensemble.report import RunReport
    report = RunReport.read(run_dir)
    return report.ensemble.wall_seconds + (report.baseline.wall_seconds if report.baseline else 0.0)


@dataclass
class Tracker:
    """The sweep's state while it runs (threads of side-by-side cells share it): which runs run, which
    failed, what finished runs measured; writes sweep.json/.md after every run and prints the line."""
    plan: SweepPlan
    on_line: Callable[[str], None]
    side_by_side: int = 1
    running: set[str] = field(default_factory=set)
    measured: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self) -> SweepRecord:
        base = recorded_config(self.plan.base)
        base.pop("name", None)
        base.pop("output", None)
        return SweepRecord(name=self.plan.name, axes=self.plan.axes, repeats=self.plan.repeats, base_config=base,
                           cells=[cell_record(cell, self.plan.sweep_dir, self.plan.failures, self.running)
                                  for cell in self.plan.cells])

    def write(self, plot: bool = False) -> SweepRecord:
        with self.lock:
            record = self.record()
            write_record(record, self.plan.sweep_dir, plot)
            return record

    def started(self, name: str) -> None:
        with self.lock:
            self.running.add(name)

    def ended(self, config: EnsembleConfig, outcome: str, seconds: Optional[float], failure: Optional[str]) -> None:
        with self.lock:
            self.running.discard(run_name(config))
            if failure is not None:
                self.plan.failures[run_name(config)] = failure
            if seconds is not None:
                self.measured.append((run_work(config), seconds))
            record = self.record()
            write_record(record, self.plan.sweep_dir, plot=False)
            states = [[run.status for run in cell.runs] for cell in record.cells]
            left = [run_work(c) for cell in self.plan.cells for c in cell.runs
                    if state_of(self.plan, c) in ("new", "resume")]
            eta = decisions.estimate_seconds(left, self.measured, self.side_by_side) if left else 0.0
            self.on_line(decisions.progress_line(run_name(config), outcome, decisions.counts(states), eta))


def outcome_text(report) -> str:
    baseline = report.baseline
    return (f"ensemble {report.ensemble.test_accuracy:.4f}"
            + (f", baseline {baseline.test_accuracy:.4f}, speed-up {report.speedup:.2f}x" if baseline else "")
            + f" ({report.ensemble.wall_seconds + (baseline.wall_seconds if baseline else 0.0):.0f} s)")


def run_one(tracker: Tracker, config: EnsembleConfig, options: dict) -> None:
    """One cell x seed: skipped when done or failed before, resumed when interrupted (the run's own
    resume: finished members kept, no epoch twice), else started. A failure of the cell's own
    settings is recorded and the sweep goes on; anything else (Ctrl-C, SIGTERM, a lost cluster) stops it."""
    from ensemble.job.driver import run  # Ray and PyTorch: only once something trains
    state = state_of(tracker.plan, config)
    if state in ("done", "failed"):
        return
    run_dir = tracker.plan.sweep_dir / run_name(config)
    tracker.started(run_name(config))
    try:
        if state == "resume":
            result = run(resume_config(run_dir), resume=True, progress="quiet", autoencoder=options["autoencoder"],
                         dataset=options["dataset"], trust_code=options["trust_code"])
        else:
            result = run(config, autoencoder=options["autoencoder"], dataset=options["dataset"], progress="quiet")
    except BaseException as error:
        reason = decisions.cell_failure(error)
        if reason is None:
            with tracker.lock:
                tracker.running.discard(run_name(config))
            raise
        tracker.ended(config, f"failed: {reason}", None, reason)
        return
    tracker.ended(config, outcome_text(result.report), finished_seconds(result.run_dir), None)


def run_cells(tracker: Tracker, options: dict) -> None:
    """Cells one after another, each using the whole cluster; or `side_by_side` cells at once, each in
    its own thread of this driver (Ray places their members by its own resource accounting and queues
    what does not fit). The first error that stops the sweep is raised once the others have stopped."""
    if tracker.side_by_side <= 1:
        for cell in tracker.plan.cells:
            for config in cell.runs:
                run_one(tracker, config, options)
        return
    queue = list(tracker.plan.cells)
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            with tracker.lock:
                if not queue:
                    return
                cell = queue.pop(0)
            try:
                for config in cell.runs:
                    run_one(tracker, config, options)
            except BaseException as error:  # handed to the main thread, which raises it
                errors.append(error)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(tracker.side_by_side)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):  # joined in steps: Ctrl-C reaches the main thread
        for thread in threads:
            thread.join(timeout=0.5)
    if errors:
        raise errors[0]


@dataclass(frozen=True)
class SweepResult:
    record: SweepRecord
    sweep_dir: Path


def sweep(config: Optional[EnsembleConfig] = None, grid: Grid = (), repeats: int = 1, *, name: Optional[str] = None,
          resume: Optional[str | Path] = None, parallel_cells: int = 1, autoencoder=None, dataset=None,
          trust_code: bool = False, on_line: Optional[Callable[[str], None]] = print) -> SweepResult:
    """Run every cell of a grid `repeats` times (seeds seed, seed+1, ...) and summarise each cell.

    Parameters
    ----------
    config : EnsembleConfig, default=None
        The base config every cell starts from (its `output` holds the sweep's directory); None: defaults.
    grid : dict or list of str, default=()
        The axes: `{"members": [1, 5], "data.train_size": [480, 1200]}` or `["members=1,5", ...]`.
    repeats : int, default=1
        Seeds per cell, as `ensemble run --repeats` draws them.
    name : str, default=None
        The sweep directory's name under `config.output`; None: `config.name`, else a time stamp.
    resume : path, default=None
        A sweep directory to continue (its own sweep.json gives the config, grid and repeats): only
        the runs not finished train, interrupted ones from their newest checkpoints.
    parallel_cells : int, default=1
        Cells run side by side, at most as many as the cluster's free resources hold whole runs.
    autoencoder, dataset, trust_code
        As `ensemble.run` takes them, for every run.
    on_line : callable, default=print
        Gets one line per finished run (with the count of cells and the time left); None: silent.

    Returns
    -------
    SweepResult
        The record (sweep.json's model) and the sweep directory.

    Examples
    --------
    >>> import ensemble
    >>> cfg = ensemble.EnsembleConfig(members=5, output="runs")
    >>> done = ensemble.sweep(cfg, {"members": [1, 5]}, repeats=3, name="paper")     # doctest: +SKIP
    >>> print(done.sweep_dir / "sweep.md")                                         # doctest: +SKIP
    """
    if parallel_cells < 1:
        raise InputError(f"--parallel-cells must be at least 1, not {parallel_cells}.")
    plan = plan_sweep(config, grid, repeats, name, resume)
    return execute(plan, parallel_cells, {"autoencoder": autoencoder, "dataset": dataset, "trust_code": trust_code},
                   on_line or (lambda line: None))


def execute(plan: SweepPlan, parallel_cells: int, options: dict, on_line: Callable[[str], None]) -> SweepResult:
    from ensemble.scheduling.session import free_resources, ray_session
    from ensemble.scheduling.warm_actors import release_actors
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(plan.sweep_dir):  # one writer per sweep; each run also holds its own directory's lock
        tracker = Tracker(plan, on_line)
        tracker.write()
        try:
            with ray_session():
                demand = run_demand([config for cell in plan.cells for config in cell.runs])
                release_actors()  # an earlier run's kept actors would hold what the cells need, and count as busy
                tracker.side_by_side = decisions.cells_side_by_side(parallel_cells, free_resources(), demand)
                on_line(f"[sweep] {plan.name}: {len(plan.cells)} cell(s) x {plan.repeats} seed(s), "
                        f"{tracker.side_by_side} cell(s) at a time, in {plan.sweep_dir}")
                run_cells(tracker, options)
        finally:  # stopped or finished: the record says where every run stands
            record = tracker.write(plot=True)
    return SweepResult(record, plan.sweep_dir)


def run_demand(configs: Sequence[EnsembleConfig]) -> dict[str, float]:
    """What the largest run holds while its members train together."""
    return {"CPU": max(c.resources.cpus_per_member * c.members for c in configs),
            "GPU": max(c.resources.gpus_per_member * c.members for c in configs)}
