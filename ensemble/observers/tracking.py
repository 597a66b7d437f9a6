"""Experiment trackers: a run logged to MLflow as it trains (`ensemble run --tracker mlflow`,
`ensemble.run(..., tracker="mlflow")`).

A tracker is an `on_event` callback (`workers.events`) with three more hooks: `start(config)`
before the members start, `finish(run_dir, report)` once report.json is written, and
`fail(error)` when the run ends without a report. The MLflow tracker makes one MLflow run per
ensemble run (params: the config, flattened to dotted keys; metrics: the test accuracies,
wall-clocks and speedup; artifacts: report.json, report.md, config.json and the plots) and one
nested run per member and for the baseline (metrics per epoch: train_loss, val_loss,
epoch_seconds, at step = epoch). A member restarted after its actor died keeps its nested run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ensemble.config import recorded_config
from ensemble.environment import environment
from ensemble.storage import is_uri
from workers.errors import InputError
from workers.events import Done, EpochEnded, Event, Lost, Started
from workers.layout import CONFIG_JSON, REPORT_JSON

log = logging.getLogger(__name__)
TRACKERS = ("mlflow",)
ARTIFACT_PATTERNS = (REPORT_JSON, "report.md", CONFIG_JSON, "*.png")


class NoTracker:
    """What a run without a tracker calls: nothing happens."""

    def start(self, config) -> None:
        pass

    def __call__(self, event: Event) -> None:
        pass

    def finish(self, run_dir: Path, report) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        pass


def open_tracker(tracker: Any) -> Any:
    """`tracker` as an object with start/__call__/finish/fail: None (no tracker), "mlflow", or a
    tracker object of the caller's own. Checked before Ray starts: a missing package is an InputError."""
    if tracker is None:
        return NoTracker()
    if tracker == "mlflow":
        return Forgiving(MlflowTracker())
    if all(callable(getattr(tracker, hook, None)) for hook in ("start", "__call__", "finish", "fail")):
        return Forgiving(tracker)
    raise InputError(f"tracker={tracker!r} is not a tracker; allowed: {', '.join(map(repr, TRACKERS))}, None, or "
                     "an object with start(config), __call__(event), finish(run_dir, report) and fail(error).")


class Forgiving:
    """A tracker whose failure after it started never fails the training: the first error is one
    warning (the tracker's message whole) and the tracker is left out for the rest of the run; the
    run directory's own files are written as ever. `start` is not forgiven: it runs before Ray
    starts, and a tracker that cannot start is the caller's to fix (an InputError for MLflow)."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.broken = False

    def __getattr__(self, name: str) -> Any:  # the tracker's own attributes (`location`, `client`)
        if name == "tracker":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.tracker, name)

    def start(self, config) -> None:
        self.tracker.start(config)

    def __call__(self, event: Event) -> None:
        self._safely(self.tracker, event)

    def finish(self, run_dir: Path, report) -> None:
        self._safely(self.tracker.finish, run_dir, report)

    def fail(self, error: BaseException) -> None:
        self._safely(self.tracker.fail, error)

    def _safely(self, hook: Callable, *args) -> None:
        if self.broken:
            return
        try:
            hook(*args)
        except Exception as err:  # the tracker's own failure (a server gone, a full disk): not the run's
            self.broken = True
            log.warning(f"the tracker failed and logs nothing more for this run ({type(err).__name__}: "
                        f"{whole(err)}); training goes on, and the run directory holds everything.")


def unwrapped(handler: Any) -> Any:
    return handler.tracker if isinstance(handler, Forgiving) else handler


@contextmanager
def tracked(tracker: Any, config) -> Iterator[Any]:
    """The tracker for the length of a run: started now, told of a failure if the run raises."""
    tracker.start(config)
    try:
        yield tracker
    except BaseException as error:
        tracker.fail(error)
        raise


def chained(*handlers: Optional[Callable[[Event], None]]) -> Optional[Callable[[Event], None]]:
    """One event handler that calls each given one in order (None when none is given)."""
    given = [h for h in handlers if h is not None and not isinstance(unwrapped(h), NoTracker)]
    if not given:
        return None
    if len(given) == 1:
        return given[0]

    def both(event: Event) -> None:
        for handler in given:
            handler(event)
    return both


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: dotted keys, values as JSON text (lists and null readable)."""
    params = {}
    for key, value in config.items():
        if isinstance(value, dict):
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return params


