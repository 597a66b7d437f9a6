"""What the config builds for the worker side, each in one place: each member's and the baseline's
autoencoder factories (members may differ; the baseline is theirs made wider, or one the user
names), the train settings, each member's seed and the stop rules; and the choice of the
checkpoint to freeze. Pure functions, tested without Ray.

A member's actor asks its rule (`workers.stopping`) after every epoch; the driver builds that
rule here from the config, and later asks `select_epoch` which saved checkpoint to freeze (a pure
function that lives in `workers.encoding`, so a finished member's actor picks the same epoch). The
baseline uses conventional early stopping and the same selection of the best epoch.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Optional, Sequence, Union, cast

from pydantic import BaseModel

from classifier.combiner import own_head_predictions
from ensemble.config import BaselineConfig, CombinerConfig, EagerConfig, EnsembleConfig, ModelConfig
from workers.encoding import EncodeRequest, Selection, select_epoch  # noqa: F401  (here for the driver's callers)
from workers.errors import InputError
from workers.models import (
    AutoencoderFactory,
    CAEFactory,
    Widened,
    accepts_width,
    baseline_width,
    import_autoencoder,
    matched_width,
    trainable_parameters,
)
from workers.stopping import EagerStop, EarlyStopping
from workers.training import TrainSettings

Autoencoders = Union[AutoencoderFactory, Sequence[AutoencoderFactory], None]  # run(autoencoder=...)


def run_name(config: EnsembleConfig) -> str:
    """The name of a run that has one: set by the driver before its directory exists, kept by a resumed
    run's config.json, given by repeats and sweeps to every run they plan."""
    assert config.name is not None, "a run named before its directory exists"
    return config.name


def member_model(config: EnsembleConfig, index: int) -> ModelConfig:
    """Member `index`'s model.* keys: model.*, its entry of a list of autoencoders, and its
    model.overrides dict laid over them."""
    m = config.model
    keys = m.model_dump(exclude={"overrides"})
    if isinstance(m.autoencoder, list):
        keys["autoencoder"] = m.autoencoder[index]
    keys.update(m.overrides[index] if m.overrides else {})
    return ModelConfig.model_validate(keys)


def members_differ(config: EnsembleConfig) -> bool:
    """Whether the members' architectures may differ (per-member overrides or a list of classes)."""
    models = [member_model(config, i) for i in range(config.members)]
    return any(model != models[0] for model in models)


def model_factory(model: ModelConfig, image_shape: Sequence[int], trust_code: bool = False) -> AutoencoderFactory:
    """One member's autoencoder: the class `autoencoder` names (imported if `trust_code`, or if this
    process imported its module already: `workers.models.trusts`), else the built-in CAE of its keys
    for images of `image_shape` (C, H, W)."""
    if model.autoencoder is not None:
        assert isinstance(model.autoencoder, str), "one member's model keys (member_model): one class, not the list"
        return import_autoencoder(model.autoencoder, trust_code)
    return CAEFactory(_channels_height_width(image_shape), model.channels, model.kernel_size, model.activation,
                      model.pooling)


def member_factories(config: EnsembleConfig, image_shape: Sequence[int], autoencoder: Autoencoders = None,
                     trust_code: bool = False) -> list[AutoencoderFactory]:
    """One factory per member: `autoencoder` as given from Python (one for all, or a list of one per
    member), else what the config names for each member."""
    if autoencoder is None:
        return [model_factory(member_model(config, i), image_shape, trust_code) for i in range(config.members)]
    changed = next((i for i, changes in enumerate(config.model.overrides or []) if changes), None)
    if changed is not None:  # the classes given from Python build every member: the dict would be ignored
        raise InputError(f"model.overrides[{changed}] cannot apply when run(autoencoder=...) gives the members' "
                         "classes: model.* keys configure the built-in CAE only. Give members that differ as a list "
                         "of classes, run(autoencoder=[A, B, ...]), or drop model.overrides.")
    if isinstance(autoencoder, (list, tuple)):
        if len(autoencoder) != config.members:
            raise InputError(f"autoencoder= lists {len(autoencoder)} autoencoder(s) but members={config.members}; "
                             "give one per member, or one for all.")
        return list(autoencoder)
    return [cast(AutoencoderFactory, autoencoder)] * config.members  # not a list or tuple: one for all


def member_factory(config: EnsembleConfig, image_shape: Sequence[int], trust_code: bool = False) -> AutoencoderFactory:
    """The first member's autoencoder (all members', unless they differ)."""
    return member_factories(config, image_shape, None, trust_code)[0]


def cae_factory(config: EnsembleConfig, image_shape: Sequence[int]) -> CAEFactory:
    """The built-in CAE of `model.*`."""
    m = config.model
    return CAEFactory(_channels_height_width(image_shape), m.channels, m.kernel_size, m.activation, m.pooling)


