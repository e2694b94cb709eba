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
import math
import mmap
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from gankit.data import ImageData, folder_cache
from gankit.errors import UserError
from gankit.paths import default_data_root

EXTENSIONS = {".png", ".jpg", ".jpeg"}
PARALLEL_MIN_FILES = 256   # below this, starting worker processes costs more than it saves
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def list_images(root: Path) -> list[Path]:
    """The image files under root, recursively, in the order of their paths' parts (as sorted
    Paths): os.scandir, which knows a directory entry's type without a stat, is several times
    faster than Path.rglob on 100,000 files.

    Links are followed, to folders too, so that a class folder linked in from elsewhere is
    listed; each real folder is listed once, under one name. A link to a folder inside root
    (its parent: a loop; or a second name for a folder) is passed over, that folder being
    listed under its own name; a link to one outside it is followed, once (the folders are
    walked in sorted order, so that the same name wins each time). A link with an image's
    name that leads nowhere (dangling, or round in a circle) is listed: its decode fails and
    it is counted with the files that could not be read."""
    real_root = os.path.realpath(root)
    found, folders, seen = [], [str(root)], set()
    while folders:
        folder = folders.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:  # reached again through links outside root
                continue
            seen.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(folder))
        except OSError:  # a folder that vanished or cannot be read: its files are not there
            continue
        inside = []
        for entry in entries:
            if is_folder(entry):
                if not entry.is_symlink() or not is_within(os.path.realpath(entry.path), real_root):
                    inside.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS and (entry.is_symlink() or entry.is_file()):
                found.append(entry.path)
        folders += sorted(inside, reverse=True)  # reversed: the stack pops the first name first
    start = len(str(root)) + 1
    return [Path(p) for p in sorted(found, key=lambda p: p[start:].split(os.sep))]