RULE_KEYS = {"plateau": ("threshold", "min_epochs"), "fixed": ("epoch",), "budget": ("budget_seconds",), "none": ()}


def params_that_ran(config) -> dict:
    """The config as the run's params: what config.json records (`recorded_config`: no CAE settings for a
    custom class), less the eager rules' parameters of rules that did not run and the baseline's keys
    when none trained; `baseline.width` is the width built (the driver passes the config as it ran)."""
    raw = recorded_config(config)
    rule = raw["eager"]["rule"]
    for other in set(RULE_KEYS) - {rule}:
        for key in set(RULE_KEYS[other]) - set(RULE_KEYS[rule]):
            raw["eager"].pop(key, None)
    if not config.baseline.enabled:
        raw["baseline"] = {"enabled": False}
    elif config.baseline.autoencoder is not None:  # the user's own model: not widened
        raw["baseline"].pop("width", None)
    return raw


def epoch_metrics(event: EpochEnded) -> dict[str, float]:
    """One epoch's metrics; a non-finite loss (a diverged member) is left out, not logged as NaN."""
    record = event.record
    values = {"train_loss": record.train_loss, "val_loss": record.val_loss, "epoch_seconds": record.seconds}
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def summary_metrics(report) -> dict[str, float]:
    """The ensemble run's own metrics, from its report."""
    values = {"ensemble_test_accuracy": report.ensemble.test_accuracy,
              "ensemble_wall_seconds": report.ensemble.wall_seconds, "speedup": report.speedup}
    if report.baseline is not None:
        values.update(baseline_test_accuracy=report.baseline.test_accuracy,
                      baseline_wall_seconds=report.baseline.wall_seconds)
    return {k: float(v) for k, v in values.items() if v is not None}


DEFAULT_STORE = "mlruns"  # under the run's output directory, when no tracking URI is set
STORE_FIX = ("Set MLFLOW_TRACKING_URI to a tracking server (http://HOST:5000, started with `mlflow server`), to "
             "file:/some/dir (with MLFLOW_ALLOW_FILE_STORE=true), or to sqlite:///mlflow.db (needs the full "
             "package: pip install mlflow); or unset it to log to {default}.")


def store_uri(given: Optional[str], output: str) -> str:
    """Where the MLflow run goes: `given`, else the URI MLflow was told (MLFLOW_TRACKING_URI or
    `mlflow.set_tracking_uri`), else a file store in <output>/mlruns. MLflow's own default (sqlite)
    needs the full `mlflow` package, which the extra does not install; its file store needs an
    opt-in, set here for this process only when we choose that store."""
    import mlflow.tracking
    if given:
        return given
    if mlflow.tracking.is_tracking_uri_set():
        return mlflow.tracking.get_tracking_uri()
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return default_store(output).as_uri()


def default_store(output: str) -> Path:
    """<output>/mlruns; ./mlruns for an object-store output (MLflow's file store is local)."""
    return (Path(DEFAULT_STORE) if is_uri(output) else Path(output) / DEFAULT_STORE).resolve()


@contextmanager
def quick_failure() -> Iterator[None]:
    """MLflow's HTTP calls fail at once while this lasts (its default: 7 retries with backoff, minutes
    for a server that is not there), so a wrong address is an input error at once (a refused connection)
    or within a minute (a server that does not answer)."""
    with environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}, override=False):
        yield


def whole(error: BaseException) -> str:
    """MLflow's message on one line, whole (its messages span lines and end in links)."""
    return " ".join(str(error).split()) or type(error).__name__


def store_problem(uri: str, error: BaseException, output: str) -> str:
    """Why the tracker cannot log to `uri`, and the fix, for an input error before Ray starts."""
    text = whole(error)
    if uri.startswith("sqlite:") and isinstance(error, ImportError):
        text = f"the sqlite store needs the full MLflow package (pip install mlflow): {text}"
    end = "" if text.endswith((".", ")")) else "."
    return f"tracker 'mlflow' cannot log to {uri}: {text}{end} " + STORE_FIX.format(default=default_store(output))


