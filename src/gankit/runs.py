"""Runs: a task built from a config, a run folder loaded for sampling, the state to resume.

Everything that is not the training loop but needs a trained model goes through here:
`gankit sample`, `serve`, `export`, `eval` and `eval-nll` call `load_run`, which builds
the task without optimizers. `gankit train` calls `build_task` and, to go on with a run,
`resume_with`. The checkpoint's format itself is gankit.checkpoint's.

Run folders: gankit writes only into its own. `is_run` is the one rule of what a run is;
a new run goes into a missing or empty folder only, or one where gankit's own start ended
before its first checkpoint (`check_new_out`); a training session holds its folder with
`open_out`, one writer at a time (gankit.runlock).
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import torch

from gankit.checkpoint import LAST, PREV, about, find_checkpoint, load_checkpoint, restore
from gankit.config import TrainConfig
from gankit.data import ImageData
from gankit.errors import UserError
from gankit.files import TEMP_SUFFIX
from gankit.registry import conditional_needs_labels, dataset_spec, load_data, task_class
from gankit.resolve import resolve
from gankit.runlock import LOCK, check_free, run_lock


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
    """(config, state) to go on with a run folder, or from a checkpoint file in its
    checkpoints/, with `changes` (setting -> value) applied; UserError for a setting that
    cannot change on resume. The CLI and gankit.Run.resume both come through here."""
    fixed = sorted(k for k in changes if k not in RESUME_OVERRIDES)
    if fixed:
        flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise UserError(f"{flags} cannot change when resuming; a resumed run keeps its checkpoint's settings "
                        f"(you may change {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES[:3])})")
    folder = run_of(Path(run))
    seen = stamp(find_checkpoint(Path(run)))  # before reading: a save during the read shows as a change
    config, state = resume_state(Path(run))
    state[READ_FROM] = (str(run), seen)
    config = dataclasses.replace(config, **changes, out=str(folder))
    return config, state


def run_of(path: Path) -> Path:
    """The run folder a resume of `path` writes: the folder itself, or for a checkpoint file
    in a run's checkpoints/ the folder two levels up. A file elsewhere belongs to no run."""
    if not path.is_file():
        return path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    raise UserError(f"'{path}' is a checkpoint file outside a run folder; a resume goes on with a run folder "
                    "and writes into it: pass the folder that `gankit train --out` wrote")


# The state's note of the checkpoint it was read from, (what was given, stamp): resume_with
# writes it, the training loop checks it once it holds the folder's lock. Never saved
# (a checkpoint is made afresh by checkpoint.make_state).
READ_FROM = "read_from"


def stamp(path: Path) -> tuple:
    """What changes when a checkpoint is written: a save renames a new file into place."""
    st = path.stat()
    return str(path), st.st_ino, st.st_mtime_ns, st.st_size


def check_unchanged(out: Path, state: dict) -> None:
    """UserError when the run saved another checkpoint since `state` was read (another
    process wrote it until a moment ago): going on from the old one would undo that work."""
    given, seen = state.get(READ_FROM, (None, None))
    if given is None:  # a state that resume_with did not read: nothing to compare
        return
    try:
        now = stamp(find_checkpoint(Path(given)))
    except (OSError, UserError):
        now = None
    if now != seen:
        raise UserError(f"'{out}' got a new checkpoint while this resume was starting (another process was "
                        "writing it); resume again to go on from the newest")


class LoadedRun(NamedTuple):
    config: TrainConfig  # as trained
    task: object         # built without optimizers, in eval-ready state
    state: dict          # the checkpoint
    native: int          # the data's image size: what samples come out at


# Settings of how a trained run samples, which `gankit sample`, `eval`, `serve` and gankit.load
# may change (the weights stay the run's): a flow's ODE solver. Each is a TrainConfig field,
# so its flag, help and check are the training flag's.
SAMPLING_OVERRIDES = ("ode_steps", "solver", "guidance")


