"""Writing files so that a crash never leaves half of one: the one atomic writer; and
reading what comes from outside: strict JSON, a URL's bytes with a size limit.

Every file gankit writes (config.json, checkpoints, sample grids, .npz arrays, caches)
goes through `write_atomic`: the bytes go to a temporary file in the same folder,
are flushed and fsynced, and the temporary file is renamed over the target (a rename
within one file system is atomic), then the folder is fsynced so that the rename
itself survives a power cut. A reader sees the old file or the new one, never a mix.

The temporary file is created with mode 0666 and the process's umask applied, as
`open()` would create the target itself (tempfile.mkstemp would make it 0600, and the
rename would keep that, locking a teammate or a server under another user out).
Temporary files are named `.<name>.<random>.tmp`, the name cut short where that would
pass the file system's limit on a name (NAME_MAX, 255 bytes on most), so that any name
the target can have can be written; `remove_stale_temps` deletes the ones a killed
process left behind.

Only a regular file is ever replaced (or created). A symbolic link is followed and the
file it points to replaced, the link kept. A FIFO or a character device (/dev/null, a
terminal, a pipe given as /dev/stdout) is written to in place, as `open()` would: a
rename would put a regular file where the device was. A directory, a socket or a block
device is refused with an OSError, nothing written.

`loads_strict` reads JSON that gankit wrote and a damaged or hostile copy may not be:
NaN, Infinity and numbers too large for a float, and nesting too deep to read, are
refused with a ValueError, as everything else json refuses is.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes in a file name, where the file system does not say (pathconf)


def temp_name(name: str, name_max: int = NAME_MAX) -> str:
    """`.<name>.<8 hex>.tmp`, name cut (by whole characters) so that the whole name takes
    at most name_max bytes: the 14 bytes added would otherwise make a valid 242- to
    255-byte name "File name too long". It still starts with "." and ends with ".tmp",
    as remove_stale_temps looks for; the random part keeps cut names apart."""
    token = secrets.token_hex(4)
    room = name_max - len(f"..{token}{TEMP_SUFFIX}")
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}.{token}{TEMP_SUFFIX}"


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that `folder`'s file system takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or the file system does not say
        return NAME_MAX


def _create_temp(path: Path) -> tuple[int, Path]:
    """(fd, path) of a new, empty temporary file beside `path`, mode 0666 less the umask."""
    limit = name_max(path.parent)
    while True:
        tmp = path.with_name(temp_name(path.name, limit))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # 1 in 4 billion: draw another name
            continue


def replaced_file(path: Path) -> Path | None:
    """The regular file that writing `path` replaces (the target of a symbolic link, followed
    to the end; `path` itself when it does not exist yet), or None for a FIFO or character
    device, which is written in place. Raises OSError for what cannot be written either way."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:
        mode = None
    if mode is None or stat.S_ISREG(mode):
        # Resolved, the temporary file sits beside the real file (a rename cannot cross file
        # systems) and the rename replaces that file, not the link. A dangling link: its target.
        return Path(os.path.realpath(path)) if os.path.islink(path) else path
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    raise OSError(errno.EINVAL, "Not a file, FIFO or character device (a socket or block device)", str(path))


def write_in_place(path: Path, data: bytes) -> Path:
    """Write to a FIFO or character device as open() would (a FIFO waits for its reader)."""
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_atomic(path: Path, data: bytes, *, before_replace: Callable[[], None] | None = None) -> Path:
    """Write `data` to `path` atomically (module docstring). `before_replace`, if given,
    runs after the data is durable and just before the rename (checkpoint.py keeps the
    previous checkpoint there; not for a device, written in place, with nothing to keep).
    Raises OSError; a regular file is untouched then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = replaced_file(path)
    if target is None:
        return write_in_place(path, data)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)
    return path


def write_json(path: Path, obj) -> Path:
    return write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def loads_strict(text: str | bytes) -> Any:
    """json.loads, refusing with a ValueError what Python's json takes and JSON does not:
    NaN, Infinity, -Infinity, a number too large for a float (1e400 would be inf), and
    nesting too deep to read (RecursionError inside json, a traceback otherwise)."""
    def refuse(word: str):
        raise ValueError(f"{word} is not a JSON number")

    def finite(word: str) -> float:
        number = float(word)
        if not math.isfinite(number):
            raise ValueError(f"{word} is too large for a number")
        return number

    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None


def read_json(path: Path) -> Any:
    """The JSON in the file at `path`, read by loads_strict. Raises OSError or ValueError."""
    return loads_strict(Path(path).read_bytes())


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