def where_logged(uri: str, experiment_id: str, run_id: str) -> str:
    """The line that says where a run was logged and the one command (or address) that shows it."""
    if uri.startswith(("http://", "https://")):
        return f"MLflow: run {run_id} at {uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    view = (f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}" if uri.startswith("file:")
            else f"mlflow ui --backend-store-uri {uri}")
    return f"MLflow: run {run_id} logged to {uri}; to view it (needs pip install mlflow): {view}"


class MlflowTracker:
    """Logs to the MLflow tracking server or store MLFLOW_TRACKING_URI names (or `mlflow.set_tracking_uri`),
    else to `<output>/mlruns`, a file store the `mlflow` extra's client writes on its own (see `store_uri`),
    in the experiment MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID names (else Default)."""

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None):
        try:
            import mlflow.tracking  # noqa: F401  (checked here, before anything starts)
        except ImportError:
            raise InputError("tracker 'mlflow' needs MLflow: pip install 'eager-ensembles[mlflow]'.") from None
        self.tracking_uri = tracking_uri
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        self.parent: Optional[str] = None
        self.members: dict[str, str] = {}  # member name -> its nested run's id
        self.location = ""  # where the run is logged and how to view it, once started

    def _experiment_id(self) -> str:
        if self.experiment is None:
            return os.environ.get("MLFLOW_EXPERIMENT_ID", "0")
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found is not None else self.client.create_experiment(self.experiment)

    def start(self, config) -> None:
        """Opens the MLflow run, before Ray starts: a store that cannot work is an InputError saying the fix."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = store_uri(self.tracking_uri, config.output)
        try:
            with quick_failure():
                self.client = MlflowClient(uri)
                self.experiment_id = self._experiment_id()
                run = self.client.create_run(self.experiment_id, run_name=config.name,
                                             tags={"eager_ensembles.role": "run"})
        except Exception as err:  # MLflow raises its own, requests' and SQLAlchemy's errors
            raise InputError(store_problem(uri, err, config.output)) from None
        self.parent = run.info.run_id
        params = flat_params(params_that_ran(config))
        self.client.log_batch(self.parent, params=[Param(k, v) for k, v in params.items()])
        self.location = where_logged(uri, self.experiment_id, self.parent)

    def __call__(self, event: Event) -> None:
        match event:
            case Started() if event.name not in self.members:
                run = self.client.create_run(self.experiment_id, run_name=event.name, tags={
                    "mlflow.parentRunId": self.parent, "eager_ensembles.role": event.name})
                self.members[event.name] = run.info.run_id
            case EpochEnded():
                self._metrics(self.members[event.name], epoch_metrics(event), event.record.epoch, event.at)
            case Done(outcome=outcome):
                run_id = self.members[event.name]
                self.client.set_tag(run_id, "stop_reason", outcome.stop_reason)
                self.client.set_terminated(run_id, "FINISHED" if outcome.status == "done" else "FAILED")
            case Lost(reason=reason):
                self.client.set_tag(self.members[event.name], "lost", reason)
                self.client.set_terminated(self.members.pop(event.name), "FAILED")

    def _metrics(self, run_id: str, values: dict[str, float], step: int, at: float) -> None:
        from mlflow.entities import Metric
        stamp = int(at * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def finish(self, run_dir: Path, report) -> None:
        import time
        now = time.time()
        assert self.parent is not None, "finish() follows started()"
        for member in [*report.members, *([report.baseline] if report.baseline is not None else [])]:
            values = {"test_accuracy": getattr(member, "test_accuracy", None), "selected_epoch": member.selected_epoch}
            if member.name in self.members:
                self._metrics(self.members[member.name], {k: v for k, v in values.items() if v is not None}, 0, now)
        self._metrics(self.parent, summary_metrics(report), 0, now)
        for pattern in ARTIFACT_PATTERNS:
            for path in sorted(Path(run_dir).glob(pattern)):
                self.client.log_artifact(self.parent, str(path))
        self.client.set_terminated(self.parent, "FINISHED")

    def fail(self, error: BaseException) -> None:
        """Every run still open ends FAILED (KILLED on Ctrl-C), so the UI does not show them running."""
        if self.parent is None:
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        for run_id in [*self.members.values(), self.parent]:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)
