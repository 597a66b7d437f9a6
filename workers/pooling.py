"""The CAE's 2x2 max pooling, with a faster forward for inference on a CPU.

PyTorch's CPU max-pooling kernel is slow for the few channels of the built-in CAE: on the 2-core EPYC,
one 2x2 pool of 130 x 6 x 28 x 28 activations (channels_last) took 1.30-1.70 ms, where two elementwise
maxima over views of the same tensor (rows, then columns) took 0.12 ms; the pools were about half of an
encoder's time (docs/performance.md, "2026-12-07, closing (2)"). A maximum is exact, so the result is the
same, bit for bit. The fast path runs only where nothing is differentiated (encoding, prediction,
serving, validation under `no_grad`): training keeps PyTorch's kernel, and so its gradients, which send
a tied window's gradient to one element where `torch.maximum` would split it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` (same arguments, no parameters, the same state dict) whose forward takes
    `pairwise_max_pool` where `pairwise_applies` says it may."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.MaxPool2d's own name)
        if pairwise_applies(self, input):
            return pairwise_max_pool(input)
        return super().forward(input)


def pairwise_applies(pool: nn.MaxPool2d, x: torch.Tensor) -> bool:
    """Whether `x` may take `pairwise_max_pool` under `pool`'s settings: a plain 2x2 window of stride 2
    over even sizes of a 4-D CPU tensor laid out contiguously or channels_last, with no gradient to
    compute. Anything else (a GPU, whose pooling kernels are fast; odd sizes, which pooling floors)
    keeps PyTorch's kernel."""
    plain = (_pair(pool.kernel_size) == (2, 2) and _pair(pool.stride) == (2, 2) and _pair(pool.padding) == (0, 0)
             and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices)
    if not (plain and x.dim() == 4 and x.device.type == "cpu" and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and not (torch.is_grad_enabled() and x.requires_grad)):
        return False
    try:
        return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # under torch.func.vmap (packed members), which cannot tell channels_last
        return False


def pairwise_max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling of stride 2 over an N x C x H x W tensor with even H and W, as the maximum of
    row pairs, then of column pairs, on views: the same values as `F.max_pool2d(x, 2)`, in x's layout."""
    n, c, h, w = x.shape
    if x.is_contiguous():
        rows = x.reshape(n, c, h // 2, 2, w)
        rows = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).reshape(n, c, h // 2, w // 2, 2)
        return torch.maximum(rows[..., 0], rows[..., 1])
    rows = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w * c)  # channels_last: N x H x W x C in memory
    rows = torch.maximum(rows[:, :, 0], rows[:, :, 1]).reshape(n, h // 2, w // 2, 2, c)
    return torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).permute(0, 3, 1, 2)