def with_sampling(config: TrainConfig, changes: dict | None) -> TrainConfig:
    """`config` with sampling settings changed (SAMPLING_OVERRIDES; None values left as they
    are), resolved and checked again: a setting another model's run does not take ("--ode-steps
    applies to the flow model only") and a bad value are refused as training refuses them."""
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    unknown = sorted(set(changes) - set(SAMPLING_OVERRIDES))
    if unknown:
        raise UserError(f"'{unknown[0]}' is not a sampling setting; a trained run's sampling may change "
                        f"{', '.join(SAMPLING_OVERRIDES)}")
    if not changes:
        return config
    return resolve(dataclasses.replace(config, **changes))


def load_run(run: Path, device: str = "cpu", sampling: dict | None = None) -> LoadedRun:
    """A run folder's newest checkpoint (or a checkpoint file), ready to sample on `device`,
    with `sampling` (setting -> value, SAMPLING_OVERRIDES) in place of the run's own."""
    config, state = resume_state(Path(run))
    config = with_sampling(config, sampling)
    native = about(state).native_size or config.image_size
    task = build_task(config, config.channels, pick_device(device), native, state, optimizers=False)
    return LoadedRun(config, task, state, native)


def is_run(folder: Path) -> bool:
    """The one rule of what a run is: a folder whose checkpoints/ holds last.pt or prev.pt,
    what `sample`, `serve`, `eval` and a resume load (a half-run with prev.pt alone counts).
    gankit starts a new run only where there is no run and nothing else either."""
    return any((Path(folder) / "checkpoints" / name).is_file() for name in (LAST, PREV))


def check_new_out(out: Path) -> None:
    """Say why `out` cannot take a new run: it holds a run, it is a file, or it holds
    something gankit did not write (`foreign`). A new run goes into a missing or empty
    folder, or one where a start of gankit's own ended before its first checkpoint."""
    if is_run(out):
        raise UserError(f"'{out}' already holds a run; resume it with `gankit train --resume {out}` "
                        "or pick another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder; pick another --out")
    found = foreign(out) if out.is_dir() else []
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise UserError(f"'{out}' is not empty and holds no gankit run ({shown}); a new run goes into a "
                        "missing or empty folder: pick another --out")


# What a session writes before its first checkpoint (open_out, then setup), folder by folder.
BEFORE_FIRST_CHECKPOINT = {"": {LOCK, ".write-test", "config.json", "samples", "checkpoints"},
                           "samples": {"real.png"}, "checkpoints": set()}


def foreign(out: Path) -> list[str]:
    """What in the folder `out` a new run must not write over: all but gankit's lock file;
    where that lock file shows that gankit made the folder, all but what a session writes
    before its first checkpoint (and the temporaries of those writes). A start stopped
    there (Ctrl+C, an error) is gankit's own, with nothing to lose: run again to start over."""
    if not (out / LOCK).is_file():
        return sorted(p.name for p in out.iterdir() if p.name != LOCK)
    found = []
    for sub, own in BEFORE_FIRST_CHECKPOINT.items():
        folder = out / sub
        if sub and not folder.is_dir():
            found += [sub] if folder.exists() else []
            continue
        found += [f"{sub}/{p.name}" if sub else p.name for p in folder.iterdir()
                  if p.name not in own and not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))]
    return sorted(found)


@contextmanager
def open_out(out: Path, resuming: bool):
    """Hold the run folder for writing inside the block: made if missing, locked against a
    second writer (gankit.runlock), and checked, or UserError saying why it cannot be."""
    with ExitStack() as held:
        try:
            if not resuming:  # before anything is written: a folder that is not ours stays untouched
                check_free(out)  # a session at work there is said first
                check_new_out(out)
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(run_lock(out))
            if not resuming:
                check_new_out(out)  # again, holding the lock: another may have started here meanwhile
            (out / "samples").mkdir(exist_ok=True)
            (out / "checkpoints").mkdir(exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:  # an unreadable folder too (check_new_out lists it)
            raise UserError(f"cannot write to the out folder '{out}' ({e.strerror or e}); "
                            "pick a writable --out") from None
        yield out


def default_out(config: TrainConfig) -> Path:
    """runs/<model>-<dataset>, or -2, -3, ...: the first of them that is missing (a new run
    goes into no existing folder, not even an empty one of the user's)."""
    base = Path("runs") / f"{config.model}-{config.dataset}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out
