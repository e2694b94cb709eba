"""Checkpoints: the one owner of their format. Complete, atomic, and never unpickled
beyond plain tensors and containers.

A checkpoint holds everything a run needs to go on as if it had never stopped
(`make_state` builds it, `load_checkpoint` reads and checks it, `restore` puts it into a
task); its keys:
- gankit_version, kind (the model's name), config (TrainConfig.to_dict());
- step, dataset_size, native_size (the data's image size, for sampling);
- modules and optimizers: name -> state dict, as the task names them;
- rng: {"cpu", "cuda"} of rank 0, and under torchrun "ranks", one {"cpu", "cuda",
  "epoch_sums"} per rank; epoch_sums: rank 0's running sums of the current epoch;
- weights_digest (torchrun only): states_digest of the modules, which every rank checked.
Checkpoints of gankit 0.1.0 have exactly these keys; tests/fixtures/v0.1.0 holds some.

Writing: gankit.files.write_atomic, so last.pt is always a complete checkpoint. The
previous last.pt is kept as prev.pt (a hard link, made just before the rename), so at
every moment last.pt is a complete checkpoint, and prev.pt the one before it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import NamedTuple

import torch

from gankit.errors import UserError
from gankit.files import write_atomic
from gankit.version import __version__

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


def make_state(config, task, *, step: int, dataset_size: int, native_size: int, rng: dict,
               epoch_sums: dict, weights_digest: str | None = None) -> dict:
    """The checkpoint of a task at `step` (the module docstring lists the keys)."""
    state = {
        "gankit_version": __version__,
        "kind": config.model,
        "config": config.to_dict(),
        "step": step,
        "dataset_size": dataset_size,
        "native_size": native_size,
        "modules": {k: m.state_dict() for k, m in task.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
        "rng": rng,
        "epoch_sums": epoch_sums,
    }
    if weights_digest is not None:
        state["weights_digest"] = weights_digest
    return state


def save_checkpoint(state: dict, folder: Path) -> Path:
    """Write `state` as folder/last.pt, the previous one kept as prev.pt. Raises OSError."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    last = folder / LAST
    return write_atomic(last, buffer.getvalue(),
                        before_replace=lambda: keep_previous(last, folder / PREV) if last.exists() else None)


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


class About(NamedTuple):
    """What a checkpoint says about its run, besides the weights and the config."""

    step: int
    dataset_size: int        # images in the training data (0: not recorded)
    native_size: int | None  # the data's image size (None: not recorded, the network's size)
    trained_with: str | None  # the gankit version that wrote it


def about(state: dict) -> About:
    native = state.get("native_size")
    return About(step=int(state.get("step", 0)), dataset_size=int(state.get("dataset_size", 0)),
                 native_size=None if native is None else int(native), trained_with=state.get("gankit_version"))


def digest(state: dict) -> str:
    """states_digest of a checkpoint's modules: it changes whenever the weights do."""
    return states_digest(state["modules"])


# The settings every model's weights take their shapes from; a task adds its own (shape_settings).
SHAPE_SETTINGS = ("model", "image_size", "channels", "conditional", "num_classes")


def restore(task, state: dict, config) -> None:
    """Load a checkpoint's module states (and optimizer states, where the task has
    optimizers) into a task, or say which part does not fit (naming the settings that give
    the weights their shapes)."""
    shaping = (*SHAPE_SETTINGS, *type(task).shape_settings)
    settings = ", ".join(f"{k}={getattr(config, k)}" for k in shaping if getattr(config, k) is not None)
    saved = state.get("modules", {})
    for name, module in task.modules.items():
        if name not in saved:
            raise UserError(f"checkpoint holds no '{name}' weights (it holds: {', '.join(saved) or 'none'}); "
                            f"it is not a {config.model} checkpoint")
        own = module.state_dict()
        for key, value in saved[name].items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise UserError(f"checkpoint does not fit its config ({settings}): {name}.{key} has shape "
                                f"{tuple(value.shape)} in the file but {tuple(own[key].shape)} for these settings")
        try:
            module.load_state_dict(saved[name])
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise UserError(f"checkpoint does not fit its config ({settings}): {first}") from None
    for name, opt in task.optimizers.items():
        try:
            opt.load_state_dict(state["optimizers"][name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"checkpoint's optimizer state for '{name}' does not fit ({type(e).__name__}: "
                            f"{str(e)[:120]})") from None


def rank_state(state: dict, rank: int, world: int) -> tuple[dict | None, int]:
    """(this rank's random state and epoch sums, or None, and how many processes trained
    the run). A run trained by as many ranks gives each its own; a run of another size
    gives rank 0 the run's rank-0 state and the others None (they start anew)."""
    saved = state["rng"]
    per_rank = saved.get("ranks")
    had = len(per_rank) if per_rank is not None else 1
    if per_rank is not None and had == world:
        return per_rank[rank], had
    if rank:
        return None, had
    return {**saved, "epoch_sums": saved.get("epoch_sums", state.get("epoch_sums", {}))}, had
