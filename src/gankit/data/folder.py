"""Any folder of PNG/JPEG images, searched recursively, as one uint8 tensor.

Each image is cropped (`crop`: the centre square, no crop, or a centred square of some
pixels) and resized to `size` once, at load time, so training reads nothing from the
image files. The files are decoded in parallel, on every core, with a progress bar.
Files that cannot be read are skipped and counted; Pillow's decompression-bomb limit
stays on. When images sit in subfolders (`root/cat/1.png`, `root/dog/2.png`), the
first-level folder name is the label, as in torchvision's ImageFolder; otherwise
labels are -1.

With a `cache_dir`, the decoded images are kept on disk (gankit.data.folder_cache) and
the next load only lists the folder; a dataset larger than memory then stays on disk,
memory-mapped, and training reads the batches it needs from there.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from gankit.data import folder_cache
from gankit.errors import UserError

EXTENSIONS = {".png", ".jpg", ".jpeg"}
PARALLEL_MIN_FILES = 256   # below this, starting worker processes costs more than it saves
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def parse_crop(text) -> str | int:
    """`--crop`'s value: "center", "none" or a number of pixels (an int > 0)."""
    value = str(text).strip().lower()
    if value in ("center", "none"):
        return value
    if value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise UserError(f"--crop {str(text)!r} is not center, none or a number of pixels (e.g. --crop 108)")


def crop_box(path: Path, width: int, height: int, crop: str | int) -> tuple[int, int, int, int] | None:
    """The part of a width x height image that `crop` keeps (PIL's box), or None for all of it."""
    if crop == "none":
        return None
    side = min(width, height) if crop == "center" else crop
    if side > width or side > height:
        raise UserError(f"'{path}' is {width}x{height}, smaller than --crop {crop}; use --crop center, or "
                        f"--crop {min(width, height)} or less")
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def load_image(path: Path, size: int, channels: int, crop: str | int = "center") -> np.ndarray:
    """(size, size, channels) uint8: crop (by default the centre square), then resize."""
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its pixel limit and raises above 2x; refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        box = crop_box(path, *img.size, crop)  # from the header: a too-small image fails before decoding
        img = img.convert("RGB" if channels == 3 else "L")
        if box is not None:
            img = img.crop(box)
        img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


def read_image(path: Path, *, size: int, channels: int, crop: str | int) -> np.ndarray | None:
    """One image as (channels, size, size) uint8, or None when the file cannot be read as
    an image. Runs in the worker processes, so the transpose is done there too."""
    try:
        return np.ascontiguousarray(load_image(path, size, channels, crop).transpose(2, 0, 1))
    except UserError:
        raise  # a crop the image cannot give: the user's choice to fix, not a bad file (UserError is a ValueError)
    except UNREADABLE:
        return None  # unreadable, truncated, not an image, or too large to be safe


def worker_count(files: int) -> int:
    if files < PARALLEL_MIN_FILES:
        return 1
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (a container's or taskset's share)
    except AttributeError:
        return os.cpu_count() or 1


