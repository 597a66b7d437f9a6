"""The run configuration: one frozen pydantic model per section, unknown keys rejected.

Defaults reproduce the paper's small setting on the embedded data: 5 LeNet-like CAEs,
ReLU, Adam at 1e-3, batch 100, MSE reconstruction loss.
"""

from __future__ import annotations

import json
import numbers
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Literal, Optional, Sequence, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from classifier import HEADS, KINDS, combiner_kind
from ensemble.config.files import nested, read_config_file, with_assignments
from ensemble.config.messages import closest, describe
from workers.errors import InputError
from workers.settings import AUTO, TrainSettings
from workers.stopping import EagerStop, EarlyStopping

if TYPE_CHECKING:  # mypy cannot take type(BaseModel) as a base; it is this class
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMetaclass
else:
    _ModelMetaclass = type(BaseModel)


class _RaisesInputError(_ModelMetaclass):
    """`EnsembleConfig(members=3, train={"epochs": 2})` from Python: bad keys or values are an InputError
    naming them, as from a file, not pydantic's ValidationError. Only a direct call comes here:
    `model_validate` (files, --set) has its own handler in `build_config`."""

    def __call__(cls, *args: Any, **keys: Any):
        try:
            return super().__call__(*args, **keys)
        except ValidationError as err:
            prefix = SECTION_KEYS.get(cls.__name__, "")
            raise InputError(describe_validation_error(err, lambda key: f"config key {prefix + key!r}")) from None


class Section(BaseModel, metaclass=_RaisesInputError):
    # no inf or nan anywhere: train.lr=.inf would only fail after every member diverged
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_only_for_switches(cls, value: Any, info: ValidationInfo) -> Any:
        """`members=true` is not 1 and `baseline.enabled=1` is not true: a boolean where a number
        belongs (or the reverse) is refused, not converted."""
        assert info.field_name is not None  # a field validator's call names its field
        kinds = _plain_types(cls.model_fields[info.field_name].annotation)
        switch, number = bool in kinds, bool({int, float} & kinds)
        if isinstance(value, bool) and number and not switch:
            raise ValueError("expected a number, not true/false")
        if switch and not isinstance(value, bool) and value is not None:
            raise ValueError("expected true or false")
        return value


def _plain_types(annotation: Any) -> set:
    """The plain types a field's annotation admits, through Optional, Union and Annotated."""
    if isinstance(annotation, type):
        return {annotation}
    arguments = get_args(annotation)
    return set().union(*(_plain_types(argument) for argument in arguments)) if arguments else set()


# A split size: a count of images, a fraction of the dataset in (0, 1) as scikit-learn's
# train_test_split takes it, or "auto" (the defaults below, resolved by `ensemble.data.splits`).
SplitSize = Union[Literal["auto"], int, float]
AUTO_COUNTS = {"train_size": 3000, "val_size": 1000}
ARRAYS = "arrays"  # data.name of in-memory data given from Python (run(dataset=...))
EMBEDDED = ("mnist-5k", "digits")  # data.name values that read no files
DOWNLOADABLE = ("mnist", "cifar10")  # the paper's small setting, on data with room for it


