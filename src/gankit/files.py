"""Writing files so that a crash never leaves half of one: the one atomic writer.

Every file gankit writes (config.json, checkpoints, sample grids, .npz arrays, caches)
goes through `write_atomic`: the bytes go to a temporary file in the same folder,
are flushed and fsynced, and the temporary file is renamed over the target (a rename
within one file system is atomic), then the folder is fsynced so that the rename
itself survives a power cut. A reader sees the old file or the new one, never a mix.

The temporary file is created with mode 0666 and the process's umask applied, as
`open()` would create the target itself (tempfile.mkstemp would make it 0600, and the
rename would keep that, locking a teammate or a server under another user out).
Temporary files are named `.<name>.<random>.tmp`; `remove_stale_temps` deletes the
ones a killed process left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _create_temp(path: Path) -> tuple[int, Path]:
    """(fd, path) of a new, empty temporary file beside `path`, mode 0666 less the umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # 1 in 4 billion: draw another name
            continue


def write_atomic(path: Path, data: bytes, *, before_replace: Callable[[], None] | None = None) -> Path:
    """Write `data` to `path` atomically (module docstring). `before_replace`, if given,
    runs after the data is durable and just before the rename (checkpoint.py keeps the
    previous checkpoint there). Raises OSError; the target is untouched then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def write_json(path: Path, obj) -> Path:
    return write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def fsync_folder(folder: Path) -> None:
    """Make renames in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> None:
    """Delete the temporary files that a killed write left in `folder` (never a whole file:
    a complete write has been renamed away from its temporary name)."""
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


FETCH_TIMEOUT_S = 10.0  # per connect and per read, where the caller gives none: never wait forever


def fetch_url(url: str, max_bytes: int, timeout: float | None = None) -> bytes:
    """GET url, refusing a body above max_bytes (a wrong URL must not fill the disk)."""
    request = urllib.request.Request(url, headers={"User-Agent": "gankit"})
    with urllib.request.urlopen(request, timeout=timeout or FETCH_TIMEOUT_S) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"response is larger than {max_bytes} bytes")
    return data