def pool_context():
    # fork on Linux: a worker starts in milliseconds and does not import torch again (spawn
    # would, a second or two each); the workers only run Pillow and numpy. PyTorch's
    # DataLoader forks its workers on Linux too. Elsewhere, the platform's default.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def decoded(paths: list[Path], decode: Callable, workers: int) -> Iterator[np.ndarray | None]:
    """decode(path) for every path, in order: in this process, or in `workers` processes."""
    if workers <= 1:
        yield from map(decode, paths)
        return
    pool = ProcessPoolExecutor(workers, mp_context=pool_context())
    try:
        # Chunks keep the per-task overhead small; several per worker keep the cores busy to the end.
        yield from pool.map(decode, paths, chunksize=max(1, min(64, len(paths) // (workers * 8))))
    except BaseException:  # an error, Ctrl+C, or a consumer that stopped early: drop the queued chunks
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def decode_into(target: np.ndarray, paths: list[Path], *, size: int, channels: int, crop: str | int = "center",
                workers: int | None = None, progress: bool = True, desc: str = "decoding") -> list[int]:
    """Decode `paths` into target's first rows ((N, channels, size, size) uint8), in path
    order, skipping the files that cannot be read. Returns the indices of the kept paths:
    row k holds paths[kept[k]]. workers=None: every core, or one process for a few files."""
    decode = functools.partial(read_image, size=size, channels=channels, crop=crop)
    workers = worker_count(len(paths)) if workers is None else workers
    kept = []
    with tqdm(total=len(paths), desc=desc, unit="files", disable=not progress, file=sys.stderr) as bar:
        for index, image in enumerate(decoded(paths, decode, workers)):
            if image is not None:
                target[len(kept)] = image
                kept.append(index)
            bar.update()
    return kept


def folder_labels(relative: list[tuple[str, ...]]) -> list[int]:
    """The first-level folder names as labels (sorted names -> 0, 1, ...), when every image
    sits in a subfolder; else -1 for every image."""
    if relative and all(len(parts) > 1 for parts in relative):
        classes = {name: k for k, name in enumerate(sorted({parts[0] for parts in relative}))}
        return [classes[parts[0]] for parts in relative]
    return [-1] * len(relative)


def load_split(split: str, *, data_dir: str, image_size: int, channels: int | None, log=None,
               crop: str | int = "center", cache_dir: str | Path | None = None, progress: bool = True, **_):
    """A folder as a dataset: its one split, train, at image_size; RGB unless channels=1. The
    decoded images are cached under cache_dir (None: the data root, default_data_root())."""
    from gankit.data.mnist import default_data_root

    return load_folder(Path(data_dir), size=image_size, channels=channels or 3, log=log, crop=crop,
                       cache_dir=Path(cache_dir) if cache_dir else default_data_root(), progress=progress)


def check_settings(config) -> None:
    """Before anything is decoded or cached (DatasetSpec.check): --crop's value, and that a
    --conditional run's folder has labels, which it has when no image sits at its top level
    (folder_labels' rule, read from one listing of the top folder)."""
    from gankit.registry import conditional_needs_labels

    parse_crop(config.crop)
    root = Path(config.data_dir or "")
    if config.conditional and root.is_dir() and any(p.suffix.lower() in EXTENSIONS and p.is_file()
                                                    for p in root.iterdir()):
        raise UserError(conditional_needs_labels())


def load_folder(root: Path, *, size: int, channels: int = 3, log=None, crop: str | int = "center",
                cache_dir: Path | None = None, progress: bool = True, workers: int | None = None,
                memory_limit: int | None = None):
    """The images under `root` as an ImageData (uint8 (N, C, size, size), labels by folder).

    cache_dir: where the decoded images are kept between loads (None: decode every time,
    in memory). A cached dataset that does not fit in memory (folder_cache.fits_in_memory,
    with memory_limit bytes, when given, as the memory available) comes back memory-mapped:
    a read-only tensor backed by the cache file (see folder_cache.mapped_tensor)."""
    from gankit.data import ImageData

    log = log or (lambda msg: print(msg, file=sys.stderr))
    crop = parse_crop(crop)  # also checks an int given directly
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist; pass --data-dir with a folder of PNG/JPEG images")
    paths = list_images(root)
    if not paths:
        raise UserError(f"no PNG/JPEG images found under '{root}'; pass --data-dir with a folder of images")

    def build(target: np.ndarray) -> tuple[list[int], int]:
        """Decode into target; the labels of the kept images and the count of skipped files."""
        kept = decode_into(target, paths, size=size, channels=channels, crop=crop, workers=workers,
                           progress=progress, desc=f"decoding {root.name or root}")
        if not kept:
            raise UserError(f"none of the {len(paths)} image files under '{root}' could be read; check that they "
                            "are valid PNG/JPEG files")
        return folder_labels([paths[k].relative_to(root).parts for k in kept]), len(paths) - len(kept)

    shape = (len(paths), channels, size, size)
    cached = None
    if cache_dir is not None:  # None back when the cache cannot be used (it logged why): decode in memory
        cached = folder_cache.load_or_build(cache_dir, root, paths, shape=shape, crop=crop, build=build, log=log)
    array, labels, skipped = cached or decode_in_memory(shape, build)
    if skipped:
        log(f"warning: skipped {skipped} of {len(paths)} files under '{root}' that could not be read as images")
    return ImageData(as_tensor(array, memory_limit, log), torch.tensor(labels, dtype=torch.long), root.name)


def decode_in_memory(shape: tuple[int, ...], build) -> tuple[np.ndarray, list[int], int]:
    # Room for every file; rows past the kept ones are never written, so they take no memory.
    target = np.empty(shape, dtype=np.uint8)
    labels, skipped = build(target)
    return target[:len(labels)], labels, skipped


def as_tensor(array: np.ndarray, memory_limit: int | None, log) -> torch.Tensor:
    """An in-memory array as it is; a cache file's memmap read into memory when it fits,
    else left on disk as a memory-mapped tensor."""
    if not isinstance(array, np.memmap):
        return torch.from_numpy(array)
    if folder_cache.fits_in_memory(array.nbytes, limit=memory_limit):
        return torch.from_numpy(np.array(array))  # an ordinary, writable tensor, as without a cache
    log(f"the images ({array.nbytes / 2**30:.1f} GiB) do not fit in memory; training reads them from "
        f"'{array.filename}' as it needs them")
    return folder_cache.mapped_tensor(array)
