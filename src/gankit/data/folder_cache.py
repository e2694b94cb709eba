"""The decoded images of an image folder, kept on disk so that the next load only lists it.

Where: `cache_dir/folders/<name>-<key>/`, key a hash of (resolved root, size, channels,
crop, FORMAT_VERSION), so each way of loading a folder has its own cache and nothing is
ever written inside the image folder. It holds two files:

- images.npy: the images, uint8 (N, C, H, W). That is ImageData's layout, so the array
  opened memory-mapped is the dataset tensor itself (torch.from_numpy: no copy, no
  permute); (N, H, W, C) would need a permute, a non-contiguous tensor that every
  consumer would copy whole. Each image's bytes are contiguous either way, so a batch
  gathered by index reads one block per image.
- manifest.json: what the array was made from and how to trust it: the format version,
  the resolved root, size, channels and crop, every listed file (relative path, size,
  mtime_ns; unreadable ones too, so that fixing one is noticed), the array's shape and
  labels, the count of skipped files, and a checksum (see `checksum`).

A load lists the folder (one stat per file, no decoding) and compares it with the
manifest: files added, removed or changed, a manifest that does not parse, an array of
the wrong size, checksum or shape: each means a rebuild, logged in one line with its
reason. Writes are atomic: the old manifest is deleted first, the array is written to a
temporary file and renamed into place, and the new manifest comes last, so an
interrupted build never leaves a cache that looks valid. A cache folder that cannot be
written costs only time: the images are decoded in memory, with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import mmap
import os
import re
import secrets
import struct
import warnings
import weakref
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import torch

from gankit.errors import UserError, one_line
from gankit.files import TEMP_SUFFIX, fsync_folder, loads_strict, write_atomic

FORMAT_VERSION = 3  # 2: JPEGs decoded at a reduced scale (load_image's draft); 3: 16-bit, float, alpha by as_mode
IMAGES, MANIFEST = "images.npy", "manifest.json"
HEADER_BYTES = 128      # the .npy header, padded to a fixed size (numpy aligns data to 64 bytes)
MIB = 2**20
SETTINGS = ("version", "root", "size", "channels", "crop")  # what the key hashes; checked again in the manifest

# build(target) decodes into target's first rows and returns (labels of the kept images, files skipped).
Build = Callable[[np.ndarray], tuple[list[int], int]]


def cache_folder(cache_dir: Path, root: Path, *, size: int, channels: int, crop: str | int) -> Path:
    """The cache folder of `root` (resolved) loaded at this size, channels and crop."""
    settings = [FORMAT_VERSION, str(root), size, channels, crop]
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:40] or "root"
    return Path(cache_dir) / "folders" / f"{name}-{key}"


def listing(root: Path, paths: list[Path]) -> list[list]:
    """[relative path, size, mtime_ns] of each file, as the manifest stores them; -1, -1 for
    a file gone since it was listed (its decode skips it, and the next load sees it gone)."""
    files = []
    for path in paths:
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        files.append([path.relative_to(root).as_posix(), size, mtime])
    return files


def load_or_build(cache_dir: Path, root: Path, paths: list[Path], *, shape: tuple[int, int, int, int],
                  crop: str | int, build: Build, log) -> tuple[np.memmap, list[int], int] | None:
    """(images memmap, labels, files skipped) from the cache of `root`, built first when it
    is missing, stale or damaged; None when the cache cannot be used (the caller decodes
    in memory then; the reason is logged). shape: (files, channels, size, size)."""
    memory_limit_from_env()  # read after the build (folder.as_tensor): a bad value fails now, not after it
    resolved = root.resolve()
    folder = cache_folder(cache_dir, resolved, size=shape[-1], channels=shape[1], crop=crop)
    if folder.resolve().is_relative_to(resolved):
        log(f"warning: the cache folder '{folder}' is inside the image folder '{root}', where gankit never "
            "writes; decoding in memory (choose a cache folder outside it)")
        return None
    expected = {"version": FORMAT_VERSION, "root": str(resolved), "size": shape[-1], "channels": shape[1],
                "crop": crop, "files": listing(root, paths)}
    found, reason = open_cache(folder, expected)
    if found is not None:
        return found
    if reason is None:
        log(f"caching the decoded images of '{root}' in '{folder}'")
    else:
        log(f"rebuilding the image cache in '{folder}': {reason}")
    try:
        return write_cache(folder, expected, shape, build)
    except OSError as e:
        log(f"warning: cannot write the image cache in '{folder}' ({e.strerror or e}); decoding in memory, "
            "every time until it can be written")
        return None


def open_cache(folder: Path, expected: dict) -> tuple[tuple | None, str | None]:
    """((images, labels, skipped), None) for a cache that matches `expected`, else (None,
    why not); the reason is None when there is no cache at all."""
    try:
        text = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"its manifest cannot be read ({e.strerror or e})"
    try:
        # Strict: Infinity or NaN, which Python's json takes, would fail later (int(inf)), and
        # deep nesting would be a RecursionError; each is a damaged manifest, as bad JSON is.
        manifest = loads_strict(text)
    except ValueError as e:  # not JSON (nor UTF-8), or not JSON as loads_strict reads it
        return None, f"its manifest is damaged ({one_line(e, 100)})"
    try:
        return check_cache(folder, manifest, expected)
    except (ValueError, KeyError, TypeError, AttributeError):  # file entries that are not [path, size, mtime]
        return None, "its manifest is damaged"


# Each field of a manifest and its JSON type (bool, an int to Python, is refused apart).
FIELDS = {"version": int, "root": str, "size": int, "channels": int, "crop": (str, int), "files": list,
          "shape": list, "labels": list, "skipped": int, "npy_bytes": int, "checksum": str}


def wrong_field(manifest, keys) -> str | None:
    """What is wrong with the first of `keys` that the manifest lacks or holds with another
    type, in a few words; None when all are there."""
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    for key in keys:
        if key not in manifest or not isinstance(manifest[key], FIELDS[key]) or isinstance(manifest[key], bool):
            return f"its {key} is missing or of another type"
    return None


def labels_fit(labels: list, files: list) -> bool:
    """Whether labels are what folder_labels gives for some of `files`: all -1, or all class
    numbers 0 .. (first-level folders) - 1."""
    if not all(type(label) is int for label in labels):
        return False
    if all(label == -1 for label in labels):
        return True
    classes = len({path.partition("/")[0] for path, _, _ in files})
    return min(labels) >= 0 and max(labels) < classes


def layout_problem(manifest: dict, expected: dict) -> str | None:
    """What is wrong with the manifest's shape, labels and count of skipped files, for the
    folder's files (`expected`, already found to be the manifest's); None when nothing."""
    shape, labels, skipped = manifest["shape"], manifest["labels"], manifest["skipped"]
    if len(shape) != 4 or not all(type(n) is int and n >= 0 for n in shape):
        return "its shape is not four sizes"
    if shape[1:] != [expected["channels"], expected["size"], expected["size"]]:
        return f"its shape {shape} is not {expected['channels']}x{expected['size']}x{expected['size']} images"
    if skipped < 0 or len(labels) != shape[0] or shape[0] + skipped != len(expected["files"]):
        return "its counts of images, labels, skipped and listed files disagree"
    if not labels_fit(labels, expected["files"]):
        return "its labels are not class numbers of the folder"
    return None


def check_cache(folder: Path, manifest, expected: dict) -> tuple[tuple | None, str | None]:
    """The cached images, or why they cannot be trusted. A manifest with fields of the wrong
    types or out of range is damaged, however it parsed: a hostile or half-edited one
    must cost a rebuild, never a traceback."""
    wrong = wrong_field(manifest, SETTINGS)
    if wrong:
        return None, f"its manifest is damaged ({wrong})"
    for key in SETTINGS:
        if manifest[key] != expected[key]:
            return None, f"it was made with another {key} ({manifest[key]!r})"
    wrong = wrong_field(manifest, FIELDS)
    if wrong:
        return None, f"its manifest is damaged ({wrong})"
    changes = describe_changes(manifest["files"], expected["files"])
    if changes:
        return None, changes
    problem = layout_problem(manifest, expected)
    if problem:
        return None, f"its manifest is damaged ({problem})"
    return open_array(folder, manifest, expected)


def open_array(folder: Path, manifest: dict, expected: dict) -> tuple[tuple | None, str | None]:
    """The cached images, memory-mapped, once the array's size and checksum match the manifest."""
    shape, labels, skipped = manifest["shape"], manifest["labels"], manifest["skipped"]
    npy = folder / IMAGES
    try:
        if npy.stat().st_size != manifest["npy_bytes"]:
            return None, "its array has the wrong size (truncated or overwritten)"
        if checksum(npy, expected["files"]) != manifest["checksum"]:
            return None, "its array does not match the manifest's checksum"
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as e:
        return None, f"its array cannot be read ({e})"
    if images.dtype != np.uint8 or list(images.shape) != shape:
        return None, f"its array has shape {images.shape}, not {tuple(shape)}"
    return (images, labels, skipped), None


