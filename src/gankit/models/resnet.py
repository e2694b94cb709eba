"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018, "Spectral Normalization
for Generative Adversarial Networks", appendix B, Table 4: the CIFAR-10 ResNet).

Generator:      Linear(nz -> 4*4*ch_g), then one up-block per doubling from 4x4 to the
                image (log2(S) - 2 of them), then BN, ReLU, conv3x3 -> C, tanh.
    up-block:   BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3;  shortcut: x2 and conv1x1.
Discriminator:  an optimized first block (S -> S/2), down-blocks until 8x8, two blocks
                that keep 8x8, then ReLU, global sum pooling, Linear(ch_d -> 1).
    first:      conv3x3, ReLU, conv3x3, avgpool2;           shortcut: avgpool2 and conv1x1.
    down-block: ReLU, conv3x3, ReLU, conv3x3, avgpool2;     shortcut: conv1x1 and avgpool2.
    plain:      ReLU, conv3x3, ReLU, conv3x3;               shortcut: identity.

At 32x32 this is Table 4 exactly (3 up-blocks; first, 1 down, 2 plain); 64x64 adds one
block to each network, 16x16 takes one away, 128x128 adds two. The widths stay constant
through each network, as in SNGAN's CIFAR nets: ch_g = 4 width in G and ch_d = 2 width in D,
so width 64 gives the paper's 256 and 128.

D has no BatchNorm: SNGAN's D is regularized by spectral normalization alone, which the
caller applies from outside (`gankit.models.spectral.spectral_norm`, on every Conv2d, Linear
and Embedding). Neither constructor initializes anything beyond PyTorch's defaults (and
conditional BN's gamma 1, beta 0, which define the layer): the caller applies an init,
`sngan_init` for the paper's.

Conditional (``num_classes > 0``): every BatchNorm in G's blocks is a conditional BatchNorm,
whose gamma and beta are learned per class (SNGAN's and BigGAN's conditional G); D is a
projection discriminator (Miyato & Koyama 2018). With ``num_classes=0`` neither module
creates anything for labels.

The constructors and forward methods take the keywords of gankit.models.dcgan's Generator
and Discriminator, so either pair can stand in for the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gankit.models.spectral import SpectralNorm

RESNET_SIZES = (16, 32, 64, 128)
BOTTOM = 4       # G's first feature map is 4x4 (Table 4: "dense, 4 x 4 x 256")
D_BOTTOM = 8     # D downsamples to 8x8, then runs its two plain blocks there
PLAIN_BLOCKS = 2


def check_resnet_size(image_size: int) -> None:
    if image_size not in RESNET_SIZES:
        raise ValueError(f"image size {image_size} is not supported by the resnet architecture; "
                         f"use one of {', '.join(map(str, RESNET_SIZES))}")


def _widths(width: int) -> tuple[int, int]:
    """(ch_g, ch_d): the channels of every block of G and of D.

    Table 4 keeps the width constant through each network, 256 in G and 128 in D, so
    one number each, 4 width and 2 width, is the whole plan (width 64: the paper's).
    """
    return 4 * width, 2 * width


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without its own affine, then gamma[y] x + beta[y] with gamma and beta
    looked up per class (de Vries et al. 2017; SNGAN's and BigGAN's conditional G).

    Why: the label reaches every block's statistics, not only the input; a class moves the
    scale and shift of each feature map. gamma starts at 1 and beta at 0 so that every class
    starts as plain BatchNorm.
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        self.reset_affine()

    def reset_affine(self) -> None:
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        gamma = self.gamma(labels).to(h.dtype)[:, :, None, None]  # (N, C, 1, 1)
        beta = self.beta(labels).to(h.dtype)[:, :, None, None]
        return gamma * h + beta


def _norm(num_features: int, num_classes: int) -> nn.Module:
    return ConditionalBatchNorm2d(num_features, num_classes) if num_classes > 0 else nn.BatchNorm2d(num_features)


