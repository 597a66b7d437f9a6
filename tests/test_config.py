"""The config tree: defaults, overrides, errors that name the key, the generated key table, and
one home for every setting (the worker side's and the estimator's defaults agree with the config's)."""

import dataclasses
import inspect
import json
from pathlib import Path

import pydantic
import pytest

from classifier import HEADS, KINDS, combiner_kind
from classifier.combiner import EnsembleCombiner
from ensemble.builders import BUILT_HERE, baseline_rule, member_rule, train_settings
from ensemble.config import EnsembleConfig, build_config, config_reference
from ensemble.estimator import OWN_DEFAULTS, PARAMETER_KEYS, EagerEnsembleClassifier
from workers.errors import InputError
from workers.stopping import EagerStop, EarlyStopping
from workers.training import TrainSettings

CONFIG_PAGE = Path(__file__).parent.parent / "docs" / "guide" / "configuration.md"  # the generated key table


def test_defaults_reproduce_the_papers_small_setting():
    cfg = EnsembleConfig()
    assert cfg.members == 5 and cfg.data.name == "mnist-5k"
    assert cfg.train.optimizer == "adam" and cfg.train.lr == 1e-3 and cfg.train.batch_size == 100
    assert cfg.model.activation == "relu" and cfg.model.channels == (6, 16)


def test_config_is_frozen():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        EnsembleConfig().members = 3


def test_yaml_and_json_files_with_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("members: 3\ntrain:\n  epochs: 2\n")
    (tmp_path / "c.json").write_text(json.dumps({"members": 4, "combiner": {"kind": "soft-vote"}}))
    cfg = EnsembleConfig.from_file(tmp_path / "c.yaml", ["train.lr=0.01", "resources.gpus_per_member=0.25",
                                                         "model.channels=[4, 8, 8]", "train.grad_clip=null"])
    assert (cfg.members, cfg.train.epochs, cfg.train.lr) == (3, 2, 0.01)
    assert cfg.resources.gpus_per_member == 0.25 and cfg.model.channels == (4, 8, 8)
    assert EnsembleConfig.from_file(tmp_path / "c.json").combiner.kind == "soft-vote"


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=0.1", "unknown config key 'train.lrr'"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("train.lr=fast", "config key 'train.lr' has value 'fast'"),
    ("members=0", "config key 'members' has value 0"),
    ("eager.rule=sometimes", "allowed: 'plateau', 'fixed', 'budget' or 'none'"),
    ("data.name=imagenet", "config key 'data.name'"),
    ("model.kernel_size=4", "kernel_size must be odd"),
    ("train=3", "config key 'train'"),
    ("nonsense", "must look like section.key=value"),
])
def test_bad_keys_and_values_name_the_key(override, expected):
    with pytest.raises(InputError) as err:
        build_config({}, [override])
    assert expected in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        EnsembleConfig.from_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("members: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        EnsembleConfig.from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must hold a mapping"):
        EnsembleConfig.from_file(tmp_path / "list.yaml")


def test_every_field_has_a_description_and_the_docs_list_every_key():
    page = CONFIG_PAGE.read_text()
    rows = config_reference()
    assert {"data.root", "eager.rule", "resources.gpus_per_member", "baseline.width"} <= {k for k, _, _ in rows}
    for key, _, description in rows:
        assert description, key
        assert f"| `{key}` |" in page, f"docs/guide/configuration.md's reference table lacks {key}"


def test_the_docs_reference_table_is_the_generated_one():
    from ensemble.config import reference_markdown
    assert reference_markdown() in CONFIG_PAGE.read_text(), (
        "docs/guide/configuration.md's table differs from the code: paste the output of `ensemble config --markdown`")


def test_ci_runs_the_readme_test_command():
    root = Path(__file__).parent.parent
    ci_command = [line for line in (root / ".ci" / "run").read_text().splitlines() if "pytest" in line][-1].strip()
    assert ci_command in (root / "README.md").read_text()


@pytest.mark.parametrize("override, expected", [
    ("data.train_size=0.6", 0.6), ("data.train_size=240", 240), ("data.train_size=auto", "auto"),
    ("data.train_size=null", None), ("data.test_size=0", 0), ("data.test_size=0.25", 0.25),
])
def test_split_sizes_are_counts_fractions_or_auto(override, expected):
    key = override.split("=")[0].split(".")[1]
    assert getattr(build_config({}, [override]).data, key) == expected


