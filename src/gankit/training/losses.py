"""GAN losses: name -> (D loss, G loss), each a function of D's logits.

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


LOSSES: dict[str, Loss] = {
    "bce": Loss(bce_d, bce_g),  # the tutorial's BCEWithLogitsLoss, non-saturating for G
}
DEFAULT_LOSS = "bce"
