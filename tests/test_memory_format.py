"""The memory format members train and encode in: the pure choice, the probe, and equal results both ways."""

import pytest
import torch
from torch import nn

from ensemble.config import build_config
from workers.encoding import encode, encode_checkpoints
from workers.memory_format import (
    CHANNELS_LAST,
    CONTIGUOUS,
    as_layout_of,
    choose_memory_format,
    in_memory_format,
    module_memory_format,
    probe_memory_formats,
    recorded_memory_format,
)
from workers.models import CAEFactory
from workers.stopping import EagerStop
from workers.training import TrainSettings, apply_fast_paths, resolve_memory_format, train_member

FACTORY = CAEFactory((1, 28, 28), channels=(4, 8))


@pytest.fixture(scope="module")
def digits():
    from ensemble.data.sources import mnist_5k_arrays
    x, _ = mnist_5k_arrays()
    images = torch.tensor(x[:300] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return images[:200], images[200:]


@pytest.mark.parametrize("seconds, chosen", [
    ({CONTIGUOUS: [1.0, 1.1, 0.9], CHANNELS_LAST: [0.6, 0.7, 0.65]}, CHANNELS_LAST),  # clearly faster
    ({CONTIGUOUS: [1.0, 1.0, 1.0], CHANNELS_LAST: [0.97, 0.98, 0.96]}, CONTIGUOUS),  # within the margin: default
    ({CONTIGUOUS: [0.5, 0.5], CHANNELS_LAST: [0.9, 0.8]}, CONTIGUOUS),  # slower
    ({CONTIGUOUS: [1.0, 50.0, 1.0], CHANNELS_LAST: [0.7, 0.7, 40.0]}, CHANNELS_LAST),  # medians: one stall each
    ({CONTIGUOUS: [1.0]}, CONTIGUOUS),  # channels_last failed or was not probed
    ({CONTIGUOUS: [], CHANNELS_LAST: [2.0]}, CHANNELS_LAST),  # only channels_last ran
])
def test_the_choice_takes_channels_last_only_when_clearly_faster(seconds, chosen):
    assert choose_memory_format(seconds) == chosen


def test_the_probe_times_both_formats_interleaved_and_leaves_the_model_alone(digits):
    torch.manual_seed(0)
    model = FACTORY()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def step(probe_model, batch):
        calls.append(module_memory_format(probe_model))
        assert batch.is_contiguous(memory_format=torch.channels_last if calls[-1] == CHANNELS_LAST else
                                   torch.contiguous_format)
        probe_model(batch).sum().backward()

    seconds = probe_memory_formats(model, digits[0][:50], step, rounds=3)
    assert {k: len(v) for k, v in seconds.items()} == {CONTIGUOUS: 3, CHANNELS_LAST: 3}
    assert calls == [CONTIGUOUS, CHANNELS_LAST] * 4  # one untimed step each, then alternating rounds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert module_memory_format(model) == CONTIGUOUS


def test_a_format_the_model_cannot_run_in_is_left_out(digits):
    def step(probe_model, batch):
        if module_memory_format(probe_model) == CHANNELS_LAST:
            raise RuntimeError("no kernel for this layout")
    seconds = probe_memory_formats(FACTORY(), digits[0][:10], step, rounds=2)
    assert list(seconds) == [CONTIGUOUS] and choose_memory_format(seconds) == CONTIGUOUS


def test_user_code_that_fails_on_a_later_call_leaves_the_default_and_is_not_the_probes_to_report(digits):
    calls = []

    def step(probe_model, batch):  # user code that raises after four calls, in any format: both formats'
        calls.append(1)            # untimed steps and their first timed round pass, the second round fails
        if len(calls) > 4:
            raise ValueError("this layer expected 64 features")
    seconds = probe_memory_formats(FACTORY(), digits[0][:10], step, rounds=3)
    assert seconds == {CONTIGUOUS: []} and choose_memory_format(seconds) == CONTIGUOUS


@pytest.mark.parametrize("placement, chosen", [
    ({"memory_format": CHANNELS_LAST, "device": "cpu"}, CHANNELS_LAST),
    ({"memory_format": CONTIGUOUS}, CONTIGUOUS),
    ({"device": "cpu"}, CONTIGUOUS),  # a run from before the key
    ({"memory_format": "auto"}, CONTIGUOUS), ({"memory_format": None}, CONTIGUOUS),  # no layout a run records
])
def test_a_loaded_member_takes_the_layout_its_placement_records(placement, chosen):
    assert recorded_memory_format(placement) == chosen


def test_a_model_goes_to_either_layout_and_back():
    model = FACTORY()
    assert module_memory_format(in_memory_format(model, CHANNELS_LAST)) == CHANNELS_LAST
    assert module_memory_format(in_memory_format(model, CONTIGUOUS)) == CONTIGUOUS
    assert all(p.is_contiguous() for p in model.parameters())


def test_images_that_are_not_4d_keep_the_default_format():
    model = nn.Sequential(nn.Linear(8, 8))
    assert probe_memory_formats(model, torch.rand(4, 8), lambda m, b: None) == {CONTIGUOUS: []}
    settings = resolve_memory_format(TrainSettings(batch_size=4), model, torch.rand(4, 8))
    assert settings.memory_format == CONTIGUOUS


def test_auto_resolves_to_a_format_and_a_named_format_stays(digits):
    auto = resolve_memory_format(TrainSettings(batch_size=50), FACTORY(), digits[0])
    assert auto.memory_format in (CONTIGUOUS, CHANNELS_LAST) and auto.batch_size == 50
    named = TrainSettings(batch_size=50, memory_format=CONTIGUOUS)
    assert resolve_memory_format(named, FACTORY(), digits[0]) is named


def test_training_in_channels_last_gives_the_default_formats_losses(digits, tmp_path):
    """Both layouts compute the same sums in another order: the losses agree to float tolerance."""
    histories = {}
    for memory_format in (CONTIGUOUS, CHANNELS_LAST):
        torch.manual_seed(0)
        settings = TrainSettings(batch_size=50, seed=3, memory_format=memory_format)
        *_, outcome = train_member(FACTORY(), *digits, settings, EagerStop(rule="fixed", epoch=3, max_epochs=3),
                                   tmp_path / memory_format)
        histories[memory_format] = [loss for r in outcome.history for loss in (r.train_loss, r.val_loss)]
    assert len(histories[CHANNELS_LAST]) == 6
    assert histories[CHANNELS_LAST] == pytest.approx(histories[CONTIGUOUS], rel=1e-4)
    # the checkpoints hold plain weights either way: encoding them in either format gives the same features
    features = {memory_format: encode_checkpoints(FACTORY, tmp_path / CHANNELS_LAST, [3], {"test": digits[1]},
                                                  memory_format=memory_format)[3]["test"]
                for memory_format in (CONTIGUOUS, CHANNELS_LAST)}
    assert features[CHANNELS_LAST] == pytest.approx(features[CONTIGUOUS], rel=1e-4, abs=1e-5)


def test_encode_lays_each_batch_out_as_the_weights_are(digits):
    torch.manual_seed(0)
    model = FACTORY().eval()
    plain = encode(model, digits[1], batch_size=30)
    fast = in_memory_format(FACTORY(), CHANNELS_LAST)
    fast.load_state_dict(model.state_dict())
    assert module_memory_format(fast) == CHANNELS_LAST
    assert encode(fast, digits[1], batch_size=30) == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_the_config_key_and_its_earlier_switch():
    assert build_config({}).train.memory_format == "auto"
    assert build_config({}, ["train.memory_format=channels_last"]).train.memory_format == CHANNELS_LAST
    # older runs' config.json said train.channels_last: they load as the format they ran in
    assert build_config({"train": {"channels_last": True}}).train.memory_format == CHANNELS_LAST
    assert build_config({"train": {"channels_last": False}}).train.memory_format == CONTIGUOUS
    with pytest.raises(Exception, match="train.memory_format"):
        build_config({}, ["train.memory_format=nhwc"])


def test_channels_last_lays_out_each_batch_and_never_copies_the_dataset():
    """A 3-channel dataset in channels_last would be a second copy per member: only batches are converted."""
    images = torch.rand(40, 3, 16, 16)
    settings = TrainSettings(batch_size=10, memory_format=CHANNELS_LAST)
    model, (kept,) = apply_fast_paths(CAEFactory((3, 16, 16), channels=(4, 8))(), [images], settings)
    assert kept.data_ptr() == images.data_ptr() and kept.is_contiguous()
    assert module_memory_format(model) == CHANNELS_LAST
    assert as_layout_of(model)(images[:10]).is_contiguous(memory_format=torch.channels_last)
    assert as_layout_of(CAEFactory((3, 16, 16), channels=(4, 8))())(images[:10]).is_contiguous()


def test_a_machines_choices_are_remembered_per_key_and_garbage_is_ignored(tmp_path, monkeypatch):
    from workers.memory_format import CACHE_ENV, cache_path, cached_choice, probe_key, remember_choice
    path = tmp_path / "cache" / "memory-formats.json"
    key = probe_key("CAEFactory(...)", (100, 1, 28, 28), "cpu", 1, "adam fp32")
    assert key != probe_key("CAEFactory(...)", (100, 1, 28, 28), "cpu", 2, "adam fp32")  # threads matter
    assert key != probe_key("CAEFactory(...)", (50, 1, 28, 28), "cpu", 1, "adam fp32")  # so does the batch
    assert cached_choice(path, key) is None  # nothing remembered yet
    remember_choice(path, key, CHANNELS_LAST)
    remember_choice(path, "other", CONTIGUOUS)
    assert cached_choice(path, key) == CHANNELS_LAST and cached_choice(path, "other") == CONTIGUOUS
    path.write_text('{"%s": "nhwc"}' % key)  # not a format we know
    assert cached_choice(path, key) is None
    path.write_text("not json")
    assert cached_choice(path, key) is None
    remember_choice(path, key, CONTIGUOUS)  # a damaged file is replaced
    assert cached_choice(path, key) == CONTIGUOUS
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_path() is None and cached_choice(None, key) is None
    remember_choice(None, key, CHANNELS_LAST)  # turned off: nothing written, nothing raised
    monkeypatch.setenv(CACHE_ENV, str(path))
    assert cache_path() == path