@pytest.mark.parametrize("override, expected", [
    ("data.train_size=1.0", "strictly between 0 and 1"),
    ("data.val_size=0.0", "strictly between 0 and 1"),
    ("data.train_size=3000.0", "give a whole number for a count"),
    ("data.train_size=0", "at least 1"),
    ("data.test_size=-1", "at least 0"),
    ("data.val_size=true", "val_size takes a count of images, a fraction in (0, 1) or auto"),
    ("data.val_size=null", "val_size takes"),
    ("data.test_size=auto", "test_size takes a count of images, a fraction in (0, 1) or null"),
])
def test_impossible_split_sizes_name_the_key(override, expected):
    with pytest.raises(InputError) as err:
        build_config({}, [override])
    assert f"'{override.split('=')[0]}'" in str(err.value) and expected in str(err.value)
    assert str(err.value).count("config key") == 1  # one sentence, not one per member of the type union


def test_defaults_keep_3000_and_1000_for_the_embedded_sets():
    from ensemble.config import AUTO_COUNTS
    assert EnsembleConfig().data.train_size == "auto" and AUTO_COUNTS == {"train_size": 3000, "val_size": 1000}


def test_combiner_kind_stack_is_an_alias_of_concat():
    assert build_config({}, ["combiner.kind=stack"]).combiner.kind == "concat"
    assert EnsembleConfig().combiner.kind == "concat"
    description = dict((k, d) for k, _, d in config_reference())["combiner.kind"]
    assert "stacking" in description and "meta-learner" in description


def test_baseline_min_delta_says_it_is_relative():
    description = dict((k, d) for k, _, d in config_reference())["baseline.min_delta"]
    assert "relative" in description and "absolute" in description


@pytest.mark.parametrize("path, ok", [("mypkg.models:MyAE", True), ("__main__:MyAE", True),
                                      ("tests.test_x:test.<locals>.AE", True), ("MyAE", False), ("a:b:c", False)])
def test_model_autoencoder_is_an_import_path(path, ok):
    if ok:
        assert build_config({}, [f"model.autoencoder={path}"]).model.autoencoder == path
    else:
        with pytest.raises(InputError, match="import path module:QualName"):
            build_config({}, [f"model.autoencoder={path}"])


# --- one home for every setting ---

WORKER_SIDE = [(TrainSettings, "train"), (EagerStop, "eager"), (EarlyStopping, "baseline")]


@pytest.mark.parametrize("cls, section", WORKER_SIDE, ids=lambda x: getattr(x, "__name__", x))
def test_every_worker_side_field_comes_from_the_config(cls, section):
    """A field the config lacks would silently take the worker's own default in every run."""
    fields = {f.name for f in dataclasses.fields(cls)} - BUILT_HERE[cls]
    assert fields - set(type(getattr(EnsembleConfig(), section)).model_fields) == set()


@pytest.mark.parametrize("cls, section", WORKER_SIDE, ids=lambda x: getattr(x, "__name__", x))
def test_worker_side_defaults_agree_with_the_config(cls, section):
    """The worker side's dataclasses hold the defaults they share with the config, which reads them there (one
    home); the names must still line up, so each config default is the worker's."""
    config_section = getattr(EnsembleConfig(), section)
    differ = {f.name: (f.default, getattr(config_section, f.name)) for f in dataclasses.fields(cls)
              if f.name not in BUILT_HERE[cls] and f.default != getattr(config_section, f.name)}
    assert differ == {}
    assert EagerStop().max_epochs == EnsembleConfig().train.epochs


def test_eager_section_and_eager_rule_hold_the_same_settings():
    """`eager.*` is the rule's parameters, nothing more: a key the rule does not read would do nothing."""
    eager_fields = {f.name for f in dataclasses.fields(EagerStop)} - BUILT_HERE[EagerStop]
    assert eager_fields == set(type(EnsembleConfig().eager).model_fields)


def test_builders_carry_every_changed_setting_to_the_worker_side():
    cfg = build_config({}, ["eager.threshold=0.05", "eager.min_epochs=4", "train.lr=0.01", "train.momentum=0.5",
                            "baseline.patience=7", "baseline.min_delta=0.1", "baseline.max_epochs=9"])
    assert member_rule(cfg.eager, 11) == EagerStop(rule="plateau", threshold=0.05, min_epochs=4, max_epochs=11)
    assert baseline_rule(cfg.baseline) == EarlyStopping(patience=7, min_delta=0.1, max_epochs=9)
    settings = train_settings(cfg, seed=42)
    assert (settings.lr, settings.momentum, settings.seed) == (0.01, 0.5, 42)


