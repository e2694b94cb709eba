"""nn.Modules only: the DCGAN (dcgan.py) and the VAEs (vae.py)."""

import copy
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(*modules: nn.Module):
    """BatchNorm and friends in eval mode inside the block, the previous mode restored after."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)


class Ema(nn.Module):
    """An exponential moving average of a module's weights, for sampling.

    The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so that the
    average does not drag the random initial weights along for thousands of steps.
    Buffers (BatchNorm's running statistics) are copied, not averaged. `updates` is a
    buffer, so a checkpoint of this module resumes the average exactly."""

    def __init__(self, module: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long, device=next(module.parameters()).device))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        t = self.updates.to(torch.float32)
        keep = torch.clamp((1 + t) / (10 + t), max=self.decay)  # a device tensor: no host sync
        for own, theirs in zip(self.module.parameters(), module.parameters()):
            # lerp_ with a tensor weight stays on the device (a CUDA graph can hold it);
            # _foreach_lerp_ would read the weight back to the host as a Python number.
            own.lerp_(theirs, 1 - keep)
        for own, theirs in zip(self.module.buffers(), module.buffers()):
            own.copy_(theirs)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
