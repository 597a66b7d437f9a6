"""run(): the main job as five steps, prepare -> train members -> train baseline -> evaluate -> report.

Every input is checked in `prepare`, before Ray starts or anything is written. The members
train in parallel on a `MemberPool`, then the monolithic baseline alone with the ensemble's
total resources; `evaluate` picks each side's checkpoint, freezes the encoders and fits the
combiners; `write_report` writes report.json, report.md and the plots.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Union, overload

import ray

from classifier.persistence import save_combiner
from ensemble.builders import (
    Autoencoders,
    baseline_factory,
    baseline_rule,
    member_encoding,
    member_factories,
    member_fixed_epoch,
    member_rule,
    member_seed,
    run_name,
    train_settings,
)
from ensemble.config import ARRAYS, EnsembleConfig, as_built, recorded_config, resolve
from ensemble.data import Splits, load_splits
from ensemble.data.records import save_splits
from ensemble.job.failures import diverged
from ensemble.observers.logs import RunLogs, event_files
from ensemble.observers.metrics import RunMetrics
from ensemble.observers.progress import Entry, Watch, open_display, progress_watch
from ensemble.observers.tracking import chained, open_tracker, tracked
from ensemble.report import BaselineReport, EnsembleReport, MemberReport, RunReport
from ensemble.report.entries import (
    CombinerScore,
    baseline_report,
    dataset_report,
    ensemble_report,
    with_diversity,
)
from ensemble.report.files import write_report_files
from ensemble.report.plots import write_plots
from ensemble.report.verdict import TestPredictions, verdict, with_accuracy_intervals
from ensemble.result import RunResult, save_normalizer
from ensemble.runs.evaluation import load_autoencoder, score_checkpoints, score_run
from ensemble.runs.identity import new_run_id
from ensemble.runs.rundir import (
    check_checkpoints_fit,
    check_output,
    create_run_dir,
    holds_files,
    saved_run_id,
    write_config,
)
from ensemble.runs.runlock import run_lock
from ensemble.scheduling.autoscaling import capacity
from ensemble.scheduling.placement import Share, baseline_share, heads_in_actors, parallel_slots
from ensemble.scheduling.pool import MemberPool, too_few_members
from ensemble.scheduling.records import MemberRecord, member_report
from ensemble.scheduling.session import Session, alive_node_resources, cluster_autoscaler, ray_session, share_data
from ensemble.scheduling.shipping import check_code_ships
from ensemble.storage import Mirror, is_uri, occupied, open_mirror
from workers.actor import MemberSpec
from workers.encoding import EncodedEpochs, EncodeRequest
from workers.errors import InputError
from workers.events import Event
from workers.layout import BASELINE, COMBINER, member_name
from workers.models import AutoencoderFactory, architecture, autoencoder_path, check_autoencoder
from workers.packed import check_packable_settings, check_stackable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What `prepare` decided, every input checked, before anything starts."""
    config: EnsembleConfig            # with its run name
    splits: Splits
    member_factories: list[AutoencoderFactory]  # one per member (members may differ)
    baseline_factory: Optional[AutoencoderFactory]  # None: baseline.enabled=false
    member_share: Share
    resume: bool
    mirror: Optional[Mirror] = None   # the output URI's mirror, when output is one
    members_per_actor: Union[int, str] = 1  # as configured, checked: members that cannot be packed give 1
    architectures: dict[str, dict] = field(default_factory=dict)  # by member directory name, baseline too
    run_id: Optional[str] = None      # the run's id (`ensemble.runs.identity`); None: resuming a run from before ids

    def factories(self) -> dict[str, AutoencoderFactory]:
        """Each member directory's autoencoder factory, the baseline's too."""
        named = {member_name(i): factory for i, factory in enumerate(self.member_factories)}
        return named | ({BASELINE: self.baseline_factory} if self.baseline_factory is not None else {})


@dataclass
class Phases:
    """What the training phases left: each member's run and the baseline's, with wall-clocks."""
    members: dict[str, MemberRecord]
    members_wall: float
    baseline: Optional[MemberRecord]
    baseline_wall: float
    baseline_share: Share
    slots: int


@dataclass(frozen=True)
class Evaluation:
    members: list[MemberReport]
    ensemble: EnsembleReport
    baseline: Optional[BaselineReport]
    score: CombinerScore
    predictions: Optional[TestPredictions]  # each side's on the same test images (None: no test split)


