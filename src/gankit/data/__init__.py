"""Datasets as uint8 tensors (N, C, H, W) plus int64 labels, at their native size.

Scaling to [-1, 1] and fitting to the network's size happen on the training device
(`to_model`), and generated images go back to the native size (`to_native`), so a
user always gets MNIST digits at 28x28 whatever size the network works at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gankit.errors import UserError


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

    `load(split, *, data_dir, image_size, channels, fake_size, stacked_size, seed, log, progress,
    crop, cache_dir)` returns an ImageData; each loader uses the keywords it needs."""

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


def load_dataset(name: str, *, split: str = "train", data_dir: str | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 fake_size: int = 1024, stacked_size: int = 60000, seed: int = 0, log=None,
                 progress: bool = True, crop: str | int = "center", cache_dir: str | None = None) -> ImageData:
    """Load a dataset by name (gankit.registry.DATASETS). Raises UserError with a one-line fix when it cannot."""
    from gankit.registry import dataset_spec

    spec = dataset_spec(name)
    if spec.needs and not data_dir:
        raise UserError(spec.needs)
    if split not in spec.splits:
        raise UserError(f"the {name} dataset has no {split} split (it has: {', '.join(spec.splits)})")
    data = spec.load(split, data_dir=data_dir, image_size=image_size or spec.image_size, channels=channels,
                     fake_size=fake_size, stacked_size=stacked_size, seed=seed, log=log, progress=progress,
                     crop=crop, cache_dir=cache_dir)
    return dataclasses.replace(data, name=name)


def fake_data(n: int, *, size: int, channels: int, seed: int = 0) -> ImageData:
    """Random images with random labels: enough to run every code path in seconds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageData(images, labels, "random")


def load_fake(split: str, *, fake_size: int, image_size: int, channels: int | None, seed: int, **_) -> ImageData:
    """The smoke tests' data: fake_size random images; the test split a quarter as many (at least 32)."""
    if split == "test":
        return fake_data(max(fake_size // 4, 32), size=image_size, channels=channels or 1, seed=seed + 1)
    return fake_data(fake_size, size=image_size, channels=channels or 1, seed=seed)


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