class DataConfig(Section):
    name: Literal["mnist-5k", "digits", "mnist", "cifar10", "folder", "npz", "arrays"] = Field(
        "mnist-5k", description="dataset: embedded mnist-5k or digits, or mnist/cifar10/folder/npz from data.root; "
                                "arrays: in-memory data given from Python (run(dataset=...) records it)")
    root: Optional[str] = Field(
        None, description="directory (mnist, cifar10, folder) or .npz file (npz) holding the data")
    download: bool = Field(
        False, description="allow torchvision to download mnist/cifar10 into data.root when missing")
    train_size: Optional[SplitSize] = Field(
        "auto", description="training images (stratified): a count, a fraction of the dataset in (0, 1), null for "
                            "all that remain, or auto: 3,000, or 60% when the data is too small for the defaults")
    val_size: SplitSize = Field(
        "auto", description="validation images (stratified) for eager stopping: a count, a fraction in (0, 1), or "
                            "auto: 1,000, or 20% when the data is too small for the defaults")
    test_size: Optional[Union[int, float]] = Field(
        None, description="test images: a count or a fraction; null keeps every image not used for train/validation "
                          "(or the official test split); 0 holds none out (test accuracies are then null)")
    normalize: Literal["minmax", "standardize"] = Field(
        "minmax", description="pixel scaling: minmax to [0, 1], or standardize with training mean/std")
    bootstrap: bool = Field(False, description="each member trains on its own bootstrap sample (bagging)")
    labels_per_class: Optional[int] = Field(
        None, ge=1, description="labelled training images per class the combiner may use (a stratified, seeded "
                                "subset; the autoencoders still train on every training image); null: all")
    max_pixels: int = Field(
        1_048_576, ge=1, description="largest image (height x width) a dataset may hold; larger images are refused "
                                     "before they are converted (1,048,576: 1024 x 1024)")
    save_splits: bool = Field(
        True, description="data.name=arrays: save the splits drawn to splits.npz in the run directory, so select, "
                           "curves and --resume work in a fresh process; false for large data (then pass it again)")

    @field_validator("root", "download")
    @classmethod
    def _only_where_files_are_read(cls, value: Any, info: ValidationInfo) -> Any:
        """data.root and data.download only where the dataset reads files: ignored, they would be recorded
        as if they had been used."""
        name = info.data.get("name")
        if info.field_name == "root" and value is not None and name in EMBEDDED:
            raise ValueError(f"data.name={name} is embedded and reads no files; drop data.root, or choose the "
                             "data.name that reads it (npz, folder, mnist, cifar10)")
        if info.field_name == "download" and value and name not in DOWNLOADABLE:
            raise ValueError(f"data.download applies to mnist and cifar10 only, not data.name={name}")
        return value

    @field_validator("train_size", "val_size", "test_size", mode="before")
    @classmethod
    def _count_or_fraction(cls, value: Any, info) -> Any:
        """One message per bad size instead of one per member of the union; numpy numbers accepted."""
        name = info.field_name
        if value == "auto" and name in AUTO_COUNTS or value is None and name != "val_size":
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # true would read as 1
            smallest = 0 if name == "test_size" else 1
            if value < smallest:
                raise ValueError(f"a count of images must be at least {smallest}")
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not 0 < float(value) < 1:
                raise ValueError("a fraction of the dataset must lie strictly between 0 and 1, as in scikit-learn's "
                                 "train_test_split; give a whole number for a count of images")
            return float(value)
        allowed = ["a count of images", "a fraction in (0, 1)"] + ["auto"] * (name in AUTO_COUNTS)
        allowed += ["null"] * (name != "val_size")
        raise ValueError(f"{name} takes {', '.join(allowed[:-1])} or {allowed[-1]}")


