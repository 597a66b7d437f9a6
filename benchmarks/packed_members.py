"""Seconds per epoch of k members in one actor: one after another, or packed as one computation.

Three ways to train k default members (LeNet-like CAE, channels 6-16, 5x5 kernels, batch 100, Adam)
for one epoch (train + validation), each member on its own bootstrap sample:
  one after another   `train_one_epoch` + `validation_loss` per member, as an actor trains them today;
  torch.func          `workers.packed.packed_epoch`: stacked parameters, functional_call + vmap
                      (what `resources.members_per_actor > 1` runs);
  grouped convs       the same pack with a hand-written forward pass: every member's channels side by
                      side in one (batch, k x channels, H, W) tensor, each convolution one grouped call,
                      no reshaping between layers (defined here only, to measure it).
Every repeat runs all ways back to back and the table shows medians, so a shared machine's load
moves them alike; the first epoch of each way is warm-up and not counted.

Measured on an Intel Xeon (KVM, 2 cores shared with other jobs, load average 1.6-2.0), no GPU,
torch 2.14.1, 1 thread, 2,400 training and 600 validation images per member, 3 repeats:
    members  one after another  torch.func  grouped convs   packed / one after another
    1        0.89 s             0.96 s      0.89 s          1.07x (torch.func), 0.99x (grouped)
    5        4.41 s             10.19 s     9.55 s          2.31x (torch.func), 2.17x (grouped)
Packing is slower on this CPU: a grouped convolution with 1 to 16 channels per group is a slow
kernel, and vmap turns every batched convolution into one; the hand-written grouped forward pass,
which skips vmap's reshaping, gains 6%, within this machine's noise. So torch.func stays the packed
implementation (it needs no per-architecture code) and `auto_members_per_actor("cpu")` is 1.
With 2 threads on these 2 busy cores every way swung 3- to 7-fold between repeats (OpenMP threads
waiting on a descheduled peer), so the default is 1 thread, as in an actor with 1 CPU.
Run it on a GPU (--device cuda) to decide `auto_members_per_actor("cuda")`.
Run: python benchmarks/packed_members.py [--device cuda] [--members 1 5] [--train 2400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ensemble.bench.machine import machine_header
from ensemble.data.sources import mnist_5k_arrays
from workers.models import CAEFactory, ConvAutoencoder
from workers.packed import Pack, StackedModel, packed_epoch
from workers.sampling import bootstrap_indices
from workers.stopping import EagerStop
from workers.training import MemberRun, TrainSettings, train_one_epoch, validation_loss

SETTINGS = TrainSettings(batch_size=100, lr=1e-3)


def grouped_losses(stack: StackedModel, batches: torch.Tensor, shared_batch: bool = False) -> torch.Tensor:
    """`StackedModel.losses` for the CAE family without vmap: member i's channels are group i of
    every convolution; pooling, upsampling and activations act per channel, so they run as they are."""
    if not isinstance(stack.template, ConvAutoencoder):
        raise TypeError("the grouped forward pass is written for ConvAutoencoder only")
    members = len(stack.parameters[0])
    targets = batches.unsqueeze(1).expand(-1, members, -1, -1, -1) if shared_batch else batches.transpose(0, 1)
    hidden = targets.flatten(1, 2)  # (batch, members x channels, H, W): one member after the other
    parameters = dict(zip(stack.names, stack.parameters, strict=True))
    for name, module in stack.template.named_modules():
        if isinstance(module, nn.Conv2d):
            weight, bias = parameters[f"{name}.weight"], parameters[f"{name}.bias"]
            hidden = F.conv2d(hidden, weight.flatten(0, 1), bias.flatten(), padding=module.padding, groups=members)
        elif not list(module.children()):  # a leaf after the convolutions it follows: modules run in order
            hidden = module(hidden)
    reconstruction = hidden.unflatten(1, (members, -1)).float()
    return (reconstruction - targets).pow(2).flatten(2).sum(2).mean(0)


def start_members(members: int, train_x: torch.Tensor, val_x: torch.Tensor, directory: Path) -> list[MemberRun]:
    runs = []
    for seed in range(members):
        torch.manual_seed(seed)
        model = CAEFactory((1, 28, 28))().to(train_x.device)
        own = train_x[bootstrap_indices(len(train_x), seed).to(train_x.device)]
        runs.append(MemberRun.start(model, own, val_x, replace(SETTINGS, seed=seed),
                                    EagerStop(rule="none"), directory / f"member_{seed}"))
    return runs


def one_after_another(runs: list[MemberRun]) -> None:
    for run in runs:
        train_one_epoch(run.model, run.optimizer, run.train_x, run.settings, run.generator)
        validation_loss(run.model, run.val_x, run.settings.batch_size)


def grouped_epoch(runs: list[MemberRun]) -> None:
    pack = Pack(runs)
    pack.model.losses = lambda batches, shared_batch=False: grouped_losses(pack.model, batches, shared_batch)
    pack.train_epoch()
    pack.validation_losses(runs[0].val_x)
    pack.write_back()


WAYS: dict[str, Callable[[list[MemberRun]], object]] = {
    "one after another": one_after_another, "torch.func": packed_epoch, "grouped convs": grouped_epoch}


def seconds(way: Callable[[list[MemberRun]], object], runs: list[MemberRun]) -> float:
    started = time.perf_counter()
    way(runs)
    if runs[0].train_x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(members: int, train_x: torch.Tensor, val_x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per epoch of each way, after one warm-up epoch each."""
    with tempfile.TemporaryDirectory() as directory:
        runs = {name: start_members(members, train_x, val_x, Path(directory) / name.replace(" ", "_"))
                for name in WAYS}
        for name, way in WAYS.items():
            seconds(way, runs[name])  # warm-up: vmap's tracing, kernel choice, lazy imports
        timed: dict[str, list[float]] = {name: [] for name in WAYS}
        for _ in range(repeats):
            for name, way in WAYS.items():
                timed[name].append(seconds(way, runs[name]))
    return {name: statistics.median(values) for name, values in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--train", type=int, default=2400, help="training images per member")
    parser.add_argument("--val", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 as in a member actor with the default resources.cpus_per_member")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.tensor(mnist_5k_arrays()[0] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28).to(args.device)
    train_x, val_x = images[:args.train], images[args.train:args.train + args.val]
    print(machine_header())
    print(f"{args.train} training and {args.val} validation images per member on {args.device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats: median seconds per epoch")
    print(f"{'members':>7}  " + "  ".join(f"{name:>17}" for name in WAYS) + "  packed / one after another")
    for members in args.members:
        figures = measure(members, train_x, val_x, args.repeats)
        ratios = ", ".join(f"{figures[name] / figures['one after another']:.2f}x ({name})" for name in list(WAYS)[1:])
        print(f"{members:>7}  " + "  ".join(f"{figures[name]:>15.2f} s" for name in WAYS) + f"  {ratios}", flush=True)


if __name__ == "__main__":
    main()