def describe_changes(cached: list, current: list) -> str | None:
    """What changed in the folder since the cache was made, in a few words; None if nothing."""
    if cached == current:
        return None
    before = {path: (size, mtime) for path, size, mtime in cached}
    after = {path: (size, mtime) for path, size, mtime in current}
    counts = {"added": len(after.keys() - before.keys()), "removed": len(before.keys() - after.keys()),
              "changed": sum(before[p] != after[p] for p in before.keys() & after.keys())}
    if not any(counts.values()):
        return "the folder's files are listed in another order"
    return "the folder changed (files " + ", ".join(f"{what}: {n}" for what, n in counts.items() if n) + ")"


def write_cache(folder: Path, expected: dict, shape: tuple[int, ...], build: Build) -> tuple[np.memmap, list, int]:
    """Decode into a new cache in `folder` (module docstring: the order of the writes) and
    open it. Raises OSError when the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    # First: from here until the new manifest is in place, a crash leaves no valid-looking cache.
    (folder / MANIFEST).unlink(missing_ok=True)
    npy = folder / IMAGES
    tmp = npy.with_name(f".{npy.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        # Read-write (a mapping needs it), mode 0666 less the umask as gankit.files makes its files.
        with os.fdopen(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), "wb+") as f:
            labels, skipped = write_npy(f, shape, build)
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(folder)
    manifest = {**expected, "shape": [len(labels), *shape[1:]], "labels": labels, "skipped": skipped,
                "npy_bytes": npy.stat().st_size, "checksum": checksum(npy, expected["files"])}
    write_atomic(folder / MANIFEST, json.dumps(manifest, separators=(",", ":")).encode())
    return np.load(npy, mmap_mode="r"), labels, skipped


def write_npy(f, shape: tuple[int, ...], build: Build) -> tuple[list[int], int]:
    """A .npy file of the kept images in the open file f: build() decodes straight into the
    mapped file (never the whole dataset in memory), which is then cut to the kept rows.
    The header goes last, once the number of readable images is known."""
    row = math.prod(shape[1:])
    preallocate(f, HEADER_BYTES + shape[0] * row)
    rows = np.memmap(f, dtype=np.uint8, mode="r+", offset=HEADER_BYTES, shape=shape)
    labels, skipped = build(rows)
    rows.flush()
    del rows  # unmapped before the file is cut short: a mapped page past the end would be a SIGBUS
    f.seek(0)
    f.write(npy_header((len(labels), *shape[1:])))
    f.truncate(HEADER_BYTES + len(labels) * row)
    f.flush()
    os.fsync(f.fileno())
    return labels, skipped


def preallocate(f, nbytes: int) -> None:
    """Claim the disk space up front: a write through a mapping to a full disk is a SIGBUS,
    which kills the process, where this raises an OSError that costs only the cache."""
    f.truncate(nbytes)
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # A file system without fallocate: the sparse file from truncate has to do.


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy (format 1.0) header for a C-order uint8 array of `shape`, padded with spaces to
    HEADER_BYTES as the format allows, so that its size is known before the shape is."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    magic = np.lib.format.magic(1, 0)
    pad = HEADER_BYTES - len(magic) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return magic + struct.pack("<H", HEADER_BYTES - len(magic) - 2) + (text + " " * pad + "\n").encode("latin1")


def checksum(npy: Path, files: list) -> str:
    """sha256 of the file's size, its first and last MiB, and the file list it was made from.

    Not of the whole file: that would read the whole dataset at every start, the cost the
    cache exists to avoid. The size catches a truncated file, the two ends a damaged header
    or the tail of an interrupted write, and the file list an array left by another build;
    damage in the middle of a large array goes unnoticed."""
    digest = hashlib.sha256()
    with open(npy, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(str(size).encode())
        digest.update(f.read(MIB))
        f.seek(max(MIB, size - MIB))
        digest.update(f.read(MIB))
    digest.update(json.dumps(files, separators=(",", ":")).encode())
    return digest.hexdigest()


MEMORY_LIMIT_ENV = "GANKIT_MEMORY_LIMIT"  # e.g. "8G": the memory gankit takes as its own to use


def available_memory() -> int | None:
    """Bytes of memory this process can still take: MemAvailable (free memory plus the page
    cache the kernel can drop), or os.sysconf's free pages where there is no /proc, lowered
    to a cgroup v2 limit's headroom inside a container, and to $GANKIT_MEMORY_LIMIT (bytes, or
    with a K, M or G suffix) where set: a limit gankit cannot see (a batch system's share of a
    node), or a benchmark's; None when nothing says."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    for limit in (cgroup_headroom(), memory_limit_from_env()):
        if limit is not None:
            available = limit if available is None else min(available, limit)
    return available


