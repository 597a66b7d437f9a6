"""The one way a run's config is finished: defaults, a config file, `--set` assignments, keys given
from Python, or an interrupted run's saved config.json, turned into the config that runs, named.

The command line (`ensemble run`), the Python API (`ensemble.run`) and resuming all call `resolve`;
the driver receives its result finished and only records what it built (`as_built`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ensemble.config.files import nested, read_config_file
from ensemble.config.sections import ARRAYS, DataConfig, EnsembleConfig, build_config
from ensemble.storage import is_uri, join_uri, run_file, split_uri
from workers.errors import InputError
from workers.layout import CONFIG_JSON, REPORT_JSON, RUN_ID


@dataclass(frozen=True)
class Resolved:
    """The config that runs, and whether it continues an interrupted run."""
    config: EnsembleConfig
    resume: bool


def resolve(config: Optional[EnsembleConfig] = None, *, file: Optional[str | Path] = None,
            overrides: Sequence[str] = (), keys: Optional[dict[str, Any]] = None,
            resume: Union[bool, str, Path, None] = False, resume_if_exists: bool = False,
            dataset_given: bool = False) -> Resolved:
    """The config that runs, from lowest to highest: the defaults (or `config`, or the `file`), the
    Python `keys` laid over section by section, then the `overrides` (`--set a.b=value`).

    `resume` is True to continue the run in the config's own output/name as given, or a run
    directory (local or URI) whose saved config.json is the config (output and name point back at
    it); `resume_if_exists` continues output/name's interrupted run when there is one, refusing
    `--set` keys that ask for other values than it saved. `dataset_given`: the data is in-memory
    arrays (`run(dataset=...)`), recorded as such. A new run without a name is named here."""
    if isinstance(resume, (str, Path)):  # not True, False or None: a run directory
        return Resolved(resume_config(resume), True)
    requested = layered(config, file, overrides, keys)
    resumed = bool(resume)
    if resume_if_exists:
        requested, resumed = start_or_resume(requested, overrides)
    if dataset_given:  # the record names what ran: in-memory arrays, not a dataset it did not use
        data = requested.data.model_copy(update={"name": ARRAYS, "root": None, "download": False})
        requested = requested.model_copy(update={"data": data})
    if not resumed and requested.name is None:
        requested = requested.model_copy(update={"name": default_run_name()})
    return Resolved(requested, resumed)


def layered(config: Optional[EnsembleConfig], file: Optional[str | Path], overrides: Sequence[str],
            keys: Optional[dict[str, Any]]) -> EnsembleConfig:
    """Defaults (or `config`, or a file's keys) < Python keys < `--set` assignments, validated once."""
    if file is None and not keys and not overrides:
        return config or EnsembleConfig()
    if file is not None:
        raw = read_config_file(file)
        if "sweep" in raw:
            raise InputError(f"config file {str(file)!r} has a sweep: section, which `ensemble sweep` reads: run it "
                             f"with `ensemble sweep --config {file}`, or drop the section.")
    else:
        raw = config.model_dump(mode="json") if config is not None else {}
    if keys:
        if not isinstance(keys, dict):
            raise InputError(f"a config must be a dict of keys, not {type(keys).__name__}.")
        raw = nested(merged(raw, keys))
    return build_config(raw, list(overrides))


def merged(base: dict, keys: dict) -> dict:
    """`keys` laid over `base`, section by section."""
    out = dict(base)
    for key, value in keys.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def default_run_name() -> str:
    """The one place a run without a name gets one: the time it was resolved."""
    return datetime.now().strftime("run-%Y%m%d-%H%M%S")


def resume_config(run_dir: str | Path) -> EnsembleConfig:
    """The config of an interrupted run (a local path or a URI), with `output` and `name`
    pointing back at it."""
    config_text = run_file(run_dir, CONFIG_JSON)
    if config_text is None:
        raise InputError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_JSON}); nothing to resume.")
    if run_file(run_dir, REPORT_JSON) is not None:
        raise InputError(f"the run in {str(run_dir)!r} already finished ({REPORT_JSON} exists); nothing to resume.")
    output, name = split_uri(str(run_dir)) if is_uri(run_dir) else (Path(run_dir).parent, Path(run_dir).name)
    where = join_uri(str(run_dir), CONFIG_JSON) if is_uri(run_dir) else str(Path(run_dir) / CONFIG_JSON)
    try:
        raw = json.loads(config_text)
    except ValueError as err:
        raise InputError(f"{where!r} is not valid JSON ({err}): the run's config is damaged (truncated?). Restore "
                         "it, or start a new run.") from None
    if not isinstance(raw, dict):
        raise InputError(f"{where!r} must hold the run's config, a JSON object of keys, not a {type(raw).__name__}; "
                         "restore it, or start a new run.")
    raw.pop(RUN_ID, None)  # the run's identity, not a setting (read by runs.rundir.saved_run_id)
    try:
        return build_config(raw, [f"output={output}", f"name={name}"])
    except InputError as err:
        raise InputError(f"{where!r} is not a config this version can resume: {err}") from None


