"""Your own autoencoder on your own data: `ensemble.run(cfg, autoencoder=..., dataset=(images, labels))`.

    python examples/custom_autoencoder.py            # 5 members on all 1,797 digits (a minute or two on 2 cores)
    python examples/custom_autoencoder.py --tiny     # 2 members, 1 epoch, 300 images: a smoke run

The images here are scikit-learn's 8 x 8 digits, standing in for any `N x C x H x W` (or `N x H x W`)
array or tensor of yours; the labels may be any sortable values. The run directory lands in ./runs/.
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import ensemble


class SmallAE(nn.Module):
    """A convolutional autoencoder for 1 x 8 x 8 images. `forward` returns the reconstruction and
    `encode` the features the combiner is fitted on; that is all `ensemble.run` asks of a model.
    `width` scales the channels, so the same class could also serve as a wider monolithic model."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        channels = max(1, round(8 * width))
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))  # 8x8 -> 4x4
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels, 1, 3, padding=1))

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2 members, 1 epoch, 300 images (a smoke run)")
    tiny = parser.parse_args().tiny

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # N x 1 x 8 x 8, pixels 0..16
    labels = torch.tensor(digits.target)
    if tiny:
        images, labels = images[:300], labels[:300]

    cfg = ensemble.EnsembleConfig(members=2 if tiny else 5)  # the run is named after the time it starts
    if tiny:
        cfg = cfg.with_overrides(["train.epochs=1", "baseline.max_epochs=1", "model.channels=[4, 8]"])
    result = ensemble.run(cfg, autoencoder=SmallAE, dataset=(images, labels))

    report = result.report
    print(f"ensemble test accuracy {report.ensemble.test_accuracy:.3f} in {report.ensemble.wall_seconds:.1f} s; "
          f"baseline {report.baseline.test_accuracy:.3f} in {report.baseline.wall_seconds:.1f} s")
    predicted = result.predict(images[:10])  # images in the dataset's own pixel scale, labels as given
    print("first ten:", predicted.tolist(), "true:", labels[:10].tolist())

    # A finished run loads back without retraining. SmallAE lives in this script (`__main__`), which
    # another process cannot import, so it is passed in; a class in an importable module is found by name.
    again = ensemble.load(result.run_dir, autoencoder=SmallAE)
    assert (again.predict(images[:10]) == predicted).all()
    print("run directory:", result.run_dir)


if __name__ == "__main__":
    main()