def run(config: Optional[EnsembleConfig] = None, autoencoder: Autoencoders = None,
        dataset=None, on_event: Optional[Callable[[Event], None]] = None, resume: bool = False,
        watch: Optional[Watch] = None, unlabelled=None, progress: Optional[str] = None,
        tracker=None, trust_code: bool = False, baseline_autoencoder: Optional[AutoencoderFactory] = None,
        **keys) -> RunResult:
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
        it replaces the progress display unless `progress` or `watch` asks for one too.
    resume : bool, default=False
        Continue the interrupted run in output/name (see `ensemble.config.resume_config`):
        finished members are not retrained, unfinished ones continue from their newest valid
        checkpoint.
    watch : Watch, default=None
        The progress display, Ray's logs and dashboard (`progress.Watch`); it wins over `progress`.
    unlabelled : array or tensor of images, default=None
        Images without labels (N x H x W, N x C x H x W or N x H x W x C, as the labelled ones):
        they join the autoencoders' training images only, never the combiner's or validation.
    progress : {"auto", "table", "lines", "quiet"}, default=None
        The progress display: auto (a live table on a terminal, epoch lines in a notebook, a log
        or a file), table, lines, or quiet (nothing until the result; warnings still reach the
        `ensemble` logger). None: auto, or quiet when `on_event` is given.
    tracker : "mlflow" or tracker object, default=None
        Log the run to an experiment tracker as it trains (see `ensemble.observers.tracking`): one
        MLflow run with a nested run per member and the baseline.
    trust_code : bool, default=False
        Whether a resumed run may import the module its config.json names as `model.autoencoder`
        (a run directory may come from elsewhere); a new run's config is the caller's own, and trusted.
    baseline_autoencoder : callable, default=None
        The monolithic baseline's own model; None: the members' architecture made wider (a custom
        class must take a `width` keyword for that, or the run is refused before Ray starts).
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
    """
    watch = watch or progress_watch(progress, quiet_by_default=on_event is not None)  # bad names fail first
    tracker = open_tracker(tracker)
    resolved = resolve(config, keys=keys, resume=resume, dataset_given=dataset is not None)
    plan = prepare(resolved.config, autoencoder, dataset, resolved.resume, unlabelled, trust_code,
                   baseline_autoencoder)
    # one writer: a second command on this run stops here, before Ray starts or a tracker opens a run
    with writing(plan) as run_dir, tracked(tracker, plan.config) as track:
        with ray_session(log_to_driver=watch.verbose, dashboard=watch.dashboard) as session:
            nodes = alive_node_resources()
            room = capacity(nodes, cluster_autoscaler(), plan.member_share, "each member")
            if room.action == "fail":
                raise InputError(room.message)
            open_run_dir(plan, run_dir)
            with watching(plan, run_dir, nodes, chained(on_event, track), watch) as (show, notice):
                announce(session, watch, room.message, notice)
                if getattr(track, "location", ""):
                    notice(track.location)
                data_ref = share_data(plan.splits)
                phases = train_members(plan, run_dir, data_ref, show, nodes)
                train_baseline(plan, run_dir, data_ref, show, phases)
        evaluation = evaluate(plan, run_dir, phases)
        report = write_report(plan, run_dir, phases, evaluation)
        track.finish(run_dir, report)
    factories = plan.factories()
    autoencoders = [load_autoencoder(factories[name], run_dir / name, epoch)
                    for name, epoch in chosen_checkpoints(evaluation.members)]
    return RunResult(report, run_dir, autoencoders, evaluation.score.combiner, plan.splits.normalizer,
                     plan.mirror.uri if plan.mirror is not None else None)


# --- step 1: prepare ---

def prepare(config: EnsembleConfig, autoencoder: Autoencoders, dataset, resume: bool, unlabelled=None,
            trust_code: bool = False, baseline_autoencoder: Optional[AutoencoderFactory] = None) -> Plan:
    """Load and split the data, check the autoencoders on one batch, open an output URI: everything
    that can be wrong with the input fails here, before Ray starts. `config` comes resolved and named
    (`ensemble.config.resolve`); the plan's records what was built with it (`as_built`)."""
    run_dir = Path(config.output) / config.name if resume and config.name else None
    splits = load_splits(config.data, config.seed, dataset, unlabelled, run_dir)
    if splits.note:  # the sizes differ from what was asked: worth a warning, not only an info line
        log.warning(splits.note)
    factories, base, architectures, built_as = build_models(config, splits, autoencoder, baseline_autoencoder,
                                                            trust_code or not resume)
    config = as_built(config, data=splits.data, **built_as)  # `auto` sizes as drawn, classes by name
    check_code_ships(os.environ.get("RAY_ADDRESS"), ray.is_initialized(),
                     [record["class"] for record in architectures.values() if record and record.get("class")])
    mirror = open_mirror(config.output, run_name(config), resume) if is_uri(config.output) else None
    if mirror is None and not resume:
        check_output(config.output, run_name(config))  # checked again when the directory is created
    run_id: Optional[str] = new_run_id()  # a resumed run from before ids has none
    if resume:  # the checkpoints must be this run's and fit config.json's model: checked here, before Ray starts
        built = {member_name(i): factory for i, factory in enumerate(factories)}
        location = mirror.local if mirror else Path(config.output) / run_name(config)
        run_id = saved_run_id(mirror.uri if mirror else location)
        check_checkpoints_fit(location, built | ({BASELINE: base} if base is not None else {}), run_id)
    share = Share(config.resources.cpus_per_member, config.resources.gpus_per_member)
    return Plan(config, splits, factories, base, share, resume, mirror, pack_size(config, factories, splits),
                architectures, run_id)


