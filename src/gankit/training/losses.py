"""GAN losses: name -> (D loss, G loss), each a function of D's logits; and the R1 penalty.

`d_loss(real_logits, fake_logits)` is what D minimizes; `g_loss(fake_logits)` what G
minimizes on fresh fakes. Both return a 0-d tensor and, like the step that calls them,
never sync with the host (a CUDA graph holds them). A new loss is two functions and
one line in LOSSES; `--loss NAME` picks it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class Loss(NamedTuple):
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]


def bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D maximizes log D(x) + log(1 - D(G(z))) (Goodfellow et al. 2014, Eq. 1): binary
    cross-entropy with target 1 for real images and 0 for fakes, as the tutorial writes it."""
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def bce_g(fake: torch.Tensor) -> torch.Tensor:
    """G makes D call its fakes real (target 1): the non-saturating loss of Goodfellow et
    al. 2014, Sec. 3, which gives G strong gradients early, when D rejects its fakes easily."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's hinge loss (Lim & Ye 2017; SNGAN, BigGAN): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))].
    A real image with logit above 1, or a fake below -1, costs nothing and sends no gradient:
    D stops pushing on what it already gets right and spends its capacity on the margin."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """G's side of the hinge loss: raise D's logit on its fakes, -E[D(G(z))] (unbounded)."""
    return -fake.mean()


def least_squares_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least squares GAN (Mao et al. 2017, Eq. 9 with a=0, b=c=1): D regresses its logit to 1
    on reals and 0 on fakes, (1/2) E[(D(x) - 1)^2] + (1/2) E[D(G(z))^2]. Unlike the sigmoid's
    loss, a fake far on the right side of the boundary still gets a gradient."""
    return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())


def least_squares_g(fake: torch.Tensor) -> torch.Tensor:
    """G regresses D's logit on its fakes to 1: (1/2) E[(D(G(z)) - 1)^2]."""
    return 0.5 * (fake - 1.0).square().mean()


LOSSES: dict[str, Loss] = {
    "bce": Loss(bce_d, bce_g),                       # the tutorial's BCEWithLogitsLoss, non-saturating for G
    "hinge": Loss(hinge_d, hinge_g),                 # SNGAN, BigGAN, StyleGAN-XL's projected D
    "lsgan": Loss(least_squares_d, least_squares_g),  # least squares
}
DEFAULT_LOSS = "bce"


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real images (Mescheder et al. 2018, Eq. 9, without the gamma/2):
    penalizing D's slope on the data keeps it from growing sharp around the reals, which is
    what lets simultaneous gradient descent converge. `real` must have requires_grad and
    `real_logits` be D's logits of exactly those images. create_graph: the penalty's own
    gradient reaches D's weights (a double backward, which a CUDA graph can hold)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()
