"""DiffAugment (Zhao et al. 2020): random, differentiable transforms of every image D sees.

D is shown T(x) for reals and T(G(z)) for fakes, with T drawn afresh each time, in D's
update and in G's. Because T is differentiable, G's gradient flows back through it; because
reals and fakes go through the same kind of T, D cannot tell them apart by the transform,
so G is not pushed to draw transformed images (the failure of augmenting reals only, Sec. 3).
D, seeing more varied images, overfits its training set later.

Policies (`--diffaugment color,translation,cutout`, any of the three in any order):
- color: brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) per image;
- translation: a shift by up to 1/8 of the size in each direction, zeros brought in;
- cutout: a zeroed square of half the size, at a random place.
The ranges are the paper's. Draws use the device's generator (no host sync: a CUDA graph
holds them, and a checkpoint's random state resumes them).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125  # at most 1/8 of the image in each direction (the paper's default)
CUTOUT_RATIO = 0.5         # the square's side: half the image's


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One draw a image, (N, 1, 1, 1), in [low, high)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)                                          # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean                           # saturation (none in grayscale)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean                        # contrast


def _shifts(x: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    return (torch.randint(-limit, limit + 1, (n, 1, 1), device=x.device),
            torch.randint(-limit, limit + 1, (n, 1, 1), device=x.device))


def translation(x: torch.Tensor) -> torch.Tensor:
    """Shift each image by whole pixels; what moves in from outside is 0 (mid-gray in [-1, 1])."""
    n, _, h, w = x.shape
    dy, dx = _shifts(x, int(h * TRANSLATION_RATIO + 0.5))
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy              # (N, H, 1) source rows
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx              # (N, 1, W) source columns
    # Pad by one pixel of zeros and send every out-of-range index to that border.
    padded = F.pad(x, (1, 1, 1, 1))                                         # (N, C, H+2, W+2)
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)


def cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero one square of side CUTOUT_RATIO * size per image; its centre may sit near the
    edge, so that part of it falls outside (as in the paper)."""
    n, _, h, w = x.shape
    side_h, side_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - side_h % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - side_w % 2), (n, 1, 1), device=x.device)
    top, left = cy - side_h // 2, cx - side_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)  # (N, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def parse_policy(text: str | None) -> tuple[str, ...]:
    """"color,translation" -> ("color", "translation"); "" or None or "none": no augmentation.
    Unknown names raise ValueError naming the known ones."""
    if not text or text.strip().lower() == "none":
        return ()
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy '{unknown[0]}'; use a comma-separated list of "
                         f"{', '.join(POLICIES)} (e.g. color,translation,cutout), or none")
    return names


class DiffAugment:
    """The policy's transforms, applied in the order given."""

    def __init__(self, policy: str | None):
        self.names = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = POLICIES[name](x)
        return x


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Each image (N, C, H, W) flipped left-right with probability 1/2, drawn on x's device
    from the global generator (so a checkpoint's RNG state resumes the same flips, and a CUDA
    graph replays fresh ones). Only the images: a label stays with its image."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)