def _apply_norm(norm: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return norm(x, labels) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


class UpBlock(nn.Module):
    """G's residual block (Table 4, "ResBlock up"): doubles H and W.

    The shortcut runs its 1x1 conv before the nearest upsampling: a pointwise conv commutes
    with repeating pixels, so it is the paper's upsample-then-conv1x1, on a quarter of the pixels.
    """

    def __init__(self, c_in: int, c_out: int, num_classes: int = 0):
        super().__init__()
        self.bn1 = _norm(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2 = _norm(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(_apply_norm(self.bn1, x, labels))              # (N, 256, r, r) at width 64
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))  # (N, 256, 2r, 2r)
        h = self.conv2(F.relu(_apply_norm(self.bn2, h, labels)))  # (N, 256, 2r, 2r)
        skip = F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")  # (N, 256, 2r, 2r)
        return h + skip


class DownBlock(nn.Module):
    """D's residual block (Table 4, "ResBlock down" and "ResBlock"): no BatchNorm.

    ``first``: SNGAN's optimized first block, which skips the leading ReLU (the input is an
    image, not features). ``down=False``: a plain block that keeps H and W; with as many
    channels out as in, its shortcut is the identity. Otherwise the shortcut is a 1x1 conv
    and a 2x2 average pool; they commute (both linear, one per pixel, one per channel), so
    the pool runs first, on a quarter of the pixels: the paper's function, cheaper.
    """

    def __init__(self, c_in: int, c_out: int, *, down: bool = True, first: bool = False):
        super().__init__()
        self.first = first
        self.down = down
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0) if down or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # not in place: the shortcut reads x
        h = self.conv2(F.relu(self.conv1(h)))                    # (N, 128, r, r) at width 64
        skip = x
        if self.down:
            h = F.avg_pool2d(h, 2)                               # (N, 128, r/2, r/2)
            skip = F.avg_pool2d(skip, 2)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return h + skip


