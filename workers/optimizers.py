"""torch.optim's Adam and SGD, as written, without the wrappers that import the compiler.

`torch.optim.Optimizer` wraps `add_param_group`, `zero_grad`, `state_dict`, `load_state_dict`
and each `step` in guards that keep `torch.compile` from tracing them, and each guard imports
`torch._dynamo` on its first call: 0.9-1.3 s of CPU in a fresh process (the actor's start, on
the critical path of every run), for a compiler that never traces an optimizer here (a
`train.compile` run compiles the model's forward only). These classes call the same methods
unwrapped, so every update and every state dict is torch.optim's own; `step` keeps the guard's
one eager effect, running without autograd.
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping

import torch

_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _unguarded(optimizer_class: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of `optimizer_class` whose guarded methods are the functions they wrap."""
    plain_step = inspect.unwrap(optimizer_class.step)

    def step(self, closure=None):
        with torch.no_grad():  # what the step's guard sets, `differentiable` being False
            return plain_step(self, closure)

    methods = {name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in _GUARDED}
    return type(optimizer_class.__name__, (optimizer_class,), {**methods, "step": step,
                                                                "__module__": __name__,
                                                                "__doc__": optimizer_class.__doc__})


Adam = _unguarded(torch.optim.Adam)
SGD = _unguarded(torch.optim.SGD)

Classes = Mapping[str, Callable[..., torch.optim.Optimizer]]  # `TrainSettings.optimizer` -> its class
UNGUARDED: Classes = {"adam": Adam, "sgd": SGD}
TORCH_OPTIM: Classes = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}  # as a plain loop builds them (the bench's)
