"""The CAE's max pooling (`workers.pooling`): the fast inference path gives PyTorch's values bit for bit,
in the input's layout; training keeps PyTorch's kernel and its gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workers.models import ConvAutoencoder
from workers.pooling import MaxPool2d, pairwise_applies, pairwise_max_pool

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def layout(x: torch.Tensor) -> tuple[bool, bool]:
    return x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("memory_format", LAYOUTS)
@pytest.mark.parametrize("shape", [(7, 6, 28, 28), (3, 16, 14, 14), (2, 1, 8, 6), (4, 3, 2, 2)])
def test_pairwise_pooling_gives_pytorchs_values_in_the_inputs_layout(memory_format, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=memory_format)
    x[0, 0, 0, 0] = float("nan")   # NaN wins its window, as in PyTorch's kernel
    x[-1, -1, :2, :2] = 2.5        # a tied window
    x[-1, 0, -2:, -2:] = -0.0      # signed zeros tie too
    expected, pooled = F.max_pool2d(x, 2), pairwise_max_pool(x)
    assert torch.equal(expected.isnan(), pooled.isnan())
    assert torch.equal(expected.nan_to_num(7.0), pooled.nan_to_num(7.0)) and layout(pooled) == layout(expected)


def test_the_fast_path_is_taken_only_for_plain_2x2_pools_of_even_cpu_tensors_without_gradients():
    pool, x = MaxPool2d(2), torch.randn(2, 3, 8, 8)
    assert pairwise_applies(pool, x) and pairwise_applies(pool, x.contiguous(memory_format=torch.channels_last))
    assert not pairwise_applies(pool, torch.randn(2, 3, 7, 8))                     # odd sizes are floored
    assert not pairwise_applies(pool, x[:, :, :, ::2].expand(2, 3, 8, 4))          # neither layout
    assert not pairwise_applies(pool, torch.randn(3, 8, 8))                        # not 4-D
    assert not pairwise_applies(pool, torch.randn(2, 3, 8, 8, device="meta"))     # not a CPU tensor
    for other in (MaxPool2d(3), MaxPool2d(2, stride=1), MaxPool2d(2, padding=1), MaxPool2d(2, ceil_mode=True)):
        assert not pairwise_applies(other, x)
    with torch.no_grad():  # under vmap (packed members) channels_last cannot be asked about: PyTorch's kernel
        laid_out = x.contiguous(memory_format=torch.channels_last)
        pack = torch.func.vmap(MaxPool2d(2))(torch.stack([laid_out, laid_out]))
        assert torch.equal(pack, torch.stack([F.max_pool2d(laid_out, 2)] * 2))
    needs_grad = x.clone().requires_grad_()
    assert not pairwise_applies(pool, needs_grad)                                  # training: PyTorch's kernel
    with torch.no_grad():
        assert pairwise_applies(pool, needs_grad)


def test_the_cae_encodes_as_with_pytorchs_pooling_and_trains_with_its_gradients():
    torch.manual_seed(0)
    model = ConvAutoencoder((1, 28, 28))
    plain = ConvAutoencoder((1, 28, 28))
    plain.load_state_dict(model.state_dict())  # the same state dict: the pool has none
    for index, module in enumerate(plain.encoder):
        if isinstance(module, MaxPool2d):
            plain.encoder[index] = nn.MaxPool2d(2)
    x = torch.rand(16, 1, 28, 28)
    for memory_format in LAYOUTS:
        laid_out = x.contiguous(memory_format=memory_format)
        with torch.no_grad():
            fast = model.to(memory_format=memory_format).encode(laid_out)
            assert torch.equal(fast, plain.to(memory_format=memory_format).encode(laid_out))
    # training: PyTorch's pooling in the graph (its backward sends a tied window's gradient to one element)
    assert backward_nodes(model.encode(x)).count("MaxPool2DWithIndicesBackward0") == 2
    for net in (model, plain):
        net.zero_grad()
        F.mse_loss(net(x), x).backward()
    for (name, ours), (_, theirs) in zip(model.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad), name


def backward_nodes(output: torch.Tensor) -> list[str]:
    """The names of the autograd nodes behind `output`, each once."""
    seen, stack, names = set(), [output.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names