class ResGenerator(nn.Module):
    """z (N, nz) or (N, nz, 1, 1) -> image (N, C, S, S) in [-1, 1] (SNGAN, Table 4 left).

    ``num_classes > 0``: conditional, ``forward(z, labels)`` with labels int64 (N,) in
    [0, num_classes): the label enters through the conditional BatchNorms of every block,
    not through z (as in SNGAN's conditional G). The last BatchNorm, before the output
    conv, is unconditional, as in SNGAN's code.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, nz: int = 100,
                 width: int = 64, num_classes: int = 0):
        super().__init__()
        check_resnet_size(image_size)
        self.nz = nz
        self.num_classes = num_classes
        ch, _ = _widths(width)
        self.ch = ch
        self.linear = nn.Linear(nz, BOTTOM * BOTTOM * ch)                    # (N, 256 * 4 * 4)
        ups = int(math.log2(image_size // BOTTOM))                           # 32x32: 3
        # 32x32, width 64: (N, 256, 4, 4) -> (N, 256, 8, 8) -> (N, 256, 16, 16) -> (N, 256, 32, 32)
        self.blocks = nn.ModuleList(UpBlock(ch, ch, num_classes) for _ in range(ups))
        self.bn = nn.BatchNorm2d(ch)                                         # (N, 256, 32, 32)
        self.out = nn.Conv2d(ch, channels, 3, 1, 1)                          # (N, C, 32, 32)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes == 0 and labels is not None:
            raise ValueError("labels given to an unconditional generator")
        if self.num_classes > 0 and labels is None:
            raise ValueError("a conditional generator needs labels: forward(z, labels)")
        n = z.shape[0]
        h = self.linear(z.reshape(n, self.nz)).view(n, self.ch, BOTTOM, BOTTOM)  # (N, 256, 4, 4)
        for block in self.blocks:
            h = block(h, labels)                                             # doubles H, W
        h = self.out(F.relu(self.bn(h)))                                     # (N, C, 32, 32)
        return torch.tanh(h)


class ResDiscriminator(nn.Module):
    """image (N, C, S, S) -> logits (N,), fp32 (SNGAN, Table 4 right). No sigmoid: the loss
    takes logits. C may be a multiple of the image's channels (PacGAN packs images).

    ``num_classes > 0``: a projection discriminator (Miyato & Koyama 2018),
    ``forward(x, labels)``: logit = linear(h) + <embed(y), h>, h the sum-pooled features
    (N, ch_d). See gankit.models.dcgan.Discriminator for why projection.

    Why sum pooling and not mean: SNGAN's choice; with spectral norm on the last Linear a
    mean would shrink the logit's range by the 64 pixels of the 8x8 map.
    The pooling, the Linear and the projection run in fp32 also under autocast: a sum over
    64 x ch_d terms is where bf16 loses digits, and they cost nothing next to the convs.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 1, width: int = 64, num_classes: int = 0):
        super().__init__()
        check_resnet_size(image_size)
        self.num_classes = num_classes
        _, ch = _widths(width)
        downs = int(math.log2(image_size // D_BOTTOM)) - 1                   # after the first: 32x32: 1
        blocks = [DownBlock(channels, ch, first=True)]                       # (N, 128, 16, 16)
        blocks += [DownBlock(ch, ch) for _ in range(downs)]                  # (N, 128, 8, 8)
        blocks += [DownBlock(ch, ch, down=False) for _ in range(PLAIN_BLOCKS)]  # (N, 128, 8, 8)
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(ch, 1)                                       # (N, 1)
        if num_classes > 0:
            self.embed = nn.Embedding(num_classes, ch)                       # (num_classes, 128)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes == 0 and labels is not None:
            raise ValueError("labels given to an unconditional discriminator")
        if self.num_classes > 0 and labels is None:
            raise ValueError("a conditional discriminator needs labels: forward(x, labels)")
        h = F.relu(self.blocks(x))                                           # (N, 128, 8, 8)
        with torch.autocast(x.device.type, enabled=False):
            h = h.float().sum(dim=(2, 3))                                    # (N, 128): global sum pooling
            out = self.linear(h).view(-1)                                    # (N,)
            if self.num_classes > 0:
                out = out + (self.embed(labels).float() * h).sum(dim=1)      # (N,): <embed(y), h>
        return out


def sngan_init(module: nn.Module) -> None:
    """SNGAN's init (the authors' code): Xavier-uniform weights with gain sqrt(2) for the 3x3
    convs inside the residual paths, whose inputs pass a ReLU, and gain 1 for the shortcuts,
    G's first Linear, the output layers and the projection embedding; biases 0; conditional
    BatchNorm's gamma 1 and beta 0. Before or after `spectral_norm`, either works."""
    for m in module.modules():
        if isinstance(m, (UpBlock, DownBlock)):
            for conv, gain in ((m.conv1, math.sqrt(2)), (m.conv2, math.sqrt(2)), (m.shortcut, 1.0)):
                if conv is not None:
                    _xavier(conv, gain)
        elif isinstance(m, (ResGenerator, ResDiscriminator)):
            for layer in (m.linear, getattr(m, "out", None)):
                if layer is not None:
                    _xavier(layer, 1.0)
            if getattr(m, "embed", None) is not None:
                _xavier(m.embed, 1.0)
        elif isinstance(m, ConditionalBatchNorm2d):
            m.reset_affine()


@torch.no_grad()
def _xavier(layer: nn.Module, gain: float) -> None:
    """Xavier-uniform on `layer`'s weight, zero bias. Under spectral norm the raw weight is
    the one set, and the power iteration restarts from it: u and v of the old weight would
    give a wrong sigma for many steps, at one iteration a step."""
    if parametrize.is_parametrized(layer, "weight"):
        weight = layer.parametrizations.weight.original
        nn.init.xavier_uniform_(weight, gain=gain)
        for p in layer.parametrizations.weight:
            if isinstance(p, SpectralNorm):
                p.restart(weight)
    else:
        nn.init.xavier_uniform_(layer.weight, gain=gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
