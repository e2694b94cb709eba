"""The files of an MNIST-shaped dataset: what each IDX file must be, where it is on disk, and
whether given bytes are it.

Both gankit.data.mnist (loading from disk) and gankit.data.mnist_download (fetching what is
missing) need these; they live here so that mnist.py imports mnist_download.py and never the
other way round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from gankit.data.idx import read_idx
from gankit.errors import UserError


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset.

    md5: MD5 of the uncompressed bytes, or None where no trusted value is known.
    gz_md5: MD5 of the official .gz, checked on download only, or None.
    """

    base: str
    shape: tuple[int, ...]
    md5: str | None = None
    gz_md5: str | None = None

    @property
    def nbytes(self) -> int:
        """Exact size of the uncompressed IDX file (header + uint8 payload)."""
        return 4 + 4 * len(self.shape) + prod(self.shape)


@dataclass(frozen=True)
class IdxSpec:
    """An MNIST-shaped dataset: four IDX files, where to fetch them, where torchvision keeps them.

    files: train images, train labels, test images, test labels, in that order.
    """

    name: str
    title: str
    torchvision_name: str
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]
    mirrors: tuple[str, ...]
    num_classes: int = 10

    def split_files(self, split: str) -> tuple[IdxFile, IdxFile]:
        """(images, labels) files of a split, "train" or "test"."""
        if split == "train":
            return self.files[0], self.files[1]
        if split == "test":
            return self.files[2], self.files[3]
        raise UserError(f"unknown split {split!r}; use 'train' or 'test'")


def locate(folders: list[Path], files: Iterable[IdxFile]) -> list[Path | None]:
    """For each file, the first existing `<base>` or `<base>.gz` in folder order, else None."""
    return [_find_one(folders, f.base) for f in files]


def _find_one(folders: list[Path], base: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                return candidate
    return None


def check_idx_bytes(data: bytes, f: IdxFile, num_classes: int) -> str | None:
    """What is wrong with uncompressed IDX bytes for file f, or None if they pass."""
    return parse_checked(data, f, num_classes)[1]


def parse_checked(data: bytes, f: IdxFile, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    """(array, None) if the IDX bytes pass every check for file f, else (None, what is wrong)."""
    # Structure first (magic, truncation, shape): those messages say more than an MD5.
    try:
        array = read_idx(data)
    except UserError as err:
        return None, str(err)
    if array.shape != f.shape:
        return None, f"shape {array.shape}, expected {f.shape}"
    if f.md5 is not None:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != f.md5:
            return None, f"MD5 of the uncompressed bytes is {digest}, expected {f.md5}"
    if array.ndim == 1 and array.size and int(array.max()) >= num_classes:
        return None, f"label {int(array.max())} is out of range 0..{num_classes - 1}"
    return array, None


def join_names(items: Iterable[object]) -> str:
    """Items as "a, b, c", for messages that list files or folders."""
    return ", ".join(str(item) for item in items)