def is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def is_folder(entry: os.DirEntry) -> bool:
    """Whether a directory entry is a folder or a link to one; False for a link that leads
    nowhere (DirEntry.is_dir raises for a loop, where it returns False for a dangling link)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


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


def load_image(path: Path, size: int, channels: int, crop: str | int = "center", draft: bool = True) -> np.ndarray:
    """(size, size, channels) uint8: crop (by default the centre square), then resize (bicubic);
    every mode (16-bit, float, transparent, palette, CMYK) by as_mode's rule.

    draft: a JPEG is decoded at the smallest of its scales 1/2, 1/4, 1/8 that still gives the
    cropped region at `size` or more (libjpeg scales in the frequency domain, a proper
    low-pass; Pillow's thumbnail() does the same), and the crop is taken in those
    coordinates as part of the resize. A 178x218 face for 64x64 decodes at 89x109: a
    quarter of the pixels. draft=False: every pixel decoded, then crop, then resize (the
    decode of gankit 0.1.0, kept for comparison)."""
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its pixel limit and raises above 2x; refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(path)
    mode = "RGB" if channels == 3 else "L"
    with img:
        box = crop_box(path, *img.size, crop)  # from the header: a too-small image fails before decoding
        if draft and img.format == "JPEG":
            return drafted(img, box, size, mode).reshape(size, size, channels)
        img = as_mode(img, mode)
        if box is not None:
            img = img.crop(box)
        img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


# Pillow's modes of more than 8 bits a channel: as_mode scales them to 0..255 itself, where
# Pillow's convert would clip (a 16-bit PNG would come out nearly all white).
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
BACKGROUND = 255  # white: what a transparent pixel becomes (as_mode)


def as_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img` as `mode` ("L" or "RGB", 8 bits a channel), by one rule for every mode Pillow opens:

    - 1, L, P, RGB, CMYK, YCbCr and the other 8-bit modes: Pillow's conversion. Colour to
      gray is ITU-R 601 luma, L = 0.299 R + 0.587 G + 0.114 B; gray to colour repeats it;
      a palette gives its colours; '1' gives 0 and 255; CMYK gives R = (255 - C)(255 - K)/255
      and so on (no colour profile).
    - 16-bit gray (I;16, I;16B, I;16L, I;16N: a 16-bit grayscale PNG): round(v * 255 / 65535),
      so 0 is 0 and 65535 is 255. 'I' (32-bit integers, what older Pillow made of a 16-bit
      PNG) is read as 16-bit the same way, clipped to 0..65535 first. A 16-bit colour PNG
      Pillow itself reads as 8-bit RGB (each value's high byte).
    - F (32-bit floats, from a TIFF): values in 0..1 when none is above 1, scaled by 255;
      else values in 0..255, as they are. Clipped to 0..255 and rounded; NaN is 0.
    - Transparency (RGBA, LA, PA, a palette's transparent entries, a PNG's transparent
      colour): composited over white, as a web page shows the image: a transparent pixel
      becomes white, a half-transparent one its colour blended with white by its alpha. This
      comes before the resize, so the colour hidden under transparent pixels never shows."""
    if img.mode in SIXTEEN_BIT or img.mode == "F":
        img = eight_bit(img)
    if img.mode in ALPHA or "transparency" in img.info:
        white = Image.new("RGBA", img.size, (BACKGROUND,) * 4)
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img.convert(mode)


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float gray image as L (as_mode's rule); LA where a 16-bit
    PNG names a transparent value."""
    values = np.asarray(img)
    if img.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        gray = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)
    else:
        wide = np.clip(values.astype(np.int64), 0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # rounded, in integers
    out = Image.fromarray(gray)
    transparent = img.info.get("transparency")
    if isinstance(transparent, int) and img.mode != "F":
        out.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8)))
    return out


def drafted(img: Image.Image, box: tuple[int, int, int, int] | None, size: int, mode: str) -> np.ndarray:
    """A JPEG's `box` (None: all of it) at size x size, decoded at a reduced scale (load_image)."""
    width, height = img.size
    box = box or (0, 0, width, height)
    # The whole image at the scale where the box's sides are still >= size.
    wanted = (math.ceil(width * size / (box[2] - box[0])), math.ceil(height * size / (box[3] - box[1])))
    img.draft(mode, wanted)
    sx, sy = img.size[0] / width, img.size[1] / height
    region = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    img = as_mode(img, mode).resize((size, size), Image.Resampling.BICUBIC, box=region)
    return np.asarray(img, dtype=np.uint8)


def read_image(path: Path, *, size: int, channels: int, crop: str | int,
               draft: bool = True) -> tuple[np.ndarray | None, str | None]:
    """One image as (channels, size, size) uint8, or None when the file cannot be read as
    an image; and the first warning Pillow gave while reading it (damaged EXIF metadata,
    most often), or None. Runs in the worker processes, so the transpose is done there too.

    Pillow's warnings are caught here, file by file, so that a folder of 10,000 photos with
    a camera's broken EXIF does not print 20,000 lines; decode_into says them in one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            image = np.ascontiguousarray(load_image(path, size, channels, crop, draft).transpose(2, 0, 1))
        except UserError:
            raise  # a crop the image cannot give: the user's choice to fix, not a bad file (UserError is a ValueError)
        except UNREADABLE:
            return None, None  # unreadable, truncated, not an image, or too large to be safe
    for other in (w for w in caught if not issubclass(w.category, UserWarning)):  # not the file's: as they were
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    noted = [w for w in caught if issubclass(w.category, UserWarning)]
    return image, (" ".join(str(noted[0].message).split())[:200] if noted else None)


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


def decode_into(target: np.ndarray, paths: list[Path], *, size: int, channels: int, crop: str | int = "center",
                workers: int | None = None, progress: bool = True, desc: str = "decoding",
                draft: bool = True, log: Callable[[str], None] | None = None) -> list[int]:
    """Decode `paths` into target's first rows ((N, channels, size, size) uint8), in path
    order, skipping the files that cannot be read. Returns the indices of the kept paths:
    row k holds paths[kept[k]]. workers=None: every core, or one process for a few files.
    The files Pillow warned of (read_image) are said in one line to `log` (None: stderr).

    Where the workers are forked and `target` is shared memory (a cache file mapped shared,
    or shared_array's), each worker writes its rows into it: nothing but a flag per file
    (put's) comes back through a pipe. Otherwise the images come back pickled."""
    decode = functools.partial(read_image, size=size, channels=channels, crop=crop, draft=draft)
    workers = worker_count(len(paths)) if workers is None else workers
    with tqdm(total=len(paths), desc=desc, unit="files", disable=not progress, file=sys.stderr) as bar:
        if workers > 1 and pool_context().get_start_method() == "fork" and is_shared(target):
            readable = decode_in_place(target, paths, decode, workers, bar)
        else:
            readable = [put(target, index, result) for index, result in enumerate(decoded(paths, decode, workers, bar))]
    kept = [index for index, ok in enumerate(readable) if ok]
    for row, index in enumerate(kept):  # skipped files leave gaps: close them, moving rows down
        if row != index:
            target[row] = target[index]
    report_warnings(paths, readable, log or (lambda message: print(message, file=sys.stderr)))
    return kept


def report_warnings(paths: list[Path], flags: list[bool | str], log: Callable[[str], None]) -> None:
    """One line for every file that was read with a warning from Pillow (put's flags), if any."""
    warned = [(paths[index], flag) for index, flag in enumerate(flags) if isinstance(flag, str)]
    if warned:
        path, text = warned[0]
        log(f"warning: {len(warned)} of {len(paths)} files had damaged metadata, which Pillow warned of "
            f"(e.g. '{path}': {text}); their pixels were read")


def put(target: np.ndarray, index: int, result: tuple[np.ndarray | None, str | None]) -> bool | str:
    """Store a read_image result in target[index]; its flag: False for a file that could not
    be read, else True, or Pillow's warning for it (all that crosses a pipe from a worker)."""
    image, warning = result
    if image is None:
        return False
    target[index] = image
    return warning or True


def decoded(paths: list[Path], decode: Callable, workers: int, bar) -> Iterator[tuple]:
    """decode(path) for every path, in order: in this process, or in `workers` processes."""
    if workers <= 1:
        for path in paths:
            yield decode(path)
            bar.update()
        return
    pool = ProcessPoolExecutor(workers, mp_context=pool_context())
    try:
        # Chunks keep the per-task overhead small; several per worker keep the cores busy to the end.
        for result in pool.map(decode, paths, chunksize=chunk_size(len(paths), workers)):
            yield result
            bar.update()
    except BaseException:  # an error, Ctrl+C, or a consumer that stopped early: drop the queued chunks
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def chunk_size(files: int, workers: int) -> int:
    return max(1, min(64, files // (workers * 8)))


# What forked workers decode into, set just before the pool forks them (they inherit it; a
# shared mapping is the same memory in every process). Never pickled.
_SHARED: dict = {}


def decode_rows(start: int, stop: int) -> tuple[int, list[bool | str]]:
    """In a worker: decode paths[start:stop] into their own rows of the shared target."""
    target, paths, decode = _SHARED["target"], _SHARED["paths"], _SHARED["decode"]
    return start, [put(target, index, decode(paths[index])) for index in range(start, stop)]


def decode_in_place(target: np.ndarray, paths: list[Path], decode: Callable, workers: int, bar) -> list[bool | str]:
    """Every file decoded into target[its index] by `workers` forked processes."""
    readable = [False] * len(paths)
    step = chunk_size(len(paths), workers)
    _SHARED.update(target=target, paths=paths, decode=decode)
    pool = ProcessPoolExecutor(workers, mp_context=pool_context())
    try:
        jobs = [pool.submit(decode_rows, start, min(start + step, len(paths))) for start in range(0, len(paths), step)]
        for job in as_completed(jobs):
            start, flags = job.result()
            readable[start:start + len(flags)] = flags
            bar.update(len(flags))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _SHARED.clear()
    pool.shutdown()
    return readable


def is_shared(array: np.ndarray) -> bool:
    """Whether forked processes writing into `array` write into this process's memory too."""
    base = array
    while base is not None and not isinstance(base, (np.memmap, mmap.mmap)):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if isinstance(base, np.memmap):
        return base.mode in ("r+", "w+")
    return isinstance(base, mmap.mmap)


def shared_array(shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array in anonymous shared memory (MAP_SHARED): forked workers write into it."""
    buffer = mmap.mmap(-1, max(1, math.prod(shape)))
    return np.frombuffer(buffer, dtype=np.uint8, count=math.prod(shape)).reshape(shape)


def folder_labels(relative: list[tuple[str, ...]]) -> list[int]:
    """The first-level folder names as labels (sorted names -> 0, 1, ...), when every image
    sits in a subfolder; else -1 for every image."""
    if relative and all(len(parts) > 1 for parts in relative):
        classes = {name: k for k, name in enumerate(sorted({parts[0] for parts in relative}))}
        return [classes[parts[0]] for parts in relative]
    return [-1] * len(relative)


def load_folder_split(split: str, config, log=None) -> ImageData:
    """A folder as a dataset: its one split, train, at the network's size; RGB unless channels
    is 1. The decoded images are cached under cache_dir (None: the data root, default_data_root())."""
    return load_folder(Path(config.data_dir), size=config.image_size, channels=config.channels or 3,
                       log=log, crop=config.crop, progress=config.progress,
                       cache_dir=Path(config.cache_dir) if config.cache_dir else default_data_root())


def check_settings(config) -> None:
    """Before anything is decoded or cached (DatasetSpec.check): --crop's value, and that a
    --conditional run's folder has labels, which it has when no image sits at its top level
    (folder_labels' rule, read from one listing of the top folder)."""
    parse_crop(config.crop)
    root = Path(config.data_dir or "")
    if config.conditional and root.is_dir() and any(p.suffix.lower() in EXTENSIONS and p.is_file()
                                                    for p in root.iterdir()):
        raise UserError(f"--conditional needs labelled data: a folder with one subfolder per class; '{root}' has "
                        "images at its top level (move each class's images into a subfolder named after it)")


def load_folder(root: Path, *, size: int, channels: int = 3, log=None, crop: str | int = "center",
                cache_dir: Path | None = None, progress: bool = True, workers: int | None = None,
                memory_limit: int | None = None, draft: bool = True):
    """The images under `root` as an ImageData (uint8 (N, C, size, size), labels by folder).

    cache_dir: where the decoded images are kept between loads (None: decode every time,
    in memory). A cached dataset that does not fit in memory (folder_cache.fits_in_memory,
    with memory_limit bytes, when given, as the memory available) comes back memory-mapped:
    a read-only tensor backed by the cache file (see folder_cache.mapped_tensor)."""
    if cache_dir is not None and not draft:
        raise ValueError("draft=False (load_image) is for comparisons and has no cache of its own")
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
                           progress=progress, desc=f"decoding {root.name or root}", draft=draft, log=log)
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
    target = shared_array(shape)
    labels, skipped = build(target)
    return target[:len(labels)], labels, skipped


def as_tensor(array: np.ndarray, memory_limit: int | None, log) -> torch.Tensor:
    """An in-memory array as it is; a cache file's array mapped copy-on-write when it fits in
    memory, else left on disk as a read-only memory-mapped tensor that training streams from.

    Copy-on-write: nothing is read at load time (a 100,000-image cache opens in a second);
    the pages come in as training first touches them, from the system's page cache after
    that, and a write would change this process's copy only, never the cache file."""
    if not isinstance(array, np.memmap):
        return torch.from_numpy(array)
    if folder_cache.fits_in_memory(array.nbytes, limit=memory_limit):
        return torch.from_numpy(np.load(array.filename, mmap_mode="c"))
    log(f"the images ({array.nbytes / 2**30:.1f} GiB) do not fit in memory; training reads them from "
        f"'{array.filename}' as it needs them")
    return folder_cache.mapped_tensor(array)