def start_or_resume(config: EnsembleConfig, overrides: Sequence[str] = ()) -> tuple[EnsembleConfig, bool]:
    """For a job a scheduler may retry: the saved config and True if output/name holds an
    interrupted run, else `config` and False (a new run). A finished run there is an error,
    as it is for --resume, and so are `overrides` that ask for other values than the run saved."""
    name = config.name
    assert name is not None  # --resume-if-exists needs --name (cli.py refuses it without)
    run_dir = join_uri(config.output, name) if is_uri(config.output) else Path(config.output) / name
    if run_file(run_dir, CONFIG_JSON) is None:
        return config, False
    saved = resume_config(run_dir)
    changed = differing_keys(config, saved, [o.partition("=")[0].strip() for o in overrides])
    if changed:  # silently ignored before: the run went on with its saved values
        raise InputError(f"--resume-if-exists continues the interrupted run {saved.name!r} with its saved "
                         f"config, but --set asks for other values: {', '.join(changed)}. Drop those --set "
                         "options to continue it, or choose another --name to start a run with them.")
    return saved, True


def differing_keys(requested: EnsembleConfig, saved: EnsembleConfig, keys: list[str]) -> list[str]:
    """The dotted `keys` (given with --set) whose requested value differs from the saved run's, each as
    `key=requested (the run has saved)`; `name` and `output` say where the run is, not what it does, and
    "auto" asks for what the run resolved (config.json holds the resolved sizes)."""
    def value(config: EnsembleConfig, key: str):
        node: Any = config.model_dump(mode="json")
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node
    return [f"{key}={value(requested, key)!r} (the run has {value(saved, key)!r})" for key in dict.fromkeys(keys)
            if key not in ("name", "output") and value(requested, key) not in ("auto", value(saved, key))]


def as_built(config: EnsembleConfig, data: Optional[DataConfig] = None, autoencoder: Optional[list[str]] = None,
             baseline_autoencoder: Optional[str] = None, baseline_width: Optional[float] = None) -> EnsembleConfig:
    """The resolved config with what the driver learnt while building, in one copy: the data's `auto`
    sizes as drawn, the classes given from Python by name (one, or one per member when they differ),
    and the baseline as built (its width when the members' architecture was widened; none when it is a
    model of its own)."""
    update: dict[str, Any] = {}
    if data is not None:
        update["data"] = data
    if autoencoder:
        paths = autoencoder[0] if len(set(autoencoder)) == 1 else autoencoder
        update["model"] = config.model.model_copy(update={"autoencoder": paths})
    baseline: dict[str, Any] = {}
    if baseline_autoencoder is not None:
        baseline["autoencoder"] = baseline_autoencoder
    if baseline_autoencoder is not None or config.baseline.autoencoder is not None:
        baseline["width"] = None  # a model of its own: nothing was widened
    elif baseline_width is not None:
        baseline["width"] = float(baseline_width)
    if baseline:
        update["baseline"] = config.baseline.model_copy(update=baseline)
    return config.model_copy(update=update) if update else config