class ModelConfig(Section):
    channels: tuple[int, ...] = Field(
        (6, 16), min_length=1, description="conv channels per encoder stage (LeNet: 6, 16)")
    kernel_size: int = Field(5, ge=1, description="odd convolution kernel size")
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu"] = Field(
        "relu", description="hidden activation")
    pooling: Literal["max", "avg"] = Field("max", description="2x2 down-sampling after each encoder stage")
    autoencoder: Optional[Union[str, list[str]]] = Field(
        None,
        description="the members' autoencoder: null for the CAE of model.*, or module:QualName of an nn.Module class "
                    "built with no arguments, or a list of one per member (run(autoencoder=...) records it; load() "
                    "rebuilds it from here)")
    overrides: Optional[list[dict[str, Any]]] = Field(
        None, description="members that differ: one dict of model.* keys per member (length = members), each "
                          "laid over model.*, e.g. [{channels: [4, 8]}, {kernel_size: 3}, {}]")

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd so 'same' padding keeps the image size")
        return value

    @field_validator("autoencoder")
    @classmethod
    def _import_path(cls, value: Optional[Union[str, list[str]]]) -> Optional[Union[str, list[str]]]:
        for path in [value] if isinstance(value, str) else value or []:
            check_import_path(path, "autoencoder")
        if isinstance(value, list) and not value:
            raise ValueError("a list of autoencoders needs one module:QualName per member; null for the built-in CAE")
        return value

    @field_validator("overrides")
    @classmethod
    def _member_models(cls, value: Optional[list[dict[str, Any]]]) -> Optional[list[dict[str, Any]]]:
        """Each member's dict holds model.* keys only, each valid laid over the defaults."""
        allowed = sorted(set(cls.model_fields) - {"overrides"})
        for index, changes in enumerate(value or []):
            for key in changes:
                if key not in allowed:
                    raise ValueError(f"model.overrides[{index}] has the unknown key {key!r}{did_you_mean(key, allowed)}"
                                     f"; a member's dict takes model.* keys: {', '.join(allowed)}")
            try:
                ModelConfig.model_validate(changes)
            except ValidationError as err:
                raise ValueError(describe_validation_error(
                    err, f"key model.overrides[{index}].{{}}".format, f"member {index}'s model").rstrip(".")) from None
        return value

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c < 1 for c in value):
            raise ValueError("every channel count must be at least 1")
        return value


# The defaults a key shares with the worker side's dataclass (TrainSettings, EagerStop, EarlyStopping)
# are read from there: one home each, and a member built without a config trains as a default run.
class TrainConfig(Section):
    epochs: int = Field(EagerStop.max_epochs, ge=1, description="most epochs a member may train")
    batch_size: int = Field(TrainSettings.batch_size, ge=1, description="mini-batch size")
    lr: float = Field(TrainSettings.lr, gt=0, description="learning rate")
    optimizer: Literal["adam", "sgd"] = Field(TrainSettings.optimizer, description="optimizer")
    momentum: float = Field(TrainSettings.momentum, ge=0, lt=1, description="SGD momentum (ignored by Adam)")
    grad_clip: Optional[float] = Field(
        TrainSettings.grad_clip, gt=0, description="clip the gradient norm to this; null: no clipping")
    precision: Literal["fp32", "bf16"] = Field(
        TrainSettings.precision,
        description="bf16: autocast forward passes to bfloat16 (fast on recent GPUs; slow on most CPUs)")
    memory_format: Literal["auto", "contiguous", "channels_last"] = Field(
        AUTO,  # TrainSettings.memory_format's default; as the Final constant it is typed Literal['auto']
        description="layout of the members' and baseline's weights and images in training and encoding: "
                            "auto measures both at actor start (a few steps on the built-in CAE and a real batch) and "
                            "keeps the faster, while a custom autoencoder trains in the default unless one is named "
                            "(report.json: each placement's memory_format, which ensemble.load and predict keep); "
                            "contiguous is PyTorch's "
                            "default; channels_last suits oneDNN CPUs and GPU tensor cores")
    compile: bool = Field(
        TrainSettings.compile, description="torch.compile each member's model (pays compile time once per actor)")

    @model_validator(mode="before")
    @classmethod
    def _earlier_channels_last(cls, raw: Any) -> Any:
        """`train.channels_last` (a switch before `train.memory_format` existed, still in older runs'
        config.json) is read as the format it chose, so those runs load and resume as they ran."""
        if isinstance(raw, dict) and "channels_last" in raw and "memory_format" not in raw \
                and isinstance(raw["channels_last"], bool):
            raw = dict(raw)
            raw["memory_format"] = "channels_last" if raw.pop("channels_last") else "contiguous"
        return raw


