"""run(): launch members + baseline on Ray, gather, select, combine, report."""

from __future__ import annotations

import functools
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import ray

from classifier.persistence import save_combiner
from ensemble.config import EnsembleConfig, build_config
from ensemble.data import Splits, load_splits
from ensemble.eager import baseline_should_stop, member_fixed_epoch, member_should_stop, select_epoch
from ensemble.errors import InputError
from ensemble.evaluation import fit_and_score, load_autoencoder
from ensemble.parallel import MemberRun, alive_node_resources, ray_session, train_in_parallel
from ensemble.placement import Share, baseline_share, infeasible_reason, parallel_slots
from ensemble.plots import write_plots
from ensemble.progress import ProgressPrinter
from ensemble.recovery import too_few_members
from ensemble.report import (REPORT_JSON, BaselineReport, DatasetReport, EnsembleReport, EpochSpan, MemberReport,
                             RunReport, verdict)
from ensemble.result import COMBINER, RunResult, save_normalizer
from ensemble.storage import is_uri, join_uri, occupied, open_mirror, read_text, split_uri
from workers.actor import MemberSpec
from workers.models import AutoencoderFactory, CAEFactory, baseline_width, check_autoencoder
from workers.history import read_history
from workers.training import HISTORY, TrainSettings

BASELINE = "baseline"


def member_name(index: int) -> str:
    return f"member_{index:02d}"


def member_seed(seed: int, index: int) -> int:
    """Distinct, reproducible seeds per member; the baseline (index -1) gets its own too."""
    return seed * 1000 + index + 1


def default_run_name() -> str:
    return datetime.now().strftime("run-%Y%m%d-%H%M%S")


def create_run_dir(config: EnsembleConfig) -> Path:
    """A new, empty run directory; an existing one is never overwritten (its results are kept)."""
    name = config.name or default_run_name()
    run_dir = Path(config.output) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise occupied(str(run_dir))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the run directory {str(run_dir)!r}: {err.strerror}.") from None
    return run_dir


def _run_file(run_dir: str | Path, name: str) -> Optional[str]:
    """The text of a file in a run directory, local or at a URI; None if it is not there."""
    if is_uri(run_dir):
        return read_text(join_uri(str(run_dir), name))
    path = Path(run_dir) / name
    return path.read_text() if path.is_file() else None


def resume_config(run_dir: str | Path) -> EnsembleConfig:
    """The config of an interrupted run (a local path or a URI), with `output` and `name`
    pointing back at it."""
    config_text = _run_file(run_dir, "config.json")
    if config_text is None:
        raise InputError(f"{str(run_dir)!r} is not a run directory (no config.json); nothing to resume.")
    if _run_file(run_dir, REPORT_JSON) is not None:
        raise InputError(f"the run in {str(run_dir)!r} already finished (report.json exists); nothing to resume.")
    output, name = split_uri(str(run_dir)) if is_uri(run_dir) else (Path(run_dir).parent, Path(run_dir).name)
    return build_config(json.loads(config_text), [f"output={output}", f"name={name}"])


def start_or_resume(config: EnsembleConfig) -> tuple[EnsembleConfig, bool]:
    """For a job a scheduler may retry: the saved config and True if output/name holds an
    interrupted run, else `config` and False (a new run). A finished run there is an error,
    as it is for --resume."""
    run_dir = join_uri(config.output, config.name) if is_uri(config.output) else Path(config.output) / config.name
    if _run_file(run_dir, "config.json") is None:
        return config, False
    return resume_config(run_dir), True


