"""The run configuration: its sections and keys (`sections`), reading files and `--set`
(`files`), what a bad key is told (`messages`), the generated reference (`reference`), and the
one step that turns defaults, a file, `--set`, Python keys or a resumed run into the config that
runs (`resolve`)."""

from ensemble.config.files import (
    LimitedLoader,
    apply_override,
    expanded_size,
    nested,
    read_config_file,
    set_key,
    with_assignments,
)
from ensemble.config.reference import config_reference, reference_markdown, reference_text
from ensemble.config.resolution import (
    Resolved,
    as_built,
    default_run_name,
    differing_keys,
    merged,
    resolve,
    resume_config,
    start_or_resume,
)
from ensemble.config.sections import (
    ARRAYS,
    AUTO_COUNTS,
    CAE_KEYS,
    DOWNLOADABLE,
    EMBEDDED,
    SECTION_KEYS,
    BaselineConfig,
    CombinerConfig,
    DataConfig,
    EagerConfig,
    EnsembleConfig,
    ModelConfig,
    ResourcesConfig,
    Section,
    SplitSize,
    TrainConfig,
    build_config,
    check_import_path,
    describe_validation_error,
    did_you_mean,
    known_keys,
    leaf_fields,
    recorded_config,
)

__all__ = [
    "ARRAYS", "AUTO_COUNTS", "CAE_KEYS", "DOWNLOADABLE", "EMBEDDED", "SECTION_KEYS", "BaselineConfig",
    "CombinerConfig", "DataConfig", "EagerConfig", "EnsembleConfig", "LimitedLoader", "ModelConfig",
    "ResourcesConfig", "Resolved", "Section", "SplitSize", "TrainConfig", "apply_override", "as_built",
    "build_config", "check_import_path", "config_reference", "default_run_name", "describe_validation_error",
    "did_you_mean", "differing_keys", "expanded_size", "known_keys", "leaf_fields", "merged", "nested",
    "read_config_file", "recorded_config", "reference_markdown", "reference_text", "resolve", "resume_config",
    "set_key", "start_or_resume", "with_assignments",
]
