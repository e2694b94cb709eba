"""The tutorial's DCGAN: a generator and a discriminator built from one block each.

Generator block:      ConvTranspose2d(k4, s2, p1) + BatchNorm2d + ReLU   (doubles H, W)
Discriminator block:  Conv2d(k4, s2, p1)          + BatchNorm2d + LeakyReLU(0.2)  (halves H, W)

z (nz) is reshaped to an nz-channel 1x1 image. Widths double at every halving of the
resolution, so at 32x32 with width 64 the generator runs 256 -> 128 -> 64 channels
(DCGAN paper, Fig. 1, scaled down). No pooling, no fully connected layers.

Two switches reproduce the two readings of the recipe (see gankit.training.gan.RECIPES):
- ``edge="4x4"`` (DCGAN paper): G's first layer maps 1x1 -> 4x4 with a stride-1 k4
  convolution, D's last layer maps 4x4 -> 1x1 the same way.
  ``edge="1x1"`` (tutorial, read literally): every layer is k4 s2 p1 from 1x1 up,
  1 -> 2 -> 4 -> ... and back down to 1.
- ``d_input_bn``: BatchNorm on D's first block. The paper leaves it out (Sec. 3:
  "not applying batchnorm to the generator output layer and the discriminator input
  layer"); the tutorial puts it in every block.

``norm=False`` takes BatchNorm out of D's other blocks too: what spectral normalization
(models/spectral.py) replaces it with in SNGAN's D, where a layer's scale is held by SN,
and what a D that must judge each image on its own (R1, packing) may want.

Conditional DCGAN (``num_classes > 0``, `gankit train --conditional`): G concatenates a
learned class embedding (nz long, unit length at the start) to z; D is a projection discriminator (Miyato & Koyama
2018). With ``num_classes=0`` (the default) neither module creates anything extra, so
unconditional models, their initial weights and their checkpoints are as before.
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
    ``num_classes > 0``: conditional; ``forward(z, labels)`` with labels int64 (N,) in
    [0, num_classes): the label's embedding (nz long) joins z, so the first layer sees
    2 nz input channels.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, nz: int = 100,
                 width: int = 64, edge: str = "4x4", tanh: bool = True, num_classes: int = 0):
        super().__init__()
        check_image_size(image_size)
        self.nz = nz
        self.num_classes = num_classes
        maps = _widths(image_size, width, edge)
        layers: list[nn.Module] = []
        # First layer: 1x1 -> 4x4 (stride 1, padding 0) or 1x1 -> 2x2 (k4 s2 p1).
        first_ch = maps[0][1]
        z_ch = 2 * nz if num_classes > 0 else nz  # z, and the label's embedding beside it
        if edge == "4x4":
            layers.append(nn.ConvTranspose2d(z_ch, first_ch, 4, 1, 0, bias=False))
        else:
            layers.append(nn.ConvTranspose2d(z_ch, first_ch, 4, 2, 1, bias=False))
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
        if num_classes > 0:
            # Made after every layer, and only here: an unconditional G draws the same
            # initial weights, in the same order, as before conditioning existed.
            self.embed = nn.Embedding(num_classes, nz)
            # Each class vector starts at unit length, the length of the one-hot label of
            # the first conditional GANs (Mirza & Osindero 2014), a tenth of z's (sqrt(nz)).
            # PyTorch's N(0, 1) init made it as long as z: G then drew one digit per class
            # whatever z, from the first few hundred steps, even against a D that ignored
            # the labels (docs/results.md, "Conditional DCGAN"): ten fixed codes, each shared
            # by a tenth of the batch, carry as much energy as z, and G learns from them
            # first. Started small, the label's weights grow as fast as D asks for the class.
            nn.init.normal_(self.embed.weight, 0.0, nz ** -0.5)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        n = z.shape[0]
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator")
            return self.net(z.view(n, self.nz, 1, 1))
        if labels is None:
            raise ValueError("a conditional generator needs labels: forward(z, labels)")
        z = torch.cat([z.reshape(n, self.nz), self.embed(labels).to(z.dtype)], dim=1)  # (N, 2 nz)
        return self.net(z.view(n, 2 * self.nz, 1, 1))


class Discriminator(nn.Module):
    """image (N, C, S, S) in [-1, 1] -> logits (N,). No sigmoid: the loss is BCEWithLogits.

    ``out_dim > 1`` gives (N, out_dim) with a bias instead: the VAE's encoder (mu, logvar).
    ``num_classes > 0``: a projection discriminator (Miyato & Koyama 2018),
    ``forward(x, labels)``: logit = last_layer(h) + <embed(y), sum over space of h>, with h
    the last hidden feature map (C channels) and embed(y) a learned C-vector per class.

    Why projection and not the label as C one-hot input channels: such channels are
    constant maps that D's first layer convolves for nothing but a per-class bias, and
    the label reaches the logit only through the whole stack. The optimal D's logit is
    log q(x)/p(x) = log q(y|x)/p(y|x) + log q(x)/p(x) (data q, model p); with log-linear
    class posteriors on D's features the first term is exactly an inner product of a class
    vector with those features, so the projection is the form the conditional log-ratio
    takes. It is what SNGAN's and BigGAN's conditional discriminators use.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, width: int = 64,
                 edge: str = "4x4", d_input_bn: bool = False, norm: bool = True, out_dim: int = 1,
                 num_classes: int = 0):
        super().__init__()
        check_image_size(image_size)
        maps = list(reversed(_widths(image_size, width, edge)))  # largest resolution first
        layers: list[nn.Module] = [nn.Conv2d(channels, maps[0][1], 4, 2, 1, bias=False)]
        if d_input_bn:
            layers.append(nn.BatchNorm2d(maps[0][1]))
        layers.append(nn.LeakyReLU(0.2, inplace=True))  # (N, width, S/2, S/2)
        for (_, c_in), (_, c_out) in zip(maps, maps[1:]):
            # Without BatchNorm the conv has a bias of its own, as SNGAN's layers do.
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm))  # halves H, W
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        # Last layer: 4x4 -> 1x1 (stride 1) or 2x2 -> 1x1 (k4 s2 p1); one logit per image.
        bias = out_dim > 1
        if edge == "4x4":
            layers.append(nn.Conv2d(maps[-1][1], out_dim, 4, 1, 0, bias=bias))
        else:
            layers.append(nn.Conv2d(maps[-1][1], out_dim, 4, 2, 1, bias=bias))
        self.net = nn.Sequential(*layers)  # one Sequential, as before: old checkpoints' keys load
        self.out_dim = out_dim
        self.num_classes = num_classes
        if num_classes > 0:
            if out_dim != 1:
                raise ValueError("a projection discriminator gives one logit (out_dim=1)")
            # After every layer, only here: an unconditional D draws its weights as before.
            # N(0, 0.02), the DCGAN init of the last layer, whose role it shares: both are
            # linear maps of h to the logit, so the two terms start on one scale.
            self.embed = nn.Embedding(num_classes, maps[-1][1])
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("labels given to an unconditional discriminator")
            out = self.net(x).flatten(1)  # (N, out_dim, 1, 1) -> (N, out_dim)
            return out.view(-1) if self.out_dim == 1 else out
        if labels is None:
            raise ValueError("a conditional discriminator needs labels: forward(x, labels)")
        h = self.net[:-1](x)                                   # (N, C, r, r): the last hidden map
        out = self.net[-1](h).flatten(1).view(-1)              # (N,)
        # In fp32 also under bf16 autocast: a sum over C x r x r terms is where bf16 loses digits.
        projection = (self.embed(labels).float() * h.float().sum(dim=(2, 3))).sum(dim=1)  # (N,)
        return out.float() + projection


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper, Sec. 4: weights from N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:  # a conditional BatchNorm's scale is its own
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
