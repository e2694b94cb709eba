"""Datasets as uint8 tensors (N, C, H, W) plus int64 labels, at their native size.

Scaling to [-1, 1] and fitting to the network's size happen on the training device
(`to_model`), and generated images go back to the native size (`to_native`), so a
user always gets MNIST digits at 28x28 whatever size the network works at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W), native size
    labels: torch.Tensor  # int64 (N,); -1 where the source has no labels
    name: str

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def native_size(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class DatasetSpec:
    """What gankit knows of a dataset before loading it (an entry of gankit.registry.DATASETS).

    `load(split, config, log)` returns an ImageData: the run's TrainConfig (its image_size
    filled with the dataset's default), which a loader reads the data settings of, and where
    its progress lines go. The config is passed down, never looked up: a loader names no table."""

    load: Callable[..., ImageData]
    image_size: int                  # the network's default size for it
    splits: tuple[str, ...] = ("train", "test")
    labelled: bool = True            # labels a --conditional run can learn from
    num_classes: int | None = None   # None: from the data (labels.max() + 1)
    evaluator: str | None = None     # the dataset whose evaluator judges its samples; None: not judged
    channels: int | None = None      # fixed channels of its images; None: as asked (--channels)
    needs: str | None = None         # what it needs that has no default, as the error says it
    settings: tuple[str, ...] = ()   # TrainConfig fields only this dataset reads (others refuse them)
    check: Callable | None = None    # check(config): refuse bad values of those settings (UserError)


def fake_data(n: int, *, size: int, channels: int, seed: int = 0) -> ImageData:
    """Random images with random labels: enough to run every code path in seconds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageData(images, labels, "random")


def load_fake(split: str, config, log=None) -> ImageData:
    """The smoke tests' data: fake_size random images; the test split a quarter as many (at least 32)."""
    channels = config.channels or 1
    if split == "test":
        return fake_data(max(config.fake_size // 4, 32), size=config.image_size, channels=channels,
                         seed=config.seed + 1)
    return fake_data(config.fake_size, size=config.image_size, channels=channels, seed=config.seed)


def border(native: int, size: int) -> int | None:
    """Pixels of padding per side when a small border fits native into size, else None."""
    extra = size - native
    if 0 < extra <= native // 4 and extra % 2 == 0:
        return extra // 2
    return None


def to_model(batch: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> float (N, C, size, size) in [-1, 1], on batch's device."""
    x = batch.float().div_(127.5).sub_(1.0)
    native = x.shape[-1]
    if native == size:
        return x
    pad = border(native, size)
    if pad is not None:
        return F.pad(x, (pad, pad, pad, pad), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_native(x: torch.Tensor, native: int) -> torch.Tensor:
    """float (N, C, S, S) in [-1, 1] -> uint8 (N, C, native, native): the inverse of to_model."""
    size = x.shape[-1]
    if size != native:
        pad = border(native, size)
        if pad is not None:
            x = x[..., pad:pad + native, pad:pad + native]
        else:
            x = F.interpolate(x, size=(native, native), mode="bilinear", antialias=True,
                              align_corners=False)
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
