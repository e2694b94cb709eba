"""Runs: a task built from a config, a run folder loaded for sampling, the state to resume.

Everything that is not the training loop but needs a trained model goes through here:
`gankit sample`, `serve`, `export`, `eval` and `eval-nll` call `load_run`, which builds
the task without optimizers. `gankit train` calls `build_task` and, to go on with a run,
`resume_state`. The checkpoint's format itself is gankit.checkpoint's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch

from gankit.checkpoint import about, find_checkpoint, load_checkpoint, restore
from gankit.config import TrainConfig
from gankit.data import ImageData
from gankit.errors import UserError
from gankit.registry import conditional_needs_labels, dataset_spec, load_data, task_class
from gankit.resolve import resolve


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for but PyTorch sees no CUDA GPU; use --device cpu "
                        "(or install a CUDA build of PyTorch, see the README)")
    try:
        return torch.device(name)
    except RuntimeError:  # torch's own message lists twenty device types
        raise UserError(f"--device {name[:40]!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def build_task(config: TrainConfig, channels: int, device: torch.device, native_size: int,
               state: dict | None = None, *, optimizers: bool = True):
    """The config's task with its seeded initial weights, then `state` (a checkpoint) loaded
    into it if given. optimizers=False: a task that only samples."""
    torch.manual_seed(config.seed)
    task = task_class(config.model)(config, channels=channels, device=device, native_size=native_size,
                                    optimizers=optimizers)
    if state is not None:
        restore(task, state, config)
    return task


def load_split(config: TrainConfig, split: str, log=None) -> ImageData:
    """One split of a run's data, as the run's settings ask for it (--subset: the train
    split's first N images)."""
    data = load_data(config, split, log)
    if split == "train" and config.subset:
        data = dataclasses.replace(data, images=data.images[:config.subset], labels=data.labels[:config.subset])
    return data


def has_test_split(config: TrainConfig) -> bool:
    return "test" in dataset_spec(config.dataset).splits


def resolve_data_config(config: TrainConfig, data: ImageData) -> TrainConfig:
    """Fill in the sizes that depend on the data, so config.json says what really ran."""
    if task_class(config.model).native_pixels:
        size = data.native_size
    else:
        size = config.image_size or dataset_spec(config.dataset).image_size
    num_classes = config.num_classes
    if config.conditional:
        if len(data) == 0 or int(data.labels.min()) < 0:  # a folder without class subfolders
            raise UserError(conditional_needs_labels())
        # A dataset's own class count (a small --stacked-size may not draw all 1000), else the data's.
        found = dataset_spec(config.dataset).num_classes or int(data.labels.max()) + 1
        num_classes = num_classes or found
        if found > num_classes:
            raise UserError(f"the data has labels up to {found - 1}, but this run was made for "
                            f"{num_classes} classes; train a new run on this data")
    return dataclasses.replace(config, image_size=size, channels=data.channels, num_classes=num_classes)


def resume_state(run: Path) -> tuple[TrainConfig, dict]:
    """(config, state) of a run folder's newest checkpoint (or a checkpoint file)."""
    state = load_checkpoint(find_checkpoint(run))
    return saved_config(state["config"], f"'{run}'", kind=state.get("kind")), state


def saved_config(saved, where: str, kind=None) -> TrainConfig:
    """The resolved TrainConfig of a saved one (a checkpoint's, an export's): settings gankit
    has gained since take their defaults, which leave the model as it was. `where`: whose
    settings they are, as messages say it ("'runs/x'"); `kind`: the model a checkpoint says
    its weights are (None: not recorded)."""
    if not isinstance(saved, dict):
        raise UserError(f"the saved config in {where} is not a mapping of settings; it was not written by gankit")
    if kind is not None and saved.get("model") != kind:
        raise UserError(f"the checkpoint in {where} holds {kind!r:.30} weights but its saved settings say --model "
                        f"{saved.get('model')!r:.30}; it was changed or damaged: use the run's own checkpoint")
    try:
        return resolve(TrainConfig.from_dict(saved))
    except TypeError as e:
        raise UserError(f"the saved config in {where} is unreadable ({e})") from None
    except UserError as e:  # a value gankit refuses: say whose it is
        raise UserError(f"the settings saved in {where} cannot be used: {e}") from None


# Settings that may change when a run is resumed; everything else comes from its checkpoint.
RESUME_OVERRIDES = ("epochs", "max_steps", "device", "progress", "data_dir", "save_every", "eval_every",
                    "precision", "cuda_graph", "tensorboard", "cache_dir")


def resume_with(run: Path, changes: dict) -> tuple[TrainConfig, dict]:
    """(config, state) to go on with a run, with `changes` (setting -> value) applied;
    UserError for a setting that cannot change on resume. The CLI and gankit.Run.resume
    both come through here."""
    fixed = sorted(k for k in changes if k not in RESUME_OVERRIDES)
    if fixed:
        flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise UserError(f"{flags} cannot change when resuming; a resumed run keeps its checkpoint's settings "
                        f"(you may change {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES[:3])})")
    config, state = resume_state(Path(run))
    config = dataclasses.replace(config, **changes, out=str(Path(run)))
    return config, state


class LoadedRun(NamedTuple):
    config: TrainConfig  # as trained
    task: object         # built without optimizers, in eval-ready state
    state: dict          # the checkpoint
    native: int          # the data's image size: what samples come out at


def load_run(run: Path, device: str = "cpu") -> LoadedRun:
    """A run folder's newest checkpoint (or a checkpoint file), ready to sample on `device`."""
    config, state = resume_state(Path(run))
    native = about(state).native_size or config.image_size
    task = build_task(config, config.channels, pick_device(device), native, state, optimizers=False)
    return LoadedRun(config, task, state, native)


def prepare_out(out: Path, resuming: bool) -> None:
    """Make the run folder, or say why it cannot be the run folder."""
    if not resuming and (out / "checkpoints" / "last.pt").exists():
        raise UserError(f"'{out}' already holds a run; resume it with `gankit train --resume {out}` "
                        "or pick another --out")
    try:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the out folder '{out}' ({e.strerror}); "
                        "pick a writable --out") from None


def default_out(config: TrainConfig) -> Path:
    """runs/<model>-<dataset>, or -2, -3, ... when that already exists."""
    base = Path("runs") / f"{config.model}-{config.dataset}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out