def _channels_height_width(image_shape: Sequence[int]) -> tuple[int, int, int]:
    channels, height, width = image_shape
    return channels, height, width


def baseline_factory(config: EnsembleConfig, image_shape: Sequence[int], members: Sequence[AutoencoderFactory],
                     own: Optional[AutoencoderFactory] = None, trust_code: bool = False) -> AutoencoderFactory:
    """The monolithic baseline, never a silent swap to another architecture: `own` (run's
    baseline_autoencoder=) or the class `baseline.autoencoder` names, else the members' architecture
    made wider (model.* for the built-in CAE, else the first member's class, which must take `width`).
    Its width: `baseline.width`, else sqrt(members) for identical members, else the width whose
    trainable parameters come closest to the members' total."""
    if own is not None:
        return own
    if config.baseline.autoencoder is not None:
        return import_autoencoder(config.baseline.autoencoder, trust_code)
    first = members[0]
    custom = not isinstance(first, CAEFactory)
    if custom and not accepts_width(first):
        raise InputError(
            f"the baseline must be the members' own architecture made wider or a model you name, but "
            f"{getattr(first, '__qualname__', type(first).__name__)} takes no `width` keyword. Give its constructor "
            "a `width: float = 1.0` multiplier of its channels (the baseline is built with width=baseline.width), or "
            "name the baseline's model: baseline.autoencoder=module:QualName (run(..., baseline_autoencoder=Cls) "
            "from Python), or train none: baseline.enabled=false.")
    widen = (lambda width: Widened(first, width)) if custom else (
        lambda width: dataclasses.replace(cae_factory(config, image_shape), width=width))
    width = config.baseline.width
    if width is None and len(set(map(_identity, members))) > 1:  # members differ: match the total
        total = sum(trainable_parameters(factory()) for factory in members)
        width = matched_width(lambda w: trainable_parameters(widen(w)()), total)
    return widen(baseline_width(config.members, width))


def _identity(factory: AutoencoderFactory):
    """What makes two members' architectures the same (a CAE's settings, a custom factory itself)."""
    return factory if isinstance(factory, CAEFactory) else id(factory)


def member_seed(seed: int, index: int) -> int:
    """Distinct, reproducible seeds per member; the baseline (index -1) gets its own too."""
    return seed * 1000 + index + 1


# What the builders below give a worker-side class themselves; its other fields come from a config section.
BUILT_HERE = {TrainSettings: {"seed", "run_id"}, EagerStop: {"max_epochs"}, EarlyStopping: set()}


def from_section(cls: type, section: BaseModel, **built_here):
    """`cls` (a worker-side dataclass) with every field it shares with the config `section` taken from
    there, so the worker's own defaults never decide a run (tests/test_config.py holds the names and
    defaults equal), and the rest, `built_here`, from the caller."""
    shared = {f.name for f in dataclasses.fields(cls)} - BUILT_HERE[cls]
    return cls(**section.model_dump(include=shared), **built_here)


def train_settings(config: EnsembleConfig, seed: int, run_id: Optional[str] = None) -> TrainSettings:
    """`train.*` as the member's epoch loop takes it, with the member's own seed and the run's id (which its
    checkpoints record)."""
    return from_section(TrainSettings, config.train, seed=seed, run_id=run_id)


def member_rule(cfg: EagerConfig, max_epochs: int) -> EagerStop:
    """A member's eager rule: `eager.*`, within `train.epochs` (`max_epochs`)."""
    return from_section(EagerStop, cfg, max_epochs=max_epochs)


def baseline_rule(cfg: BaselineConfig) -> EarlyStopping:
    """The baseline's conventional early stopping: `baseline.patience`, `min_delta`, `max_epochs`."""
    return from_section(EarlyStopping, cfg)


def member_fixed_epoch(cfg: EagerConfig) -> Optional[int]:
    return cfg.epoch if cfg.rule == "fixed" else None


def member_encoding(cfg: EagerConfig, reference: bool, combiner: Optional[CombinerConfig] = None,
                    seed: int = 0) -> EncodeRequest:
    """What each member's actor encodes when it finishes: the checkpoint `select_epoch` picks under
    this rule, and epoch 0 when the run scores the untrained reference (it has a test split); with
    a test split and a `combiner`, it also fits the member's own head on the selected features."""
    own_head = partial(own_head_predictions, combiner.kind, combiner.head, seed, max_iter=combiner.max_iter) \
        if reference and combiner else None
    return EncodeRequest(fixed_epoch=member_fixed_epoch(cfg), reference=reference, own_head=own_head)