class EagerConfig(Section):
    rule: Literal["plateau", "fixed", "budget", "none"] = Field(
        EagerStop.rule, description="when a member stops: plateau, fixed epoch count, wall-clock budget, or none")
    threshold: float = Field(
        EagerStop.threshold, ge=0, description="plateau: stop once validation loss improves by less than this fraction")
    min_epochs: int = Field(EagerStop.min_epochs, ge=1, description="plateau: never stop before this many epochs")
    epoch: int = Field(EagerStop.epoch, ge=1, description="fixed: stop after this many epochs")
    budget_seconds: float = Field(
        EagerStop.budget_seconds, gt=0, description="budget: stop before the next epoch would exceed this many seconds")


class BaselineConfig(Section):
    enabled: bool = Field(True, description="also train the monolithic baseline for comparison")
    patience: int = Field(
        EarlyStopping.patience, ge=1, description="epochs without improvement before the baseline stops")
    min_delta: float = Field(
        EarlyStopping.min_delta, ge=0,
        description="relative: an epoch improves when its validation loss is below the best by more than this "
                    "fraction of it (Lightning's EarlyStopping(min_delta) is absolute)")
    max_epochs: int = Field(EarlyStopping.max_epochs, ge=1, description="most epochs the baseline may train")
    width: Optional[float] = Field(
        None, gt=0,
        description="width multiplier of the baseline (the members' architecture made wider; a custom class takes it "
                    "as its `width` keyword); null: sqrt(members), or matched on total parameters when members differ")
    autoencoder: Optional[str] = Field(
        None, description="the baseline's own model, module:QualName of an nn.Module class built with no arguments "
                          "(run(baseline_autoencoder=...) records it); null: the members' architecture, widened")

    @field_validator("autoencoder")
    @classmethod
    def _import_path(cls, value: Optional[str]) -> Optional[str]:
        return value if value is None else check_import_path(value, "autoencoder")


class CombinerConfig(Section):
    kind: Literal[KINDS] = Field(  # type: ignore[valid-type]  # the values stay in classifier/, their one home
        "concat", description="concat (alias stack): the members' features side by side into one head, not "
                              "scikit-learn's stacking (a meta-learner over members' predictions); soft-vote / "
                              "hard-vote: one head per member, then a vote")
    head: Literal[HEADS] = Field("logistic", description="classifier head")  # type: ignore[valid-type]  # as kind
    max_iter: int = Field(200, ge=1, description="most iterations of each head (lbfgs steps, or the mlp's epochs); a "
                                                 "head that needs more warns, naming itself and this key")

    @field_validator("kind", mode="before")
    @classmethod
    def _old_name(cls, value: Any) -> Any:
        return combiner_kind(value)  # its earlier name, in older configs and reports


class ResourcesConfig(Section):
    cpus_per_member: float = Field(1.0, gt=0, description="Ray CPUs per member actor (fractions allowed)")
    gpus_per_member: float = Field(0.0, ge=0, description="Ray GPUs per member actor (fractions share a GPU)")
    lend_idle_cpus: bool = Field(
        True, description="CPUs of actors with nothing left to train go to the members still training (more torch "
                          "threads), so a phase's last members use every core; false: each member keeps its own "
                          "share, and reruns are bit-identical (thread counts change float rounding, about 1e-7)")
    max_restarts: int = Field(
        2, ge=0, description="times a member whose actor died is restarted from its newest checkpoint")
    members_per_actor: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = Field(
        1, description="members an actor trains as one batched computation (stacked parameters, torch.func): "
                       "1 trains each alone; auto: what was measured for the device (1 on CPUs, where packing "
                       "was slower; 1 on GPUs until a GPU measurement says otherwise)")


NAME_MAX_BYTES = 255  # the longest file name ext4, XFS, APFS and NTFS take (bytes of UTF-8)


