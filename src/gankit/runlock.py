"""One writer per run folder: an exclusive lock on RUN/.lock, held while a session writes.

`gankit train` (a new run or a resume) holds it from before it writes anything in the
folder until after its last save; readers (`sample`, `serve`, `eval`, gankit.load) never
take it. It is `flock(LOCK_EX | LOCK_NB)` on the file, so:
- the kernel drops it when the holder's process ends in any way (SIGKILL, a crash, a
  power cut): a lock is never stale, and nothing has to clean it up;
- it holds between two processes and also within one (two threads, two calls): flock
  belongs to an open file, and each `run_lock` opens the file anew;
- a second writer is refused at once, never kept waiting, and told who holds it: the
  holder writes its PID and host into the file once it holds the lock;
- `check_free` asks without writing (a shared lock, given back at once), for a refusal
  that must leave the folder as it was.
(O_NONBLOCK on both opens: a FIFO named .lock must not hang the open.)
The file stays in the folder (it is empty after a session that ended by itself): removing
it would race with a process that has just opened it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from contextlib import contextmanager
from pathlib import Path

from gankit.errors import UserError

LOCK = ".lock"


def busy(folder: Path, fd: int) -> UserError:
    """The refusal of a second writer, naming the holder as it wrote itself into the file
    ("PID 123 on host"; nothing yet when it took the lock a moment ago)."""
    words = os.pread(fd, 300, 0).decode(errors="replace").split()
    who = f" (PID {words[0]} on {words[1]})" if len(words) >= 2 and words[0].isdigit() else ""
    return UserError(f"'{folder}' is being written by another gankit process{who}; wait for it to end "
                     "(or stop it), then resume, or pick another --out")


def check_free(folder: Path) -> None:
    """UserError (run_lock's) when a session holds `folder`'s lock; writes nothing, so that
    a folder gankit then refuses to start a run in stays as it was."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # no lock file (or none that can be read): run_lock says what is wrong
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with a holder's LOCK_EX only
    except BlockingIOError:
        raise busy(folder, fd) from None
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def run_lock(folder: Path):
    """Hold `folder`'s lock inside the block; UserError when another process (or another
    call in this one) holds it. Raises OSError when the folder cannot be written."""
    path = Path(folder) / LOCK
    not_ours = UserError(f"'{path}' is not a lock file gankit made; move it away, then run again")
    try:  # O_NOFOLLOW: a link named .lock is not gankit's, and the PID must not land where it points
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                     0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise not_ours from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise not_ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(folder, fd) from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks
            raise UserError(f"cannot lock '{path}' ({e.strerror or errno.errorcode.get(e.errno, e)}); "
                            "this file system does not lock files: pick an --out on a local disk") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname() or 'localhost'}\n".encode(), 0)
        try:
            yield path
        finally:
            try:
                os.ftruncate(fd, 0)  # a free lock names nobody
            except OSError:  # the lock goes anyway; the exception on its way out matters more
                pass
    finally:
        os.close(fd)  # releases the lock
