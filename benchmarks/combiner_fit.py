"""Where a combiner's wall-clock goes: feature extraction vs fitting, for every kind and head.

Data: the package's embedded 5,000 MNIST digits (data.name=mnist-5k), stratified 3,000 train / 1,000 validation
(unused here) / 1,000 test. Members: 5 untrained LeNet-like conv encoders (784 features
each), so the concat head sees 3,920 columns. Untrained random conv features are enough for a
linear head to clear 0.95, which makes this a benchmark of the combiner, not of training.

Measured on 2 AMD EPYC cores (CPU-only torch 2.14, scikit-learn 1.9, quiet machine):
features 1.19 s for 4,000 images x 5 members (warm-up 0.07 s apart);
    kind       head      test acc   fit s  n_iter
    concat     logistic    0.9660    1.80      16
    soft-vote  logistic    0.9630    3.00      32
    hard-vote  logistic    0.9660    2.81      32
    concat     mlp         0.9600    3.18      24
    soft-vote  mlp         0.9580    5.22      40
    hard-vote  mlp         0.9590    5.77      40
Fit seconds are fit_combiner's: stacking, scaling and the heads. Under load from other jobs on
the same cores the seconds grew two- to sixfold; accuracies did not move.
Run: python benchmarks/combiner_fit.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from classifier import HEADS, KINDS
from classifier.combiner import fit_combiner
from classifier.features import member_features
from ensemble.data.sources import mnist_5k_arrays

MEMBERS = 5
TARGET_ACCURACY = 0.95  # concat + logistic must reach this; a reference run elsewhere measured 0.965


class LeNetEncoder(nn.Module):
    """The paper's member encoder: two (conv 5x5, ReLU, 2x2 max-pool) stages, 28x28 -> 16 x 7 x 7 = 784."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def load_splits():
    images, labels = mnist_5k_arrays()
    images = torch.as_tensor(images / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    rows = np.arange(len(labels))
    train, rest = train_test_split(rows, train_size=3000, stratify=labels, random_state=0)
    _validation, test = train_test_split(rest, train_size=1000, stratify=labels[rest], random_state=0)
    return (images[train], labels[train]), (images[test], labels[test])


def make_encoders() -> list[LeNetEncoder]:
    encoders = []
    for seed in range(MEMBERS):
        torch.manual_seed(seed)
        encoders.append(LeNetEncoder().eval())
    return encoders


def main() -> int:
    (train_x, train_y), (test_x, test_y) = load_splits()
    encoders = make_encoders()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {MEMBERS} members; "
          f"{len(train_y)} train / {len(test_y)} test images")

    # One-off costs (thread pools, allocator) land on the first forward pass: time them apart.
    started = time.perf_counter()
    member_features(encoders, train_x[:100])
    warmup_seconds = time.perf_counter() - started

    started = time.perf_counter()
    train_features = member_features(encoders, train_x)
    test_features = member_features(encoders, test_x)
    feature_seconds = time.perf_counter() - started
    print(f"features: {feature_seconds:.2f} s for {len(train_y) + len(test_y)} images x {MEMBERS} members "
          f"(warm-up {warmup_seconds:.2f} s); {sum(f.shape[1] for f in train_features)} stacked columns\n")

    print(f"{'kind':<10} {'head':<9} {'test acc':>8} {'fit s':>7} {'n_iter':>6}")
    accuracies = {}
    for head in HEADS:
        for kind in KINDS:
            combiner, fit_seconds = fit_combiner(kind, head, train_features, train_y)
            accuracies[kind, head] = float(np.mean(combiner.predict_members(test_features) == test_y))
            print(f"{kind:<10} {head:<9} {accuracies[kind, head]:>8.4f} {fit_seconds:>7.2f} {combiner.n_iter_:>6}",
                  flush=True)

    reached = accuracies["concat", "logistic"] >= TARGET_ACCURACY
    print(f"\nconcat + logistic {accuracies['concat', 'logistic']:.4f} "
          f"{'>=' if reached else '<'} target {TARGET_ACCURACY}")
    return 0 if reached else 1


if __name__ == "__main__":
    raise SystemExit(main())
