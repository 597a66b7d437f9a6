"""A finished member encodes its own checkpoints: the epochs it picks and the numbers it computes are
the driver's, and the driver encodes only what did not arrive. No Ray."""

import numpy as np
import torch

import ensemble.runs.evaluation as evaluation
from classifier.features import member_features
from ensemble.builders import member_encoding
from ensemble.config import CombinerConfig, build_config
from ensemble.data import load_splits
from tests.tiny import TINY, TinyAE
from workers.checkpoints import save_checkpoint
from workers.encoding import OWN_HEAD, EncodeRequest, encode_checkpoints, epochs_to_encode, with_own_head
from workers.history import EpochRecord


def history(*val_losses):
    return [EpochRecord(i + 1, v, v, 1.0) for i, v in enumerate(val_losses)]


def test_the_actor_encodes_the_selected_epoch_and_epoch_0_only_when_asked():
    losses = history(3.0, 2.0, 2.5)
    assert epochs_to_encode(EncodeRequest(), losses) == [2, 0]  # the lowest validation loss, then the reference
    assert epochs_to_encode(EncodeRequest(reference=False), losses) == [2]  # the baseline: no reference
    assert epochs_to_encode(EncodeRequest(fixed_epoch=3), losses) == [3, 0]  # eager.rule=fixed
    assert epochs_to_encode(EncodeRequest(), history(float("nan"))) == []  # diverged: excluded, nothing to send
    assert epochs_to_encode(EncodeRequest(fixed_epoch=5), losses) == []  # never trained that far
    config = build_config({}, ["eager.rule=fixed", "eager.epoch=2"])
    assert member_encoding(config.eager, reference=False) == EncodeRequest(fixed_epoch=2, reference=False)


def saved_member(member_dir, epochs):
    for epoch in epochs:
        torch.manual_seed(epoch)
        save_checkpoint(member_dir, epoch, TinyAE().state_dict(), {}, {})


def test_the_actors_features_are_the_drivers_and_the_driver_then_loads_nothing(tmp_path, monkeypatch):
    splits = load_splits(build_config({}, TINY).data, 0)
    for name in ("member_00", "member_01"):
        saved_member(tmp_path / name, [0, 1])
    images = {"train": splits.train_x, "test": splits.test_x}
    sent = {name: encode_checkpoints(TinyAE, tmp_path / name, [1, 0, 7], images) for name in ("member_00", "member_01")}
    assert sorted(sent["member_00"]) == [0, 1]  # no checkpoint 7: left for the driver to name
    driver = member_features([evaluation.load_autoencoder(TinyAE, tmp_path / "member_00", 1)], splits.train_x)[0]
    assert sent["member_00"][1]["train"].dtype == np.float32 and np.array_equal(sent["member_00"][1]["train"], driver)

    chosen, combiner = [("member_00", 1), ("member_01", 1)], CombinerConfig()
    here = evaluation.score_checkpoints(TinyAE, tmp_path, chosen, splits, combiner, 0)  # encoded by the driver
    loaded = []
    real = evaluation.load_autoencoder
    monkeypatch.setattr(evaluation, "load_autoencoder", lambda *args: loaded.append(args[1:]) or real(*args))
    shipped = evaluation.score_checkpoints(TinyAE, tmp_path, chosen, splits, combiner, 0, sent)
    assert loaded == []  # nothing encoded here (a timing comparison failed under load and proved no more)
    assert shipped.test_accuracy == here.test_accuracy
    assert np.array_equal(shipped.test_predictions, here.test_predictions)

    sent["member_01"] = {}  # its actor could not encode: the driver encodes that one member itself
    mixed = evaluation.score_checkpoints(TinyAE, tmp_path, chosen, splits, combiner, 0, sent)
    assert [(p.name, epoch) for p, epoch, *_ in loaded] == [("member_01", 1)]
    assert np.array_equal(mixed.test_predictions, here.test_predictions)