def test_estimator_defaults_are_the_configs_unless_it_says_why_not():
    defaults = {name: p.default for name, p in inspect.signature(EagerEnsembleClassifier).parameters.items()}
    config = EnsembleConfig()
    for name, key in PARAMETER_KEYS.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        assert defaults[name] == OWN_DEFAULTS.get(name, value), name
    assert defaults["random_state"] == config.seed
    assert set(OWN_DEFAULTS) <= set(PARAMETER_KEYS)


def test_the_combiners_names_and_old_alias_have_one_home():
    assert build_config({}, ["combiner.kind=stack"]).combiner.kind == "concat" == combiner_kind("stack")
    assert EnsembleCombiner(kind="stack")._kind() == "concat"
    fields = EnsembleConfig.model_fields["combiner"].annotation.model_fields
    assert (fields["kind"].annotation.__args__, fields["head"].annotation.__args__) == (KINDS, HEADS)


def test_a_runs_config_json_with_its_run_id_is_a_config_file_again(tmp_path):
    """config.json records the run's id (issue 31); given as --config it starts a new run, which draws its own."""
    from ensemble.config import resume_config
    from ensemble.runs.rundir import write_config
    config = build_config({}, ["members=3", f"output={tmp_path}", "name=old"])
    (tmp_path / "old").mkdir()
    write_config(tmp_path / "old", config, "a" * 32)
    assert json.loads((tmp_path / "old" / "config.json").read_text())["run_id"] == "a" * 32
    assert EnsembleConfig.from_file(tmp_path / "old" / "config.json").members == 3
    assert resume_config(tmp_path / "old").members == 3


def test_one_resolve_step_layers_defaults_file_python_keys_and_set_in_that_order(tmp_path):
    """`ensemble.config.resolve`: what the CLI, `ensemble.run` and resume all call (issue 35)."""
    from ensemble.config import resolve
    file = tmp_path / "run.yaml"
    file.write_text("members: 4\ntrain: {epochs: 7, lr: 0.01}\n")
    resolved = resolve(file=file, keys={"train.epochs": 3, "seed": 5}, overrides=["seed=9"])
    config = resolved.config
    assert (config.members, config.train.epochs, config.train.lr, config.seed) == (4, 3, 0.01, 9)
    assert not resolved.resume and config.name.startswith("run-")  # a new run is named here, once
    given = EnsembleConfig(name="mine")
    assert resolve(given).config is given  # nothing to lay over: the config as given
    arrays = resolve(build_config({}, ["data.name=npz", "data.root=/x", "name=a"]), dataset_given=True).config
    assert (arrays.data.name, arrays.data.root) == ("arrays", None)


def test_resolve_continues_a_saved_run_and_refuses_set_keys_it_would_ignore(tmp_path):
    from ensemble.config import resolve
    from ensemble.runs.rundir import write_config
    saved = build_config({}, ["members=3", f"output={tmp_path}", "name=cut"])
    (tmp_path / "cut").mkdir()
    write_config(tmp_path / "cut", saved)
    again = resolve(resume=tmp_path / "cut")
    assert again.resume and again.config.members == 3 and again.config.name == "cut"
    same = resolve(overrides=[f"output={tmp_path}", "name=cut", "members=3"], resume_if_exists=True)
    assert same.resume and same.config == again.config
    with pytest.raises(InputError, match=r"--set asks for other values: members=4 \(the run has 3\)"):
        resolve(overrides=[f"output={tmp_path}", "name=cut", "members=4"], resume_if_exists=True)
    new = resolve(overrides=[f"output={tmp_path}", "name=fresh"], resume_if_exists=True)
    assert not new.resume and new.config.name == "fresh"


def test_serving_defaults_have_one_home_the_cli_and_serve_read():
    """`ServeOptions` holds serving's defaults; `ensemble serve`'s flags and `ensemble.serve()` offer the same."""
    from ensemble.cli import build_parser
    from ensemble.serving.application import serve
    from ensemble.serving.options import HOST, PORT, MiB, ServeOptions
    flags = build_parser().parse_args(["serve", "some-run"])
    signature = {name: p.default for name, p in inspect.signature(serve).parameters.items()}
    for name, field in ServeOptions.model_fields.items():
        if name not in ("run_dir", "autoencoder"):
            assert signature[name] == field.default, name
            if name != "trust_code":
                wanted = field.default / MiB if name == "max_body_bytes" else field.default
                assert getattr(flags, name.replace("max_body_bytes", "max_body_mib")) == wanted, name
    assert (signature["host"], signature["port"], flags.host, flags.port) == (HOST, PORT, HOST, PORT)