class EnsembleConfig(Section):
    """A run's whole configuration: every key, frozen, checked when built.

    Keyword arguments are the top-level keys; a section takes a dict of its keys (or its own
    section object). Every key and its default is in the configuration reference (`ensemble
    config` prints it). Unknown keys and wrong types raise `InputError` naming the key.

    Attributes
    ----------
    name : str or None
        Run name (the run directory's name under `output`); None: a time stamp.
    seed : int
        Seed for the splits, the members' initialisation and the batch order.
    members : int
        Number of autoencoders trained in parallel.
    min_members : int
        Fewest usable members (not lost, not diverged) the combiner may go on with.
    output : str
        Directory (or `s3://` / `gs://` URI) that holds run directories.
    data, model, train, eager, baseline, combiner, resources : dict or section
        The sections' keys (`data.name`, `train.epochs`, `eager.rule`, ...).

    See Also
    --------
    EnsembleConfig.from_file : a YAML or JSON file, with `--set`-style overrides.
    EnsembleConfig.from_dict : nested or dotted keys, as a file holds them.

    Examples
    --------
    >>> import ensemble
    >>> cfg = ensemble.EnsembleConfig(members=3, train={"epochs": 2})
    >>> cfg.members, cfg.train.epochs, cfg.data.name
    (3, 2, 'mnist-5k')
    >>> cfg.with_overrides(["eager.rule=fixed", "eager.epoch=1"]).eager.rule
    'fixed'
    >>> try:
    ...     ensemble.EnsembleConfig(membres=3)
    ... except ensemble.InputError as err:
    ...     print(err)
    Invalid configuration: unknown config key 'membres' (did you mean 'members'?).
    """

    name: Optional[str] = Field(None, description="run name; null: a time stamp")
    seed: int = Field(0, description="seed for splits, initialisation and batch order")
    members: int = Field(5, ge=1, description="number of autoencoders trained in parallel")
    min_members: int = Field(
        1, ge=1, description="fewest usable members (not lost, not diverged) the combiner may go on with")
    output: str = Field("runs", description="directory that holds run directories")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eager: EagerConfig = Field(default_factory=EagerConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    combiner: CombinerConfig = Field(default_factory=CombinerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: Optional[str]) -> Optional[str]:
        """Any name a file system takes as one directory name (non-ASCII included); what none takes
        is refused here, before anything starts, with the reason."""
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise ValueError("name must be a non-empty directory name without '/'")
        if value is not None and "\0" in value:
            raise ValueError("name must not contain a NUL character (no file system takes it)")
        if value is not None and len(value.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            raise ValueError(f"name is {len(value.encode('utf-8', 'surrogateescape'))} bytes in UTF-8; a directory "
                             f"name may have at most {NAME_MAX_BYTES} (choose a shorter --name)")
        return value

    @model_validator(mode="after")
    def _enough_members(self) -> "EnsembleConfig":
        if self.min_members > self.members:
            raise ValueError(f"min_members={self.min_members} is more than members={self.members}; the run could "
                             "never go on, so lower min_members or raise members")
        return self

    @model_validator(mode="after")
    def _one_model_per_member(self) -> "EnsembleConfig":
        """Per-member lists must name every member, no more and no fewer."""
        lists = {"model.overrides": self.model.overrides, "model.autoencoder": self.model.autoencoder}
        for key, value in lists.items():
            if isinstance(value, list) and len(value) != self.members:
                raise ValueError(f"{key} lists {len(value)} member(s) but members={self.members}; give one entry per "
                                 "member ({} for a member that keeps model.*)" if key == "model.overrides" else
                                 f"{key} lists {len(value)} autoencoder(s) but members={self.members}; give one "
                                 "module:QualName per member")
        return self

    @model_validator(mode="after")
    def _overrides_apply(self) -> "EnsembleConfig":
        """A member built from a custom class takes no model.* keys: an override of one would be silently
        ignored (the members trained identical), so it is refused by name."""
        model = self.model
        for index, changes in enumerate(model.overrides or []):
            default = model.autoencoder[index] if isinstance(model.autoencoder, list) else model.autoencoder
            autoencoder = changes.get("autoencoder", default)
            ignored = [key for key in CAE_KEYS if key in changes]
            if autoencoder is not None and ignored:
                raise ValueError(
                    f"model.overrides[{index}].{ignored[0]} cannot apply: member {index} is the custom class "
                    f"{autoencoder}, which model.* keys do not configure (they set the built-in CAE); give members "
                    "that differ as different classes (a list in model.autoencoder, or run(autoencoder=[...])), or "
                    f"set model.overrides[{index}].autoencoder=null for a built-in CAE member")
        return self

    @classmethod
    def from_file(cls, path: str | Path, overrides: Sequence[str] = ()) -> "EnsembleConfig":
        return build_config(read_config_file(path), overrides)

    @classmethod
    def from_dict(cls, keys: dict[str, Any], overrides: Sequence[str] = ()) -> "EnsembleConfig":
        """A config from nested dicts as a YAML file holds them (`{"members": 3, "train": {"epochs": 2}}`);
        dotted keys (`{"train.epochs": 2}`) are accepted too. Bad keys or values: an InputError naming them."""
        if not isinstance(keys, dict):
            raise InputError(f"a config must be a dict of keys, not {type(keys).__name__}.")
        return build_config(nested(keys), overrides)

    def with_overrides(self, overrides: list[str]) -> "EnsembleConfig":
        return build_config(self.model_dump(mode="json"), overrides)


SECTION_KEYS = {"DataConfig": "data.", "ModelConfig": "model.", "TrainConfig": "train.", "EagerConfig": "eager.",
                "BaselineConfig": "baseline.", "CombinerConfig": "combiner.", "ResourcesConfig": "resources."}


CAE_KEYS = ("channels", "kernel_size", "activation", "pooling")  # model.* keys only the built-in CAE reads


def recorded_config(config: EnsembleConfig) -> dict[str, Any]:
    """The config as config.json and report.json record it: only keys that took part in the run (no
    data.root for in-memory arrays, no CAE settings when every member is a custom class)."""
    raw = json.loads(config.model_dump_json())
    if config.data.name == "arrays":
        for key in ("root", "download"):
            raw["data"].pop(key)
    overrides = config.model.overrides or []
    custom = config.model.autoencoder is not None and all(o.get("autoencoder", "") is not None for o in overrides)
    if custom:
        for key in CAE_KEYS:
            raw["model"].pop(key)
    if config.baseline.autoencoder is not None:  # its own model: nothing was widened
        raw["baseline"].pop("width")
    return raw


def check_import_path(path: Any, key: str) -> str:
    if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[\w.<>]+", path):
        raise ValueError(f"{key} must be an import path module:QualName, for example mypkg.models:MyAE")
    return path


def build_config(raw: dict[str, Any], overrides: Sequence[str] = ()) -> EnsembleConfig:
    """Raw keys (as a file holds them) with `--set` assignments laid over, validated; bad keys or values
    are one InputError naming each."""
    try:
        return EnsembleConfig.model_validate(with_assignments(raw, overrides))
    except ValidationError as err:
        raise InputError(describe_validation_error(err)) from None


def leaf_fields(model: type[BaseModel] = EnsembleConfig, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) of every leaf key, section by section, in the order the sections declare them."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            yield from leaf_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def known_keys() -> list[str]:
    """Every dotted key a config may set, leaves first, then the sections (`train`, ...)."""
    leaves = [key for key, _ in leaf_fields()]
    return leaves + sorted({key.rsplit(".", 1)[0] for key in leaves if "." in key})


def did_you_mean(keys: str | list[str], known: Optional[list[str]] = None) -> str:
    """" (did you mean 'train.epochs'?)" for a mistyped key (or any of the dotted keys it stood
    for), among every config key unless `known` says which (`messages.closest`); "" when none is
    near. One small function, so every place that refuses a key (--set, config files, Python, the
    estimator's settings) says the same."""
    return closest(keys, known_keys() if known is None else known)


def describe_validation_error(err: ValidationError, name: Callable[[str], str] = "config key {!r}".format,
                              what: str = "configuration") -> str:
    """One sentence per problem key, an unknown key with the config key it may have meant."""
    return describe(err, name, what, did_you_mean)
