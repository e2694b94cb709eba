"""Checkpoints: complete, atomic, and never unpickled beyond plain tensors and containers.

A checkpoint holds everything a run needs to go on as if it had never stopped:
model and optimizer states, the step, the RNG states, the running epoch sums,
the config and the gankit version.

Writing: to a temporary file in the same folder, flushed and fsynced, then renamed
over last.pt (a rename within one file system is atomic). The previous last.pt
is kept as prev.pt (a hard link, made before the rename), so at every moment last.pt
is a complete checkpoint, and prev.pt the one before it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from gankit.errors import UserError

LAST = "last.pt"
PREV = "prev.pt"


def states_digest(states: dict[str, dict[str, torch.Tensor]]) -> str:
    """SHA-256 of named state dicts ({"generator": {...}, ...}): every tensor's name and
    bytes, in sorted order. Equal exactly when the weights are equal bit for bit."""
    h = hashlib.sha256()
    for name, state in sorted(states.items()):
        for key, t in sorted(state.items()):
            if torch.is_tensor(t):
                h.update(f"{name}.{key}".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(state: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".last-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        last = folder / LAST
        if last.exists():
            keep_previous(last, folder / PREV)
        os.replace(tmp, last)
        _fsync_dir(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return last


def keep_previous(last: Path, prev: Path) -> None:
    """prev.pt becomes a second name of the current last.pt, so last.pt never goes missing;
    where hard links are not supported, last.pt is renamed (a moment with only prev.pt)."""
    link = prev.with_name(".prev-link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(last, link)
        os.replace(link, prev)
    except OSError:
        os.replace(last, prev)


def _fsync_dir(folder: Path) -> None:
    """Make the renames themselves durable (POSIX); a no-op where directories cannot be opened."""
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
    """Temporary files left by a save that was killed halfway; never a complete checkpoint."""
    for tmp in [*folder.glob(".last-*.tmp"), *folder.glob(".prev-link.tmp")]:
        tmp.unlink(missing_ok=True)


def find_checkpoint(run: Path) -> Path:
    """The newest complete checkpoint of a run folder (or a .pt file given directly)."""
    if run.is_file():
        return run
    if not run.exists():
        raise UserError(f"run folder '{run}' does not exist; pass the folder that `gankit train --out` wrote")
    for name in (LAST, PREV):
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    raise UserError(f"no checkpoint in '{run}/checkpoints'; train first (`gankit train --out {run}`)")


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load with weights_only=True: a checkpoint can hold tensors, never code."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a damaged file can fail anywhere inside torch.load

        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint '{path}' is corrupt or not a gankit checkpoint ({reason[:200]}); "
                        "use another checkpoint or start a new run") from None
    if not isinstance(state, dict) or "config" not in state or "modules" not in state:
        raise UserError(f"'{path}' is not a gankit checkpoint (no config or model states)")
    return state
