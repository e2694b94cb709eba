"""Spectral normalization (Miyato et al. 2018): every weight matrix W of D used as W / sigma(W),
with sigma(W) its largest singular value, so that each layer is 1-Lipschitz.

sigma is estimated by power iteration, one step per forward pass in training mode (the
paper's Algorithm 1): u and v, the leading singular vectors, are buffers that carry over
from step to step, so one iteration a step is enough once they have converged. In eval
mode the stored u and v are used as they are.

Why our own and not torch.nn.utils.parametrizations.spectral_norm: under autocast its
matrix-vector products may run in bf16 (they are on CUDA's low-precision list), and a
singular value estimated in bf16 is off in the third digit. Here the power iteration and
sigma are computed in fp32 whatever the autocast, and the result is cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

INIT_ITERATIONS = 15  # power iterations when a layer is wrapped, as PyTorch does: start converged


class SpectralNorm(nn.Module):
    """A parametrization: weight -> weight / sigma(weight), the weight seen as a matrix
    (out_features, everything else). `u` (out) and `v` (in) are fp32 buffers."""

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        w = weight.detach().float().flatten(1)
        self.register_buffer("u", F.normalize(torch.randn(w.shape[0], device=w.device), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(torch.randn(w.shape[1], device=w.device), dim=0, eps=eps))
        self._power_iteration(w, INIT_ITERATIONS)

    def restart(self, weight: torch.Tensor) -> None:
        """Converge u and v anew for a weight that was set from outside (a re-init)."""
        self._power_iteration(weight.detach().float().flatten(1), INIT_ITERATIONS)

    @torch.no_grad()
    def _power_iteration(self, w: torch.Tensor, iterations: int) -> None:
        for _ in range(iterations):
            # In place: the buffers are what a CUDA graph and a checkpoint hold.
            self.v.copy_(F.normalize(w.t() @ self.u.to(w.dtype), dim=0, eps=self.eps))
            self.u.copy_(F.normalize(w @ self.v.to(w.dtype), dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.to(torch.promote_types(weight.dtype, torch.float32)).flatten(1)  # fp32, or fp64
            if self.training:
                self._power_iteration(w, 1)
            # Clones: D runs more than once a step (reals, fakes), and the next pass's
            # in-place update of u and v must not change what this pass's backward reads.
            u, v = self.u.clone(), self.v.clone()
            sigma = torch.dot(u.to(w.dtype), w @ v.to(w.dtype))  # u^T W v: the gradient flows through W only
            return (weight.to(w.dtype) / sigma).to(weight.dtype)  # keeps the weight's memory layout


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalize every Conv2d, Linear and Embedding inside `module` (in place)
    and return it. BatchNorm layers and biases are left alone."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)) and not parametrize.is_parametrized(layer):
            parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
    return module
