"""Step 1, prepare: everything that can be wrong with the input fails here, before Ray starts or
anything is written. `run` loads and splits the data, builds and checks every autoencoder on one
batch, checks that custom code ships to the cluster, opens an output URI and, on resume, checks
the checkpoints against config.json; what it decided is a `Plan`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import ray

from ensemble.builders import Autoencoders, baseline_factory, member_factories, run_name, train_settings
from ensemble.config import EnsembleConfig, as_built
from ensemble.data import Splits, load_splits
from ensemble.runs.identity import new_run_id
from ensemble.runs.rundir import check_checkpoints_fit, check_output, saved_run_id
from ensemble.scheduling.placement import Share
from ensemble.scheduling.shipping import check_code_ships
from ensemble.storage import Mirror, is_uri, open_mirror
from workers.errors import InputError
from workers.layout import BASELINE, member_name
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



def run(config: EnsembleConfig, autoencoder: Autoencoders, dataset, resume: bool, unlabelled=None,
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