def build_models(config: EnsembleConfig, splits: Splits, autoencoder: Autoencoders,
                 baseline_autoencoder: Optional[AutoencoderFactory], trust_code: bool
                 ) -> tuple[list[AutoencoderFactory], Optional[AutoencoderFactory], dict[str, dict], dict]:
    """Each member's factory and the baseline's (None: baseline.enabled=false), each built once on a
    batch; each side's architecture record; and what `as_built` records of them: the classes given
    from Python by name (module:QualName, so load() and `ensemble select` can rebuild them) and the
    baseline's width when the members' architecture was widened."""
    factories = member_factories(config, splits.image_shape, autoencoder, trust_code)
    built = [check_autoencoder(factory, splits.train_x[:2]) for factory in factories]
    built_as: dict = {}
    if autoencoder is not None:
        built_as["autoencoder"] = [autoencoder_path(f, m) for f, m in zip(factories, built, strict=True)]
    base = None
    if config.baseline.enabled:
        base = baseline_factory(config, splits.image_shape, factories, baseline_autoencoder, trust_code)
        built.append(check_autoencoder(base, splits.train_x[:2]))
        if baseline_autoencoder is not None:  # recorded by name, as the members' class is
            built_as["baseline_autoencoder"] = autoencoder_path(base, built[-1])
        built_as["baseline_width"] = getattr(base, "width", None)
    names = [member_name(i) for i in range(config.members)] + [BASELINE] * (base is not None)
    architectures = {name: architecture(factory, model)
                     for name, factory, model in zip(names, [*factories, *([base] if base is not None else [])], built,
                                                     strict=True)}
    return factories, base, architectures, built_as


def pack_size(config: EnsembleConfig, factories: list[AutoencoderFactory], splits: Splits) -> Union[int, str]:
    """`resources.members_per_actor`, checked before anything starts: members asked to train packed must
    be stackable with these settings (an InputError otherwise); with "auto", members that cannot be
    packed (a custom autoencoder with buffers, say) simply train alone. Members that differ never
    pack: a pack runs its first member's forward pass for all (a CAE with another activation has
    the same parameter shapes, so the stacking check alone would not see it)."""
    wanted = config.resources.members_per_actor
    if wanted == 1 or config.members == 1:
        return 1
    try:
        if any(factory != factories[0] for factory in factories):
            raise InputError("members that differ (model.overrides, or a list of autoencoders) cannot train "
                             "packed; set resources.members_per_actor=1 to train each member on its own.")
        check_packable_settings(train_settings(config, config.seed))
        check_stackable([factories[0](), factories[0]()], splits.train_x[:2])
    except InputError:
        if wanted == "auto":
            return 1
        raise
    return wanted