def run(config: Optional[EnsembleConfig] = None, autoencoder: Optional[AutoencoderFactory] = None,
        dataset=None, on_event: Optional[Callable[[dict], None]] = None, resume: bool = False) -> RunResult:
    """Train the eager ensemble and the monolithic baseline, then compare them.

    `autoencoder`: zero-argument callable returning an nn.Module with forward (reconstruction)
    and encode (features). `dataset`: a torch Dataset of (image, label) or an (images, labels) pair.
    `resume`: continue the interrupted run in output/name (see `resume_config`): finished members
    are not retrained, unfinished ones continue from their newest valid checkpoint.
    """
    config = config or EnsembleConfig()
    # --- validate every input before anything is started or written ---
    splits = load_splits(config.data, config.seed, dataset)
    cae = functools.partial(CAEFactory, splits.image_shape, config.model.channels, config.model.kernel_size,
                            config.model.activation, config.model.pooling)
    member_factory = autoencoder or cae()
    check_autoencoder(member_factory, splits.train_x[:2])
    width = baseline_width(config.members, config.baseline.width)
    baseline_factory = cae(width=width)
    member_share = Share(config.resources.cpus_per_member, config.resources.gpus_per_member)

    # an output URI is opened (and checked for an existing run) before Ray starts
    mirror = open_mirror(config.output, config.name or default_run_name(), resume) if is_uri(config.output) else None

    with ray_session():
        nodes = alive_node_resources()
        problem = infeasible_reason(nodes, member_share, "each member")
        if problem:
            raise InputError(problem)
        base_share = baseline_share(config.members, member_share, nodes)
        if mirror is not None:
            run_dir = mirror.local
        elif resume:
            run_dir = Path(config.output) / config.name
        else:
            run_dir = create_run_dir(config)
        if not resume:
            config = config.model_copy(update={"name": run_dir.name})
            (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
        save_normalizer(run_dir, splits.normalizer)
        push = mirror.push if mirror is not None else lambda final=False: None
        push()
        data_ref = ray.put({"train_x": splits.train_x.numpy(), "val_x": splits.val_x.numpy()})  # once, shared

        # --- phase 1: every member in parallel (Ray queues what does not fit) ---
        specs = [MemberSpec(member_name(i), str(run_dir / member_name(i)), member_factory,
                            train_settings(config, member_seed(config.seed, i)),
                            functools.partial(member_should_stop, config.eager, config.train.epochs),
                            member_seed(config.seed, i) if config.data.bootstrap else None)
                 for i in range(config.members)]
        show = on_event or ProgressPrinter([s.name for s in specs] + ([BASELINE] if config.baseline.enabled else []))

        def progress(event: dict) -> None:
            show(event)
            push()  # each epoch's checkpoint reaches the output URI as soon as the driver hears of it
        started = time.perf_counter()
        member_runs = train_in_parallel(specs, member_share, data_ref, progress, config.resources.max_restarts)
        members_train_wall = time.perf_counter() - started

        # --- phase 2: the monolithic baseline alone, with the ensemble's total resources ---
        baseline_run, baseline_train_wall = None, 0.0
        if config.baseline.enabled:
            spec = MemberSpec(BASELINE, str(run_dir / BASELINE), baseline_factory,
                              train_settings(config, member_seed(config.seed, -1)),
                              functools.partial(baseline_should_stop, config.baseline))
            started = time.perf_counter()
            baseline_run = train_in_parallel([spec], base_share, data_ref, progress,
                                             config.resources.max_restarts)[BASELINE]
            baseline_train_wall = time.perf_counter() - started

    # --- select checkpoints, freeze encoders, fit the combiners ---
    fixed = member_fixed_epoch(config.eager)
    member_reports = [_member_report(i, member_name(i), member_runs[member_name(i)], fixed, run_dir / member_name(i))
                      for i in range(config.members)]
    used = [m for m in member_reports if m.selected_epoch is not None]
    if all(m.diverged for m in member_reports):
        raise RuntimeError("every member diverged (non-finite loss), so there is nothing to combine; "
                           "lower train.lr or set train.grad_clip.")
    problem = too_few_members([m.name for m in used],
                              {m.name: m.stop_reason for m in member_reports if m.selected_epoch is None},
                              config.min_members)
    if problem:
        raise RuntimeError(problem)
    score = _score(config, splits, member_factory, run_dir, [(m.name, m.selected_epoch) for m in used])
    untrained = _score(config, splits, member_factory, run_dir, [(m.name, 0) for m in used])
    save_combiner(score.combiner, run_dir / COMBINER)
    ensemble_report = EnsembleReport(
        test_accuracy=score.test_accuracy, wall_seconds=members_train_wall + score.seconds,
        train_wall_seconds=members_train_wall, combiner_seconds=score.seconds,
        feature_seconds=score.feature_seconds, fit_seconds=score.fit_seconds,
        untrained_test_accuracy=untrained.test_accuracy, members_used=[m.index for m in used],
        resources=f"{config.members} members x {member_share.describe()}",
        parallel_slots=min(config.members, parallel_slots(nodes, member_share)))

    baseline_report = None
    if baseline_run is not None:
        base = _member_report(-1, BASELINE, baseline_run, None, run_dir / BASELINE)
        if base.selected_epoch is None:
            raise RuntimeError(f"the baseline has no usable checkpoint ({base.stop_reason}); lower train.lr or "
                               "set train.grad_clip if it diverged, then `ensemble run --resume RUN_DIR`.")
        base_score = _score(config, splits, baseline_factory, run_dir, [(BASELINE, base.selected_epoch)])
        save_combiner(base_score.combiner, run_dir / BASELINE / COMBINER)
        baseline_report = BaselineReport(
            **base.model_dump(), test_accuracy=base_score.test_accuracy,
            wall_seconds=baseline_train_wall + base_score.seconds, train_wall_seconds=baseline_train_wall,
            combiner_seconds=base_score.seconds, resources=base_share.describe(), width=width)

    report = RunReport(
        name=run_dir.name, members=member_reports, baseline=baseline_report, ensemble=ensemble_report,
        speedup=(baseline_report.wall_seconds / ensemble_report.wall_seconds) if baseline_report else None,
        verdict=verdict(ensemble_report, baseline_report), dataset=_dataset_report(splits),
        config=json.loads(config.model_dump_json()))
    write_plots(report, run_dir)
    report.write(run_dir)
    push(final=True)
    autoencoders = [load_autoencoder(member_factory, run_dir / m.name, m.selected_epoch) for m in used]
    return RunResult(report, run_dir, autoencoders, score.combiner, splits.normalizer,
                     mirror.uri if mirror is not None else None)


def train_settings(config: EnsembleConfig, seed: int) -> TrainSettings:
    t = config.train
    return TrainSettings(t.batch_size, t.lr, t.optimizer, t.momentum, t.grad_clip, seed, t.precision,
                         t.channels_last, t.compile)


def _member_report(index: int, name: str, run: MemberRun, fixed_epoch: Optional[int],
                   member_dir: Path) -> MemberReport:
    timeline = [EpochSpan(epoch=e, start=s, end=f) for e, s, f in run.epoch_spans]
    if run.outcome is None:  # lost: what it trained is on disk, but it is not used
        history = read_history(member_dir / HISTORY)
        return MemberReport(
            index=index, name=name, epochs_trained=len(history), selected_epoch=None,
            stop_reason=f"lost: {run.lost_reason}", selection_reason="excluded: lost", diverged=False,
            train_seconds=sum(r.seconds for r in history), history=[r.to_json() for r in history],
            timeline=timeline, placement=run.placement, restarts=run.restarts)
    outcome = run.outcome
    selection = select_epoch(outcome.history, fixed_epoch)
    return MemberReport(
        index=index, name=name, epochs_trained=outcome.epochs_trained, selected_epoch=selection.epoch,
        stop_reason=outcome.stop_reason, selection_reason=selection.reason, diverged=outcome.diverged,
        train_seconds=outcome.train_seconds, history=[r.to_json() for r in outcome.history],
        timeline=timeline, placement=run.placement, restarts=run.restarts)


def _score(config: EnsembleConfig, splits: Splits, factory, run_dir: Path, chosen: list[tuple[str, int]]):
    autoencoders = [load_autoencoder(factory, run_dir / name, epoch) for name, epoch in chosen]
    return fit_and_score(autoencoders, splits.train_x, splits.train_y, splits.test_x, splits.test_y,
                         config.combiner.kind, config.combiner.head, config.seed)


def _dataset_report(splits: Splits) -> DatasetReport:
    return DatasetReport(source=splits.source, image_shape=list(splits.image_shape), num_classes=splits.num_classes,
                         classes=list(splits.classes), labels=list(splits.label_values),
                         train=len(splits.train_y), val=len(splits.val_y), test=len(splits.test_y))
