"""A small U-Net for flow matching: v(x_t, t[, label]) -> a velocity of x's shape.

The shape of DDPM's network (Ho et al. 2020, appendix B) and its descendants, cut down for
32x32 digits on a CPU: residual blocks with GroupNorm and SiLU, the time t in [0, 1] as a
sinusoidal embedding (Vaswani et al. 2017) through an MLP, added into every block;
self-attention at the lowest resolution; strided-conv downsampling, nearest-neighbour
upsampling and skip connections between the two halves. A conditional net adds a class
embedding to the time embedding; its last entry (index num_classes) is the "no label"
token that classifier-free guidance (Ho & Salimans 2022) samples the unconditional
velocity with.

Shapes are written for the default, image_size 32 and width 16 (channel multipliers
(1, 2, 4): 16, 32, 64 channels at 32, 16 and 8 px). Any image size divisible by 4 works
(16, 32, 64, 128).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Channels per level, times width: two halvings, 32 -> 16 -> 8 px. The channels grow where
# the pixels are few, so the parameters sit where they cost little time: at width 16 this
# has 0.64 M parameters for the time of a (1, 2, 2) net of 0.6 M at width 24 (1.7x slower).
MULTS = (1, 2, 4)
BLOCKS = 1              # res blocks per level (DDPM: 2; one keeps a CPU epoch affordable)
TIME_SCALE = 1000.0     # t in [0, 1] spread over the frequencies DDPM's 1000 steps used


def groups(channels: int) -> int:
    """GroupNorm's groups: 8 (small nets; DDPM used 32 at 128 channels), or fewer for tiny widths."""
    return math.gcd(8, channels)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) in [0, 1] -> (N, dim): sines and cosines of t at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = TIME_SCALE * t.float()[:, None] * freqs[None]            # (N, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)               # (N, dim)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv, + the embedding, GN -> SiLU -> conv; a 1x1 skip when the width changes."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                            # (N, cout, H, W)
        h = h + self.emb(F.silu(e))[:, :, None, None]                    # the time (and class) in every block
        h = self.conv2(F.silu(self.norm2(h)))                            # (N, cout, H, W)
        return self.skip(x) + h


class Attention(nn.Module):
    """One-head self-attention over the H*W positions, residual (DDPM's, at its 16x16)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)   # each (N, C, HW)
        # Written out rather than F.scaled_dot_product_attention: the ONNX export takes it as is.
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (N, HW, HW)
        y = (v @ weights.transpose(1, 2)).reshape(n, c, h, w)                # (N, C, H, W)
        return x + self.out(y)


class UNet(nn.Module):
    """v(x, t, labels=None): x (N, C, S, S), t (N,) in [0, 1], labels (N,) int64 in
    [0, num_classes] (num_classes: no label) -> (N, C, S, S)."""

    def __init__(self, *, image_size: int = 32, channels: int = 1, width: int = 32, num_classes: int = 0,
                 attention: bool = True, mults: tuple[int, ...] = MULTS):
        super().__init__()
        if image_size % (2 ** (len(mults) - 1)):
            raise ValueError(f"image_size {image_size} is not a multiple of {2 ** (len(mults) - 1)}")
        self.width, self.num_classes, self.levels = width, num_classes, len(mults)
        emb = 4 * width                                                  # DDPM's embedding width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_embed = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.stem = nn.Conv2d(channels, width, 3, padding=1)             # (N, 16, 32, 32)
        widths = [width * m for m in mults]                              # 16, 32, 64
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch = [width], width
        for level, w in enumerate(widths):
            for _ in range(BLOCKS):
                self.down.append(ResBlock(ch, w, emb))                   # (N, w, S / 2^level, ...)
                ch = w
                skips.append(ch)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halves H and W
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb)                                # (N, 64, 8, 8)
        self.attn = Attention(ch) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(BLOCKS + 1):                                  # one more: the downsample's skip too
                self.up.append(ResBlock(ch + skips.pop(), w, emb))       # the skip joins along the channels
                ch = w
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))    # after a 2x nearest upsampling
        self.head = nn.Sequential(nn.GroupNorm(groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))
        # The output starts at zero (as DDPM's code and ADM do): the first steps fit the mean velocity.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        e = self.time_mlp(time_embedding(t, self.width))                 # (N, 4 width)
        if self.label_embed is not None:
            if labels is None:  # no label given: the "no label" token, the unconditional velocity
                labels = torch.full(t.shape, self.num_classes, dtype=torch.long, device=t.device)
            e = e + self.label_embed(labels)
        return e

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(t, labels)
        h = self.stem(x)                                                 # (N, 16, 32, 32)
        hs = [h]
        blocks = iter(self.down)
        for level in range(self.levels):
            for _ in range(BLOCKS):
                h = next(blocks)(h, e)
                hs.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)                            # (N, w, S / 2^(level+1), ...)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)                     # (N, 64, 8, 8)
        blocks = iter(self.up)
        for k in range(self.levels):
            for _ in range(BLOCKS + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), e)
            if k < self.levels - 1:
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # doubles H and W
        return self.head(h)                                              # (N, C, 32, 32)
