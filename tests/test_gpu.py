"""The device path on a real GPU (skipped without CUDA; benchmarks/device_check.sh runs these there):
training on cuda, the fast paths, one copy of the data per actor, checkpoints written on a GPU and
loaded on a CPU, and features and the combiner from GPU-resident encoders."""

import numpy as np
import pytest
import torch

import ensemble
from ensemble.config import build_config
from ensemble.data.sources import mnist_5k_arrays
from tests.tiny import TINY
from workers.checkpoints import load_checkpoint
from workers.encoding import encode_checkpoints
from workers.events import Started
from workers.layout import checkpoint_dir
from workers.models import CAEFactory
from workers.stopping import EagerStop
from workers.training import TrainSettings, resolve_memory_format, train_member

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def images():
    x, _ = mnist_5k_arrays()
    return torch.tensor(x[:400] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)


@pytest.mark.parametrize("settings", [TrainSettings(batch_size=50), TrainSettings(batch_size=50, precision="bf16"),
                                      TrainSettings(batch_size=50, memory_format="channels_last"),
                                      TrainSettings(batch_size=50, compile=True)],
                         ids=["fp32", "bf16", "channels_last", "compile"])
def test_a_member_trains_on_cuda_and_its_checkpoints_load_on_a_cpu(images, settings, tmp_path):
    torch.manual_seed(0)
    model = CAEFactory((1, 28, 28), channels=(4, 8))().to("cuda")
    train, val = images[:300].to("cuda"), images[300:].to("cuda")
    *_, outcome = train_member(model, train, val, settings, EagerStop(rule="fixed", epoch=2, max_epochs=2), tmp_path)
    assert not outcome.diverged and all(r.finite for r in outcome.history)
    weights = load_checkpoint(checkpoint_dir(tmp_path, 2), map_location="cpu").weights
    assert all(w.device.type == "cpu" and torch.isfinite(w).all() for w in weights.values())
    plain = CAEFactory((1, 28, 28), channels=(4, 8))()
    plain.load_state_dict(weights)  # plain keys, whichever fast path trained it


def test_auto_memory_format_probes_on_cuda_and_channels_last_matches_the_default(images, tmp_path):
    """cuDNN's channels_last kernels: the probe runs both layouts on the GPU, and a member trained and
    encoded in channels_last gets the default layout's losses and features within float tolerance."""
    factory = CAEFactory((1, 28, 28), channels=(4, 8))
    train, val = images[:300].to("cuda"), images[300:].to("cuda")
    chosen = resolve_memory_format(TrainSettings(batch_size=50), factory().to("cuda"), train).memory_format
    assert chosen in ("contiguous", "channels_last")
    losses, features = {}, {}
    for memory_format in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        settings = TrainSettings(batch_size=50, memory_format=memory_format)
        *_, outcome = train_member(factory().to("cuda"), train, val, settings,
                                   EagerStop(rule="fixed", epoch=2, max_epochs=2), tmp_path / memory_format)
        losses[memory_format] = [loss for r in outcome.history for loss in (r.train_loss, r.val_loss)]
        features[memory_format] = encode_checkpoints(factory, tmp_path / memory_format, [2], {"val": val}, "cuda",
                                                     memory_format)[2]["val"]
    assert losses["channels_last"] == pytest.approx(losses["contiguous"], rel=1e-3)
    assert features["channels_last"] == pytest.approx(features["contiguous"], rel=1e-2, abs=1e-3)


@pytest.mark.slow
def test_a_gpu_run_copies_the_data_once_per_actor_and_loads_on_the_cpu(ray_instance, tmp_path):
    events = []
    cfg = build_config({}, TINY + ["members=3", "resources.gpus_per_member=0.5", "resources.cpus_per_member=0.5",
                                   "baseline.enabled=false", f"output={tmp_path}", "name=gpu"])
    result = ensemble.run(cfg, on_event=events.append)
    started = [e for e in events if isinstance(e, Started)]
    assert all(e.placement["device"] == "cuda:0" for e in started)
    by_actor: dict[int, list[int]] = {}
    for e in started:
        by_actor.setdefault(e.placement["pid"], []).append(e.placement["device_copies"])
    assert all(max(copies) == 1 for copies in by_actor.values())  # one copy per actor, however many members
    assert any(len(copies) > 1 for copies in by_actor.values())  # and one actor did train a second member
    on_cpu = ensemble.load(result.run_dir)  # checkpoints written on the GPU, loaded here on the CPU
    images = torch.rand(8, 1, 8, 8) * 16
    assert np.array_equal(on_cpu.predict(images), result.predict(images))


def test_features_and_the_combiner_run_from_gpu_resident_encoders(images):
    from classifier.combiner import fit_combiner
    from classifier.features import member_features
    encoders = [CAEFactory((1, 28, 28), channels=(4, 8))().to("cuda").eval() for _ in range(2)]
    labels = np.arange(len(images)) % 10
    on_gpu = member_features(encoders, images)
    on_cpu = member_features([e.to("cpu") for e in encoders], images)
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(on_gpu, on_cpu, strict=True))
    combiner, _ = fit_combiner("concat", "logistic", on_gpu, labels)
    assert combiner.predict_members(on_gpu).shape == (len(images),)
