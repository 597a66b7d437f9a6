"""A sweep's grid: its axes (`--grid key=v1,v2`, or a `sweep:` section in the config file), the
cells they span and each cell's runs. Pure functions (no Ray, no files): every axis is checked
against the config here, so a bad axis is refused before anything trains, naming the axis.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ensemble.analysis.repeats import repeat_configs
from ensemble.config import EnsembleConfig, build_config, config_reference, describe_validation_error, did_you_mean
from workers.errors import InputError

# keys a sweep sets itself: the run's place (name, output) and its seed (--repeats draws seeds)
RESERVED = {"name": "each run is named after its cell and seed", "output": "every run sits in the sweep's directory",
            "seed": "--repeats gives each cell the seeds seed, seed+1 and so on"}


class Axis(BaseModel):
    """One key and the values the grid takes it through, in order."""
    model_config = ConfigDict(frozen=True)
    key: str
    values: list[Any]


class SweepSection(BaseModel):
    """The `sweep:` section of a config file: `grid: {members: [1, 5], data.train_size: [480, 4800]}`,
    `repeats: 3`, optionally `name` and `parallel_cells`. `ensemble run` refuses a file with it."""
    model_config = ConfigDict(extra="forbid")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    repeats: Optional[int] = Field(None, ge=1)
    name: Optional[str] = None
    parallel_cells: Optional[int] = Field(None, ge=1)


def split_values(text: str) -> list[str]:
    """`1,5` -> ['1', '5']; commas inside brackets stay (`[4, 8],[8, 16]` is two values)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{(" and 1 or 0
        depth -= char in "]})" and 1 or 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts]


def parse_axis(text: str) -> Axis:
    """One `--grid key=v1,v2,...`; each value is read as YAML, as `--set` reads it."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--grid {text!r} must look like key=value1,value2, for example --grid members=1,5.")
    parts = split_values(values)
    if not values.strip() or any(not part for part in parts):
        raise InputError(f"--grid axis {key!r} has an empty value ({text!r}); give values separated by commas, "
                         f"for example --grid {key}=1,5.")
    try:
        return Axis(key=key, values=[yaml.safe_load(part) for part in parts])
    except yaml.YAMLError as err:
        raise InputError(f"--grid axis {key!r}: a value is not valid YAML ({str(err).splitlines()[0]}).") from None


def read_section(raw: dict[str, Any]) -> tuple[dict[str, Any], SweepSection]:
    """A config file's keys without its `sweep:` section, and the section (empty when there is none)."""
    raw = dict(raw)
    section = raw.pop("sweep", None) or {}
    if not isinstance(section, dict):
        raise InputError(f"the config file's sweep: section must be a mapping (grid, repeats, name, "
                         f"parallel_cells), not {type(section).__name__}.")
    try:
        return raw, SweepSection.model_validate(section)
    except ValidationError as err:
        raise InputError("sweep: section: " + describe_validation_error(
            err, name="sweep key {!r}".format, what="sweep section")) from None


def merge_axes(from_file: dict[str, list[Any]], from_flags: Sequence[Axis]) -> list[Axis]:
    """The file's axes, then the flags' (a flag's axis replaces the file's axis of the same key)."""
    axes = {key: Axis(key=key, values=list(values)) for key, values in from_file.items()}
    for axis in from_flags:
        axes[axis.key] = axis
    return list(axes.values())


def check_axes(base: EnsembleConfig, axes: Sequence[Axis]) -> None:
    """Every axis: a known, settable key with at least one value the config takes, and no axis
    twice; the first problem is an InputError naming the axis (and the value)."""
    if not axes:
        raise InputError("the sweep has an empty grid: give at least one axis, --grid key=v1,v2 (or grid: in the "
                         "config file's sweep: section).")
    leaves = [key for key, _, _ in config_reference()]
    for axis in axes:
        if axis.key in RESERVED:
            raise InputError(f"--grid axis {axis.key!r} cannot be swept: {RESERVED[axis.key]}.")
        if axis.key not in leaves:
            raise InputError(f"--grid axis {axis.key!r} is not a config key{did_you_mean(axis.key)}; "
                             "`ensemble config` lists them.")
        if not axis.values:
            raise InputError(f"--grid axis {axis.key!r} has no values; give at least one.")
        if len({repr(v) for v in axis.values}) != len(axis.values):
            raise InputError(f"--grid axis {axis.key!r} lists a value twice ({axis.values}).")
        for value in axis.values:
            cell_config(base, {axis.key: value})


def cell_config(base: EnsembleConfig, settings: dict[str, Any]) -> EnsembleConfig:
    """The base config with one cell's settings; a value the config refuses names its axis."""
    raw = base.model_dump(mode="json")
    for key, value in settings.items():
        try:  # one key at a time, so that a refusal names its axis
            raw = build_config(raw, [f"{key}={json.dumps(value)}"]).model_dump(mode="json")
        except InputError as err:
            raise InputError(f"--grid axis {key!r}: the value {value!r} is refused: {err}") from None
    try:
        return EnsembleConfig.model_validate(raw)
    except ValidationError as err:
        raise InputError(describe_validation_error(err)) from None


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its name (a directory-name stem), its settings and its runs' configs."""
    index: int
    name: str
    settings: dict[str, Any]
    runs: tuple[EnsembleConfig, ...]


def value_slug(value: Any) -> str:
    """A value as a short file-name part: 480 -> 480, [4, 8] -> 4x8, 0.5 -> 0.5."""
    if isinstance(value, (list, tuple)):
        return "x".join(value_slug(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "", str(value).replace(" ", "")) or "none"


def cell_name(index: int, settings: dict[str, Any]) -> str:
    """`c00_members-5_data.train_size-480`: its place first (unique, sorts in grid order), then what it sets."""
    return "_".join([f"c{index:02d}", *(f"{key}-{value_slug(value)}" for key, value in settings.items())])[:200]


def cells(base: EnsembleConfig, axes: Sequence[Axis], repeats: int, output: str) -> list[Cell]:
    """Every cell of the grid (the first axis varies slowest), each with `repeats` run configs:
    the cell's config at seeds seed, seed+1, ... named `<cell>-r0`, `<cell>-r1`, ... (as --repeats
    names them) in `output` (the sweep's directory)."""
    check_axes(base, axes)
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, not {repeats}.")
    found = []
    for index, values in enumerate(itertools.product(*(axis.values for axis in axes))):
        settings = {axis.key: value for axis, value in zip(axes, values, strict=True)}
        name = cell_name(index, settings)
        config = cell_config(base, settings).model_copy(update={"output": output})
        found.append(Cell(index, name, settings, tuple(repeat_configs(config, repeats, name))))
    return found
