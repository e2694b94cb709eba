"""Turning images into things a person keeps: PNG grids and .npz arrays.

Everything here takes uint8 (N, C, H, W) at the dataset's native size.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 picture (rows, cols, C), nrow images a row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    pics = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        canvas[y:y + h, x:x + w] = pics[i]
    return canvas


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_grid(images: torch.Tensor, path: Path, *, nrow: int | None = None) -> None:
    picture = grid(images, nrow=nrow)
    if picture.shape[2] == 1:
        picture = picture[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    write_atomic(Path(path), buf.getvalue())


def to_array(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, H, W) for one channel, (N, H, W, 3) for RGB."""
    x = images.cpu().numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def save_npz(images: torch.Tensor, path: Path) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=to_array(images))
    write_atomic(Path(path), buf.getvalue())


def generate(task, n: int, *, seed: int, native: int, batch_size: int = 500) -> torch.Tensor:
    """n images, uint8 (n, C, native, native) on the CPU, from a trained task.

    All of z comes at once from one seeded CPU generator, so the same seed gives the
    same images whatever the batch size or device."""
    from gankit.data import to_native

    z = task.noise(n, generator=torch.Generator().manual_seed(seed))
    return torch.cat([to_native(task.generate(zb), native).cpu() for zb in z.split(batch_size)])
