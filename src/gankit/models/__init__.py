"""nn.Modules only: the DCGAN (dcgan.py) and the VAEs (vae.py)."""

from contextlib import contextmanager

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