def memory_limit_from_env() -> int | None:
    """$GANKIT_MEMORY_LIMIT in bytes ("2G", "512M", "1.5G", "1000000"); None when unset or
    empty. Anything else (inf, nan, -1, abc, 1e400, 8GB) is a UserError, in one line: a limit
    guessed at would put a dataset in memory it does not fit in, or stream one that fits."""
    raw = os.environ.get(MEMORY_LIMIT_ENV, "")
    text = raw.strip().upper()
    if not text:
        return None
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMG]?)", text)  # digits only: no inf, nan, sign or exponent
    if match is None:
        raise UserError(f"{MEMORY_LIMIT_ENV}={raw!r} is not an amount of memory; set it to bytes (e.g. "
                        f"{MEMORY_LIMIT_ENV}=8000000000) or with a K, M or G suffix (e.g. 8G), or unset it")
    number, suffix = match.groups()
    # Decimal: exact, where a float would make 400 digits inf (and int(inf) an OverflowError).
    return int(Decimal(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[suffix])


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """A container's memory limit less what it uses (its inactive page cache counted as free,
    as MemAvailable counts it), when it has a limit: /proc/meminfo shows the host's memory."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((root / "memory.current").read_text())
        stat = dict(line.split() for line in (root / "memory.stat").read_text().splitlines())
        return max(0, int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        return None


def fits_in_memory(nbytes: int, *, fraction: float = 0.5, limit: int | None = None) -> bool:
    """Whether an array of nbytes takes at most `fraction` of the available memory (`limit`
    bytes when given, for tests and benchmarks; else available_memory(); unknown: yes)."""
    available = available_memory() if limit is None else limit
    return available is None or nbytes <= fraction * available


# The memmap behind each tensor mapped_tensor made, by the address of the tensor's storage:
# a tensor cannot say where its memory comes from, and ImageData has no field for it.
_MAPPED: dict[int, weakref.ref] = {}


def mapped_tensor(array: np.memmap) -> torch.Tensor:
    """A tensor on a read-only memmap (np.load(mmap_mode="r")), sharing its pages: reading
    it reads the file, as far as it is read, and is_memory_mapped says so.

    PyTorch warns that the array is not writable (silenced here) and it stays so: writing
    to the tensor is a segmentation fault, the pages being mapped read-only; nothing in
    gankit writes into a dataset's images. mmap_mode="c" (copy-on-write) would make it
    writable, but Linux counts such a mapping as committed memory and refuses one larger
    than memory plus swap, the very case this is for."""
    advise_random(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    for address in [a for a, ref in _MAPPED.items() if ref() is None]:
        del _MAPPED[address]
    _MAPPED[tensor.untyped_storage().data_ptr()] = weakref.ref(array)  # the tensor keeps the memmap alive
    return tensor


def advise_random(array: np.memmap) -> None:
    """Tell the kernel that the mapping is read at random (a batch's images are anywhere in
    it): no read-ahead, so the page cache holds the pages batches need rather than the
    neighbours a sequential reader would want next."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mapping.madvise(mmap.MADV_RANDOM)
        except OSError:  # advice only: a system that does not take it reads ahead as before
            pass


def is_memory_mapped(tensor) -> bool:
    """Whether `tensor`, or the tensor it is a view of, came from mapped_tensor."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
        return False
    ref = _MAPPED.get(tensor.untyped_storage().data_ptr())
    return ref is not None and ref() is not None