@contextmanager
def writing(plan: Plan) -> Iterator[Path]:
    """The run directory (created for a new run) with its writer's lock held (`runlock`) for the
    length of a `with`. A new directory that got nothing but the lock is removed again on failure."""
    config = plan.config
    if plan.mirror is not None:
        run_dir = plan.mirror.local
    elif plan.resume:
        run_dir = Path(config.output) / run_name(config)
    else:
        run_dir = create_run_dir(config.output, run_name(config))
    new = not plan.resume and plan.mirror is None
    try:
        with run_lock(run_dir):
            if new and holds_files(run_dir):  # another command created it between our check and our lock
                raise occupied(str(run_dir))
            yield run_dir
    except BaseException:
        if new and not holds_files(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def open_run_dir(plan: Plan, run_dir: Path) -> None:
    """config.json (a new run) and normalization.json, written into the locked run directory."""
    config = plan.config
    if not plan.resume:
        write_config(run_dir, config, plan.run_id)
    save_normalizer(run_dir, plan.splits.normalizer)
    if config.data.name == ARRAYS and config.data.save_splits and not plan.resume:
        save_splits(run_dir, plan.splits)  # what select, curves and --resume need in a fresh process
    if plan.mirror is not None:
        plan.mirror.push()


@contextmanager
def watching(plan: Plan, run_dir: Path, nodes: list[dict], on_event: Optional[Callable[[Event], None]],
             watch: Watch) -> Iterator[tuple[Callable[[Event], None], Callable[[str], None]]]:
    """Where events go: the run directory's logs (progress.csv, TensorBoard), Ray's metrics
    (per-member gauges), the user's callback and the display, then the output URI's mirror, which
    uploads the files this event produced, so each epoch's checkpoint is on the store as soon as the
    driver hears of it. Yields the event handler and `notice` (a line every view shows)."""
    started = time.time()
    logs, metrics = RunLogs(run_dir, started), RunMetrics(run_name(plan.config))
    display = open_display(watch, roster(plan, nodes), started)

    def handle(event: Event) -> None:
        written = logs(event)
        metrics(event)
        if on_event is not None:
            on_event(event)
        display(event)
        if plan.mirror is not None:
            plan.mirror.push(event_files(event) + written)
    try:
        yield handle, display.notice
    finally:
        logs.close()
        display.close()


def roster(plan: Plan, nodes: list[dict]) -> list[Entry]:
    """Who the display follows: each member, then the baseline, with their epoch limits and shares."""
    config, share = plan.config, plan.member_share
    entries = [Entry(member_name(i), "members", config.train.epochs, share.cpus, share.gpus)
               for i in range(config.members)]
    if config.baseline.enabled:
        base = baseline_share(config.members, share, nodes)
        entries.append(Entry(BASELINE, "baseline", config.baseline.max_epochs, base.cpus, base.gpus))
    return entries


def announce(session: Session, watch: Watch, waiting: str, notice: Callable[[str], None]) -> None:
    """The lines a user must see before training starts: the dashboard's address, and why the
    run waits for the autoscaler when it does."""
    if watch.dashboard:
        token = " (token authentication: `ray get-auth-token` prints the token it asks for)" \
            if os.environ.get("RAY_AUTH_MODE") == "token" else ""
        notice(f"Ray dashboard: {session.dashboard_url}{token}" if session.dashboard_url
               else "Ray dashboard: not running (it needs ray[default]; see the Ray logs)")
    if waiting:
        notice(f"Waiting: {waiting}")


# --- steps 2 and 3: train the members, then the baseline ---

def train_members(plan: Plan, run_dir: Path, data_ref: ray.ObjectRef, show, nodes: list[dict]) -> Phases:
    """Every member in parallel; Ray queues what does not fit."""
    config = plan.config
    own_heads = heads_in_actors(config.members, parallel_slots(nodes, plan.member_share))
    encoding = member_encoding(config.eager, len(plan.splits.test_y) > 0, config.combiner if own_heads else None,
                               config.seed)
    specs = [MemberSpec(member_name(i), str(run_dir / member_name(i)), plan.member_factories[i],
                        train_settings(config, member_seed(config.seed, i), plan.run_id),
                        member_rule(config.eager, config.train.epochs),
                        member_seed(config.seed, i) if config.data.bootstrap else None, encoding)
             for i in range(config.members)]
    started = time.perf_counter()
    runs = MemberPool(plan.member_share, data_ref, show, config.resources.max_restarts,
                      config.resources.lend_idle_cpus, plan.members_per_actor).train(specs)
    wall = time.perf_counter() - started
    # the nodes now: an autoscaler may have added some while the members waited (scale from zero)
    now = alive_node_resources() or nodes
    slots = max(parallel_slots(nodes, plan.member_share), parallel_slots(now, plan.member_share))
    return Phases(runs, wall, None, 0.0, baseline_share(config.members, plan.member_share, now),
                  min(config.members, slots))


def train_baseline(plan: Plan, run_dir: Path, data_ref: ray.ObjectRef, show, phases: Phases) -> None:
    """The monolithic baseline alone, with the ensemble's total resources (one node's at most)."""
    config = plan.config
    if not config.baseline.enabled:
        return
    assert plan.baseline_factory is not None  # built whenever the baseline is enabled
    spec = MemberSpec(BASELINE, str(run_dir / BASELINE), plan.baseline_factory,
                      train_settings(config, member_seed(config.seed, -1), plan.run_id), baseline_rule(config.baseline),
                      encoding=EncodeRequest(reference=False))
    started = time.perf_counter()
    pool = MemberPool(phases.baseline_share, data_ref, show, config.resources.max_restarts)
    phases.baseline = pool.train([spec])[BASELINE]
    phases.baseline_wall = time.perf_counter() - started


# --- step 4: evaluate ---

def evaluate(plan: Plan, run_dir: Path, phases: Phases) -> Evaluation:
    """Select each member's checkpoint, freeze the encoders, fit the combiners, score on test."""
    config = plan.config
    fixed = member_fixed_epoch(config.eager)
    members = [member_report(i, member_name(i), phases.members[member_name(i)], fixed, run_dir / member_name(i),
                             plan.architectures.get(member_name(i))) for i in range(config.members)]
    if all(m.status == "diverged" for m in members):
        raise diverged("every member", config.train.lr)
    chosen = chosen_checkpoints(members)
    problem = too_few_members([name for name, _ in chosen],
                              {m.name: m.stop_reason for m in members if m.selected_epoch is None}, config.min_members)
    if problem:
        raise RuntimeError(problem)
    factories = plan.factories()
    encoded = sent_features(phases.members)
    scores = score_run(factories, run_dir, chosen, plan.splits, config.combiner, config.seed, encoded)
    encoded.clear()
    # untrained: None without a test split; the features the fits needed are dropped before the baseline's
    score, untrained, alone = released(scores.ensemble), released(scores.untrained), scores.alone
    del scores
    save_combiner(score.combiner, run_dir / COMBINER)
    members, diversity = with_diversity(members, [name for name, _ in chosen], alone,
                                        score.test_predictions, plan.splits.test_y.tolist())
    ensemble = ensemble_report(config, phases.members_wall, phases.slots, plan.member_share.describe(), score,
                               untrained, members, diversity)
    predictions = None if untrained is None else TestPredictions(
        labels=plan.splits.test_y.tolist(), ensemble=score.test_predictions.tolist(),
        untrained=untrained.test_predictions.tolist())
    baseline = None
    if phases.baseline is not None:
        base = member_report(-1, BASELINE, phases.baseline, None, run_dir / BASELINE, plan.architectures.get(BASELINE))
        if base.selected_epoch is None and base.status == "diverged":
            raise diverged("the baseline", config.train.lr)
        if base.selected_epoch is None:
            raise RuntimeError(f"the baseline has no usable checkpoint ({base.stop_reason}).")
        assert plan.baseline_factory is not None  # a baseline was trained
        base_score = score_checkpoints(plan.baseline_factory, run_dir, [(BASELINE, base.selected_epoch)],
                                       plan.splits, config.combiner, config.seed,
                                       sent_features({BASELINE: phases.baseline}), who="the baseline's")
        save_combiner(base_score.combiner, run_dir / BASELINE / COMBINER)
        baseline = baseline_report(base, phases.baseline_wall, phases.baseline_share.describe(), base_score,
                                   getattr(plan.baseline_factory, "width", 1.0))
        if predictions is not None:
            predictions.baseline = base_score.test_predictions.tolist()
    return Evaluation(members, ensemble, baseline, score, predictions)


@overload
def released(score: CombinerScore) -> CombinerScore: ...


@overload
def released(score: None) -> None: ...


def released(score: Optional[CombinerScore]) -> Optional[CombinerScore]:
    """The score without the features it was fitted on: the driver needs only its combiner and figures, and
    each member's train features are as large as the training images (2 x N copies with the reference)."""
    return None if score is None else replace(score, train_features=None, test_features=None)


def sent_features(runs: dict[str, MemberRecord]) -> dict[str, EncodedEpochs]:
    """The features each member's actor sent when it finished, taken out of its run record: the driver
    keeps one reference, so they are freed as soon as the combiners are fitted."""
    encoded = {}
    for name, member in runs.items():
        encoded[name], member.features = member.features, {}
    return encoded


def chosen_checkpoints(members: list[MemberReport]) -> list[tuple[str, int]]:
    """(member, selected epoch) of every usable member, in member order."""
    return [(m.name, m.selected_epoch) for m in members if m.selected_epoch is not None]


# --- step 5: report ---

def write_report(plan: Plan, run_dir: Path, phases: Phases, evaluation: Evaluation) -> RunReport:
    """report.json, report.md and the plots; report.json last, so its presence means finished."""
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
    write_plots(report, run_dir)
    write_report_files(report, run_dir)
    if plan.mirror is not None:
        plan.mirror.push(final=True)
    return report