def test_a_checkpoint_encoded_again_takes_the_layout_its_run_recorded(tmp_path, monkeypatch):
    """`select`, `curves` and `labels` encode checkpoints the actors did not send: in the layout the run's
    report names for that member, they give the features its actor gave, to the bit."""
    from workers.memory_format import CHANNELS_LAST, CONTIGUOUS
    from workers.models import CAEFactory
    factory, member_dir = CAEFactory((1, 8, 8), channels=(4, 8)), tmp_path / "member_00"
    torch.manual_seed(0)
    save_checkpoint(member_dir, 1, factory().state_dict(), {}, {})
    splits = load_splits(build_config({}, TINY).data, 0)
    sent = encode_checkpoints(factory, member_dir, [1], {"train": splits.train_x, "test": splits.test_x},
                              memory_format=CHANNELS_LAST)[1]
    again = evaluation.checkpoint_features(factory, member_dir, 1, splits, {}, CHANNELS_LAST)
    assert np.array_equal(again["train"], sent["train"]) and np.array_equal(again["test"], sent["test"])
    default = evaluation.checkpoint_features(factory, member_dir, 1, splits, {})
    assert np.allclose(default["train"], sent["train"], atol=1e-5)  # the other layout: the same up to rounding
    layouts = []
    real = evaluation.load_autoencoder
    monkeypatch.setattr(evaluation, "load_autoencoder", lambda *args: layouts.append(args[3:]) or real(*args))
    chosen, combiner = [("member_00", 1)], CombinerConfig()
    evaluation.score_checkpoints(factory, tmp_path, chosen, splits, combiner, 0, layouts={"member_00": CHANNELS_LAST})
    evaluation.score_checkpoints(factory, tmp_path, chosen, splits, combiner, 0)  # none recorded: the default
    assert layouts == [(CHANNELS_LAST,), (CONTIGUOUS,)]


def test_each_members_own_head_comes_from_its_actor_and_the_driver_fits_only_what_did_not(tmp_path, monkeypatch):
    """The actor fits the member's own head on its selected epoch's features (the driver's diversity
    figures); the driver fits a head only for a member whose predictions did not come."""
    config = build_config({}, TINY)
    splits = load_splits(config.data, 0)
    names, chosen, combiner = ("member_00", "member_01"), [("member_00", 1), ("member_01", 1)], CombinerConfig()
    request, losses = member_encoding(config.eager, True, combiner, seed=0), history(2.0)
    images, labels = {"train": splits.labelled_x, "test": splits.test_x}, splits.labelled_y.numpy()
    sent = {}
    for name in names:
        saved_member(tmp_path / name, [0, 1])
        encoded = encode_checkpoints(TinyAE, tmp_path / name, epochs_to_encode(request, losses), images)
        assert with_own_head(encoded, EncodeRequest(), losses, labels) == encoded  # no head asked: nothing added
        assert with_own_head(encoded, request, losses, None) == encoded  # no labels came: nothing added
        sent[name] = with_own_head(encoded, request, losses, labels)
        assert OWN_HEAD in sent[name][1] and OWN_HEAD not in sent[name][0]  # the selected epoch's head only
        assert sent[name][1][OWN_HEAD].shape == (len(splits.test_y),)

    here = evaluation.score_run(TinyAE, tmp_path, chosen, splits, combiner, 0)  # the driver fits every head
    fitted = []
    real = evaluation.own_head_predictions
    monkeypatch.setattr(evaluation, "own_head_predictions", lambda *args: fitted.append(args) or real(*args))
    shipped = evaluation.score_run(TinyAE, tmp_path, chosen, splits, combiner, 0, sent)
    assert fitted == []
    assert all(np.array_equal(a, b) for a, b in zip(shipped.alone, here.alone, strict=True))
    assert np.array_equal(shipped.ensemble.test_predictions, here.ensemble.test_predictions)
    assert shipped.untrained.test_accuracy == here.untrained.test_accuracy

    del sent["member_01"][1][OWN_HEAD]  # its actor could not fit it: the driver fits that one, in member order
    mixed = evaluation.score_run(TinyAE, tmp_path, chosen, splits, combiner, 0, sent)
    assert len(fitted) == 1 and all(np.array_equal(a, b) for a, b in zip(mixed.alone, here.alone, strict=True))


def test_serving_encodes_in_the_format_a_run_names_else_measures_once_and_remembers(tmp_path, monkeypatch):
    from workers.encoding import encode, fastest_encoding_format
    from workers.memory_format import CACHE_ENV, FORMATS, in_memory_format
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "formats.json"))
    encoders = [TinyAE().eval().requires_grad_(False) for _ in range(2)]
    batch = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert fastest_encoding_format(encoders, batch, "contiguous") == "contiguous"
    assert not (tmp_path / "formats.json").exists()  # a named format is not measured
    chosen = fastest_encoding_format(encoders, batch)
    assert chosen in FORMATS and chosen in (tmp_path / "formats.json").read_text()
    before = [encode(e, batch) for e in encoders]
    for encoder in encoders:
        in_memory_format(encoder, "channels_last")
    assert all(np.allclose(encode(e, batch), b, atol=1e-6) for e, b in zip(encoders, before, strict=True))
    assert all(not m.training for e in encoders for m in e.modules())  # a frozen encoder stays in eval mode
