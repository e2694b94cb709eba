"""The tutorial's DCGAN: a generator and a discriminator built from one block each.

Generator block:      ConvTranspose2d(k4, s2, p1) + BatchNorm2d + ReLU   (doubles H, W)
Discriminator block:  Conv2d(k4, s2, p1)          + BatchNorm2d + LeakyReLU(0.2)  (halves H, W)

z (nz) is reshaped to an nz-channel 1x1 image. Widths double at every halving of the
resolution, so at 32x32 with width 64 the generator runs 256 -> 128 -> 64 channels
(DCGAN paper, Fig. 1, scaled down). No pooling, no fully connected layers.

Two switches reproduce the two readings of the recipe (see gankit.config.RECIPES):
- ``edge="4x4"`` (DCGAN paper): G's first layer maps 1x1 -> 4x4 with a stride-1 k4
  convolution, D's last layer maps 4x4 -> 1x1 the same way.
  ``edge="1x1"`` (tutorial, read literally): every layer is k4 s2 p1 from 1x1 up,
  1 -> 2 -> 4 -> ... and back down to 1.
- ``d_input_bn``: BatchNorm on D's first block. The paper leaves it out (Sec. 3:
  "not applying batchnorm to the generator output layer and the discriminator input
  layer"); the tutorial puts it in every block.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IMAGE_SIZES = (16, 32, 64, 128)


def check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(
            f"image size {image_size} is not supported; use one of {', '.join(map(str, IMAGE_SIZES))}"
        )


def _widths(image_size: int, width: int, edge: str) -> list[tuple[int, int]]:
    """(resolution, channels) of every hidden feature map, from the smallest up.

    The map at resolution r has width * image_size / (2 r) channels: the map just
    below the image has `width` channels, and each halving doubles it.
    """
    smallest = 4 if edge == "4x4" else 2
    sizes = [smallest * 2**i for i in range(int(math.log2(image_size // smallest)))]
    return [(r, width * image_size // (2 * r)) for r in sizes]


class Generator(nn.Module):
    """z (N, nz) or (N, nz, 1, 1) -> image (N, C, S, S) in [-1, 1].

    ``tanh=False`` gives raw per-pixel logits instead (with a bias): the VAE's decoder.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, nz: int = 100,
                 width: int = 64, edge: str = "4x4", tanh: bool = True):
        super().__init__()
        check_image_size(image_size)
        self.nz = nz
        maps = _widths(image_size, width, edge)
        layers: list[nn.Module] = []
        # First layer: 1x1 -> 4x4 (stride 1, padding 0) or 1x1 -> 2x2 (k4 s2 p1).
        first_ch = maps[0][1]
        if edge == "4x4":
            layers.append(nn.ConvTranspose2d(nz, first_ch, 4, 1, 0, bias=False))
        else:
            layers.append(nn.ConvTranspose2d(nz, first_ch, 4, 2, 1, bias=False))
        layers += [nn.BatchNorm2d(first_ch), nn.ReLU(inplace=True)]  # (N, first_ch, r0, r0)
        for (_, c_in), (_, c_out) in zip(maps, maps[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),  # doubles H, W
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        # Output layer: no BatchNorm (paper, Sec. 3), tanh to land in [-1, 1].
        layers.append(nn.ConvTranspose2d(maps[-1][1], channels, 4, 2, 1, bias=not tanh))
        if tanh:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """image (N, C, S, S) in [-1, 1] -> logits (N,). No sigmoid: the loss is BCEWithLogits.

    ``out_dim > 1`` gives (N, out_dim) with a bias instead: the VAE's encoder (mu, logvar).
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, width: int = 64,
                 edge: str = "4x4", d_input_bn: bool = False, out_dim: int = 1):
        super().__init__()
        check_image_size(image_size)
        maps = list(reversed(_widths(image_size, width, edge)))  # largest resolution first
        layers: list[nn.Module] = [nn.Conv2d(channels, maps[0][1], 4, 2, 1, bias=False)]
        if d_input_bn:
            layers.append(nn.BatchNorm2d(maps[0][1]))
        layers.append(nn.LeakyReLU(0.2, inplace=True))  # (N, width, S/2, S/2)
        for (_, c_in), (_, c_out) in zip(maps, maps[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),  # halves H, W
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        # Last layer: 4x4 -> 1x1 (stride 1) or 2x2 -> 1x1 (k4 s2 p1); one logit per image.
        bias = out_dim > 1
        if edge == "4x4":
            layers.append(nn.Conv2d(maps[-1][1], out_dim, 4, 1, 0, bias=bias))
        else:
            layers.append(nn.Conv2d(maps[-1][1], out_dim, 4, 2, 1, bias=bias))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x).flatten(1)  # (N, out_dim, 1, 1) -> (N, out_dim)
        return out.view(-1) if self.out_dim == 1 else out


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper, Sec. 4: weights from N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
