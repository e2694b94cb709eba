"""Datasets as uint8 tensors (N, C, H, W) plus int64 labels, at their native size.

Scaling to [-1, 1] and fitting to the network's size happen on the training device
(`to_model`), and generated images go back to the native size (`to_native`), so a
user always gets MNIST digits at 28x28 whatever size the network works at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gankit.errors import UserError

IDX_DATASETS = ("mnist", "fashion-mnist")
MNIST_LIKE = IDX_DATASETS + ("stacked-mnist",)  # 28x28: padded to 32 for the network


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


def default_image_size(dataset: str) -> int:
    # MNIST's 28x28 goes to 32 by padding 2 pixels of background on each side: the
    # digits are already centred in 20x20 boxes, so padding adds no blur and nothing
    # moves; cropping gives back the exact 28x28 frame. Folders default to the DCGAN
    # paper's 64x64.
    return 32 if dataset in MNIST_LIKE or dataset == "fake" else 64


def load_dataset(name: str, *, split: str = "train", data_dir: str | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 fake_size: int = 1024, stacked_size: int = 60000, seed: int = 0, log=None) -> ImageData:
    """Load a dataset by name. Raises UserError with a one-line fix when it cannot."""
    if name in IDX_DATASETS:
        from gankit.data.mnist import load_idx_dataset

        images, labels = load_idx_dataset(name, split, data_dir, log=log)
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return ImageData(x, torch.from_numpy(labels).long(), name)
    if name == "stacked-mnist":
        return stacked_mnist(split, data_dir, n=stacked_size if split == "train" else 10000, seed=seed, log=log)
    if name == "folder":
        from gankit.data.folder import load_folder

        size = image_size or default_image_size(name)
        return load_folder(Path(data_dir), size=size, channels=channels or 3, log=log)
    if name == "fake":
        return fake_data(fake_size, size=image_size or default_image_size(name),
                         channels=channels or 1, seed=seed + (1 if split == "test" else 0))
    raise UserError(f"unknown dataset '{name}'; use one of: mnist, fashion-mnist, stacked-mnist, folder, fake")


def stacked_mnist(split: str, data_dir: str | None, *, n: int, seed: int, log=None) -> ImageData:
    """Stacked MNIST (Metz et al. 2017; VEEGAN, PacGAN): three random MNIST digits of one split
    in the R, G and B channels; 1000 classes, label 100 r + 10 g + b. Built from `seed`."""
    from gankit.data.mnist import load_idx_dataset

    images, labels = load_idx_dataset("mnist", split, data_dir, log=log)
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    pick = torch.randint(0, len(images), (n, 3), generator=g)          # (n, 3) digit indices
    x = torch.from_numpy(images)[pick]                                  # (n, 3, 28, 28)
    digits = torch.from_numpy(labels).long()[pick]                      # (n, 3)
    return ImageData(x, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2], "stacked-mnist")


def fake_data(n: int, *, size: int, channels: int, seed: int = 0) -> ImageData:
    """Random images with random labels: enough to run every code path in seconds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageData(images, labels, "fake")


def _pad(native: int, size: int) -> int | None:
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
    pad = _pad(native, size)
    if pad is not None:
        return F.pad(x, (pad, pad, pad, pad), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_native(x: torch.Tensor, native: int) -> torch.Tensor:
    """float (N, C, S, S) in [-1, 1] -> uint8 (N, C, native, native): the inverse of to_model."""
    size = x.shape[-1]
    if size != native:
        pad = _pad(native, size)
        if pad is not None:
            x = x[..., pad:pad + native, pad:pad + native]
        else:
            x = F.interpolate(x, size=(native, native), mode="bilinear", antialias=True,
                              align_corners=False)
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
