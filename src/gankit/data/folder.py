"""Any folder of PNG/JPEG images, searched recursively, as one uint8 tensor.

Each image is centre-cropped to a square and resized to `size` once, at load time,
so training reads nothing from disk. Files that cannot be read are skipped and
counted; Pillow's decompression-bomb limit stays on. When images sit in
subfolders (`root/cat/1.png`, `root/dog/2.png`), the first-level folder name is
the label, as in torchvision's ImageFolder; otherwise labels are -1.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gankit.errors import UserError

EXTENSIONS = {".png", ".jpg", ".jpeg"}


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """(size, size, channels) uint8: centre crop to a square, then resize."""
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its pixel limit and raises above 2x; refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        img = img.convert("RGB" if channels == 3 else "L")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


def load_split(split: str, *, data_dir: str, image_size: int, channels: int | None, log=None, **_):
    """A folder as a dataset: its one split, train, at image_size; RGB unless channels=1."""
    return load_folder(Path(data_dir), size=image_size, channels=channels or 3, log=log)


def load_folder(root: Path, *, size: int, channels: int = 3, log=None):
    from gankit.data import ImageData

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist; pass --data-dir with a folder of PNG/JPEG images")
    paths = list_images(root)
    if not paths:
        raise UserError(f"no PNG/JPEG images found under '{root}'; pass --data-dir with a folder of images")
    arrays, kept, skipped = [], [], 0
    for path in paths:
        try:
            arrays.append(load_image(path, size, channels))
            kept.append(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            skipped += 1  # unreadable, truncated, not an image, or too large to be safe
    if skipped:
        log(f"warning: skipped {skipped} of {len(paths)} files under '{root}' that could not be read as images")
    if not arrays:
        raise UserError(f"none of the {len(paths)} image files under '{root}' could be read; check that they are "
                        "valid PNG/JPEG files")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    top = [p.relative_to(root).parts for p in kept]
    if all(len(parts) > 1 for parts in top):
        classes = sorted({parts[0] for parts in top})
        labels = torch.tensor([classes.index(parts[0]) for parts in top])
    else:
        labels = torch.full((len(kept),), -1, dtype=torch.long)
    return ImageData(images, labels, root.name)
