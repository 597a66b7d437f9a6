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
from workers.encoding import EncodeRequest, encode_checkpoints, epochs_to_encode
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
    assert loaded == [] and shipped.feature_seconds < here.feature_seconds
    assert shipped.test_accuracy == here.test_accuracy
    assert np.array_equal(shipped.test_predictions, here.test_predictions)

    sent["member_01"] = {}  # its actor could not encode: the driver encodes that one member itself
    mixed = evaluation.score_checkpoints(TinyAE, tmp_path, chosen, splits, combiner, 0, sent)
    assert [(p.name, epoch) for p, epoch in loaded] == [("member_01", 1)]
    assert np.array_equal(mixed.test_predictions, here.test_predictions)
