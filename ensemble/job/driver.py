"""run(): the main job as five steps, each a module of `ensemble.job` with a `run` of its own:
`prepare` -> `train_members` -> `train_baseline` -> `evaluate` -> `write_report`.

`prepare` checks every input before Ray starts or anything is written. The members train in
parallel on a `MemberPool`, then the monolithic baseline alone with the ensemble's total
resources; `evaluate` picks each side's checkpoint, freezes the encoders and fits the combiners;
`write_report` writes report.json, report.md and the plots. This module only orders them: it
holds the run directory (`run_dir`), the Ray session and the tracker open around them, and
publishes the steps' events to the observers (`watching`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Union

from ensemble.builders import Autoencoders, run_name
from ensemble.config import EnsembleConfig, resolve
from ensemble.job import evaluate, prepare, train_baseline, train_members, write_report
from ensemble.job.evaluate import Evaluation
from ensemble.job.prepare import Plan
from ensemble.job.run_dir import open_run_dir, writing
from ensemble.job.watching import announce, roster, watching
from ensemble.observers.progress import Watch, progress_watch
from ensemble.observers.tracking import chained, open_tracker, tracked
from ensemble.report import RunReport
from ensemble.result import RunResult
from ensemble.runs.evaluation import frozen_member
from ensemble.scheduling.autoscaling import capacity
from ensemble.scheduling.beside import FitsBeside, fits_apart, fitted_image_bytes
from ensemble.scheduling.session import (
    alive_node_resources,
    cluster_autoscaler,
    ray_session,
    share_data,
    stored_splits,
)
from workers.errors import InputError
from workers.events import Event
from workers.models import AutoencoderFactory


def run(config: Optional[EnsembleConfig] = None, autoencoder: Autoencoders = None,
        dataset=None, on_event: Optional[Callable[[Event], None]] = None, resume: bool = False,
        watch: Optional[Watch] = None, unlabelled=None, progress: Union[str, Watch, None] = None,
        tracker=None, trust_code: bool = False, baseline_autoencoder: Optional[AutoencoderFactory] = None,
        plots: bool = True, **keys) -> RunResult:
    """Train the eager ensemble and the monolithic baseline, then compare them.

    Five steps: prepare (every input checked before Ray starts) -> train members -> train the
    baseline -> evaluate (freeze each side's chosen checkpoints, fit the combiners) -> report.

    Parameters
    ----------
    config : EnsembleConfig, default=None
        The run's settings; None: the embedded default (`EnsembleConfig()`), or the `keys`.
    autoencoder : callable or list of callables, default=None
        A zero-argument callable returning an nn.Module whose `forward(x)` returns the
        reconstruction and whose `encode(x)` returns the features, or a list of one per member
        (members that differ); None: the built-in CAE.
    dataset : torch Dataset or (images, labels) pair, default=None
        A Dataset of (image, label), or a pair of tensors/arrays; None: `config.data`.
    on_event : callable, default=None
        Called with every typed event (`workers.events`) as it happens, on the driver, in order;
        it replaces the progress display unless `progress` asks for one too.
    resume : bool, default=False
        Continue the interrupted run in output/name (see `ensemble.config.resume_config`):
        finished members are not retrained, unfinished ones continue from their newest valid
        checkpoint.
    watch : Watch, default=None
        Deprecated: pass the Watch as `progress` (a DeprecationWarning says so). Still honoured, and
        it wins over `progress`.
    unlabelled : array or tensor of images, default=None
        Images without labels (N x H x W, N x C x H x W or N x H x W x C, as the labelled ones):
        they join the autoencoders' training images only, never the combiner's or validation.
    progress : {"auto", "table", "lines", "quiet"} or Watch, default=None
        The progress display: auto (a table redrawn in place on a terminal, epoch lines in a
        notebook, a log or a file), table, lines, or quiet (nothing until the result; warnings
        still reach the `ensemble` logger); or an `ensemble.Watch` for Ray's logs, the dashboard or
        another stream as well. None: auto, or quiet when `on_event` is given.
    tracker : "mlflow" or tracker object, default=None
        Log the run to an experiment tracker as it trains (see `ensemble.observers.tracking`): one
        MLflow run with a nested run per member and the baseline.
    trust_code : bool, default=False
        Whether a resumed run may import the module its config.json names as `model.autoencoder`
        (a run directory may come from elsewhere); a new run's config is the caller's own, and trusted.
    baseline_autoencoder : callable, default=None
        The monolithic baseline's own model; None: the members' architecture made wider (a custom
        class must take a `width` keyword for that, or the run is refused before Ray starts).
    plots : bool, default=True
        Draw the run's PNG plots (validation loss, timeline, accuracy and wall-clock; report.md shows
        them). `EagerEnsembleClassifier` draws none for a fit it keeps in a temporary directory.
    **keys
        Config keys as a config file holds them, `run(members=3, train={"epochs": 2})`; laid over
        `config` when one is given. A bad key or value is an InputError naming it.

    Returns
    -------
    RunResult
        The report (report.json's model) and what `predict` needs.

    Raises
    ------
    InputError
        Bad input (config, data, paths, an autoencoder that cannot be built), before Ray starts.
    MemberFailed
        A member's own code raised while it trained.

    See Also
    --------
    ensemble.load : rebuild the RunResult from the run directory later.

    Examples
    --------
    >>> import ensemble
    >>> cfg = ensemble.EnsembleConfig(members=3)
    >>> result = ensemble.run(cfg)                                              # doctest: +SKIP
    >>> print(result.report.verdict)                                            # doctest: +SKIP
    >>> result = ensemble.run(cfg, progress="lines")  # epoch lines even on a terminal  # doctest: +SKIP
    """
    watch = progress_watch(progress, quiet_by_default=on_event is not None, watch=watch)  # bad names fail first
    tracker = open_tracker(tracker)
    resolved = resolve(config, keys=keys, resume=resume, dataset_given=dataset is not None)
    plan = prepare.run(resolved.config, autoencoder, dataset, resolved.resume, unlabelled, trust_code,
                       baseline_autoencoder)
    # one writer: a second command on this run stops here, before Ray starts or a tracker opens a run
    with writing(plan.config, plan.resume, plan.mirror) as run_dir, tracked(tracker, plan.config) as track:
        with ray_session(log_to_driver=watch.verbose, dashboard=watch.dashboard) as session, ExitStack() as ends:
            nodes = alive_node_resources()
            waiting = room_for_members(plan, nodes)
            open_run_dir(plan, run_dir)
            with watching(run_name(plan.config), run_dir, roster(plan, nodes), plan.mirror, chained(on_event, track),
                          watch) as (show, notice):
                announce(session, watch, waiting, notice)
                if getattr(track, "location", ""):
                    notice(track.location)
                data_ref = share_data(plan.splits)
                # the driver's images: the store's; its first copy is freed here, as nothing else holds the plan
                plan = replace(plan, splits=stored_splits(plan.splits, data_ref))
                apart = fits_apart(fitted_image_bytes(plan.splits))  # small data: in this process, no start to pay
                fits = ends.enter_context(FitsBeside(data_ref, apart))  # apart: its process starts while members train
                phases = train_members.run(plan, run_dir, data_ref, show, nodes)
                train_baseline.run(plan, run_dir, data_ref, show, phases)
            # in the session: the fits run beside the features, in the object store (`scheduling.beside`)
            evaluation = evaluate.run(plan, run_dir, phases, fits)
        report = write_report.run(plan, run_dir, phases, evaluation, plots)
        track.finish(run_dir, report)
    return run_result(plan, run_dir, report, evaluation)


def room_for_members(plan: Plan, nodes: list[dict]) -> str:
    """Why the run waits for the autoscaler ("" when a node can hold a member now); an InputError
    when no node the cluster has or can add could ever hold one."""
    room = capacity(nodes, None, plan.member_share, "each member")
    if room.action == "fail":  # no live node holds one: only then is the autoscaler worth its queries
        room = capacity(nodes, cluster_autoscaler(), plan.member_share, "each member")
    if room.action == "fail":
        raise InputError(room.message)
    return room.message


def run_result(plan: Plan, run_dir: Path, report: RunReport, evaluation: Evaluation) -> RunResult:
    """What `ensemble.run` returns: the report, with each usable member's chosen encoder loaded back
    from its checkpoint, the ensemble's combiner and the pixel scaling `predict` needs."""
    factories = plan.factories()
    autoencoders = [frozen_member(factories[m.name], run_dir, m) for m in evaluation.members
                    if m.selected_epoch is not None]
    return RunResult(report, run_dir, autoencoders, evaluation.score.combiner, plan.splits.normalizer,
                     plan.mirror.uri if plan.mirror is not None else None)
