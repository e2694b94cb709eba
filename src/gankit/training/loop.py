"""The training loop: epochs, batches, logging, pictures, checkpoints and resume.

It reads top to bottom as one run. The model-specific part is a task object
(gankit.training.gan.GanTask, gankit.training.vae.VaeTask) with `modules`,
`optimizers`, `metric_names`, `step(batch, labels=None)`, `noise(n, generator)`,
`generate(z, labels=None)`, `pictures(fixed_z, shown)` and `evaluate(test, generator)`
(and optionally `grid_columns`, the per-epoch grids' width); the loop knows nothing
else about it. Labels reach the step only for a --conditional run.

Exact resume: the batch order of epoch e is a permutation seeded by (seed, e), so
the position inside an epoch follows from the step count alone; the global RNG
(which draws z) is saved and restored; so are the running sums of the epoch's
metrics. N steps straight and N/2 + resume + N/2 give identical weights on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

import gankit
from gankit import report, sampling
from gankit.board import open_board
from gankit.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from gankit.config import CONDITIONAL_NEEDS_LABELS, TrainConfig, parse_save_every, validate
from gankit.data import ImageData, default_image_size, load_dataset, to_model, to_native
from gankit.distributed import Ranks, noise_seed, weights_digest, world_size
from gankit.errors import UserError
from gankit.training.gan import GanTask
from gankit.training.runner import Batches, Stepper, resolve_precision
from gankit.training.vae import VaeTask

GRID = 64  # images in the per-epoch grids: 8x8, as in the tutorial
SYNC_EVERY = 25  # steps between the loop's reads of device values (and, under torchrun, the ranks' agreement)


class Diverged(UserError):
    """A loss became NaN or infinite. Exit code 3: the run, not the input, went wrong."""

    exit_code = 3


class Stopped(Exception):
    """Training stopped on SIGINT/SIGTERM after saving; exit code 128 + signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


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


def build_task(config: TrainConfig, channels: int, device: torch.device, native_size: int):
    if config.model == "dcgan":
        return GanTask(config, channels=channels, device=device)
    return VaeTask(config, channels=channels, device=device, native_size=native_size)


def make_task(config: TrainConfig, channels: int, device: torch.device, native_size: int,
              state: dict | None = None):
    """Build the task with its seeded initial weights, then load `state` into it if given."""
    torch.manual_seed(config.seed)
    task = build_task(config, channels, device, native_size)
    if state is not None:
        load_states(task, state, config)
    return task


SHAPE_SETTINGS = ("model", "image_size", "channels", "nz", "latent_dim", "width", "edge", "d_input_bn",
                  "conditional", "num_classes")


def load_states(task, state: dict, config: TrainConfig) -> None:
    """Load a checkpoint's states into a task, or say which part does not fit."""
    settings = ", ".join(f"{k}={getattr(config, k)}" for k in SHAPE_SETTINGS if getattr(config, k) is not None)
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


def resolve_data_config(config: TrainConfig, data: ImageData) -> TrainConfig:
    """Fill in the sizes that depend on the data, so config.json says what really ran."""
    if config.model == "vae-mlp":  # an MLP sees the native pixels, no padding
        size = data.native_size
    else:
        size = config.image_size or default_image_size(config.dataset)
    num_classes = config.num_classes
    if config.conditional:
        if len(data) == 0 or int(data.labels.min()) < 0:  # a folder without class subfolders
            raise UserError(CONDITIONAL_NEEDS_LABELS)
        # stacked-mnist: 1000 classes, though a small --stacked-size may not draw them all.
        found = 1000 if config.dataset == "stacked-mnist" else int(data.labels.max()) + 1
        num_classes = num_classes or found
        if found > num_classes:
            raise UserError(f"the data has labels up to {found - 1}, but this run was made for "
                            f"{num_classes} classes; train a new run on this data")
    return dataclasses.replace(config, image_size=size, channels=data.channels, num_classes=num_classes)


@contextmanager
def stop_requests():
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second SIGINT aborts."""
    requested: list[int] = []

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: no signal handling, nothing to restore
        old = {}
    try:
        yield requested
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _write_json(path: Path, obj) -> None:
    sampling.write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _trim_metrics(path: Path, step: int) -> None:
    """Keep only the metric lines a checkpoint at `step` has seen (a crash may leave more)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:  # a line cut short by a crash
            continue
    sampling.write_atomic(path, "".join(ln + "\n" for ln in kept).encode())


def prepare_out(out: Path, resuming: bool) -> None:
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


def train(config: TrainConfig, *, resume: dict | None = None, log=None) -> Path:
    """Train from scratch, or go on from a checkpoint's state. Returns the run folder.

    Under torchrun every rank calls this (gankit.distributed says what differs per rank);
    only rank 0 logs and writes."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    config = config.resolved()
    validate(config)
    device = pick_device(config.device)
    world = world_size()
    if config.batch_size % world:  # checked before the processes meet: each says it and leaves
        raise UserError(f"--batch-size {config.batch_size} (the global batch) does not split evenly over "
                        f"{world} processes; use a multiple of {world}")
    ranks = Ranks.start(device)
    try:
        return _train(config, resume, log if ranks.main else (lambda msg: None), ranks)
    finally:
        ranks.close()


def restore_rank(resume: dict, ranks: Ranks, seed: int, device: torch.device, log) -> dict:
    """Set this rank's random state from a checkpoint and return its epoch's running sums:
    its own when the run had as many ranks. Else rank 0 goes on with rank 0's, and each
    other rank starts its noise from a new seed derived from (seed, rank, step)."""
    saved = resume["rng"]
    per_rank = saved.get("ranks")
    if per_rank is not None and len(per_rank) == ranks.world:
        mine = per_rank[ranks.rank]
    else:
        had = len(per_rank) if per_rank is not None else 1
        if had != ranks.world:
            log(f"note: this run was trained by {had} process(es) and goes on with {ranks.world}; the data order "
                "and the global batch stay the same, the other ranks' noise starts from new seeds, so it goes on "
                "correctly but not bit for bit as it would have")
        if not ranks.main:
            torch.manual_seed(noise_seed(seed, ranks.rank) + resume["step"])
            return {}
        mine = saved
    torch.set_rng_state(mine["cpu"])
    if device.type == "cuda" and mine.get("cuda") is not None:
        torch.cuda.set_rng_state(mine["cuda"], device)
    return dict(mine.get("epoch_sums", resume.get("epoch_sums", {})))


def _train(config: TrainConfig, resume: dict | None, log, ranks: Ranks) -> Path:
    device = ranks.device
    # Data first: a missing dataset must fail before anything is written.
    data = ranks.main_first(lambda: load_dataset(
        config.dataset, split="train", data_dir=config.data_dir, image_size=config.image_size,
        channels=config.channels, fake_size=config.fake_size, stacked_size=config.stacked_size,
        seed=config.seed, log=log))
    config = resolve_data_config(config, data)
    if config.batch_size > len(data):
        raise UserError(f"--batch-size {config.batch_size} is larger than the dataset "
                        f"({len(data)} images); use a smaller batch size")
    # Rank 0 picks and prepares the run folder; the others learn where it is, or its error.
    error = None
    if ranks.main:
        out = Path(config.out) if config.out else default_out(config)
        try:
            prepare_out(out, resuming=resume is not None)
        except UserError as e:
            error = e
    out = Path(ranks.broadcast(str(out) if ranks.main else None))
    ranks.agree(error)
    config.out = str(out)

    task = make_task(config, data.channels, device, data.native_size, resume)
    if ranks.world > 1:
        task.distribute(ranks)
    # Held-out images for the per-epoch test figures and reconstruction grids, where the
    # dataset has a test split; folders have none and use training images for pictures.
    test = None
    if config.dataset != "folder":
        test = ranks.main_first(lambda: load_dataset(
            config.dataset, split="test", data_dir=config.data_dir, image_size=config.image_size,
            channels=config.channels, fake_size=max(config.fake_size // 4, 32), seed=config.seed, log=log))
    shown = to_model((test if test is not None else data).images[:32].to(device), config.image_size)
    batches = Batches(data.images, data.labels if config.conditional else None, batch_size=config.batch_size,
                      seed=config.seed, image_size=config.image_size, device=device, log=log, shard=ranks.shard)
    steps_per_epoch = batches.steps_per_epoch
    total = config.epochs * steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    step = resume["step"] if resume else 0
    sums = {}
    if resume:
        sums = restore_rank(resume, ranks, config.seed, device, log)
    elif ranks.rank:
        torch.manual_seed(noise_seed(config.seed, ranks.rank))  # after the init: same weights, other noise
    if resume and ranks.main:
        _trim_metrics(out / "metrics.jsonl", step)
        remove_stale_temps(out / "checkpoints")
        for folder in (out, out / "samples"):
            sampling.remove_stale_writes(folder)
    if ranks.main:
        _write_json(out / "config.json", config.to_dict())

    dtype = resolve_precision(config.precision, device)
    graph = config.cuda_graph and ranks.world == 1
    if config.cuda_graph and device.type == "cuda" and not graph:
        log("note: no CUDA graph under torchrun: DDP's all-reduces run outside a captured step")
    stepper = Stepper(task, device, dtype=dtype, graph=graph, log=log)
    fixed_z = task.noise(GRID, generator=torch.Generator().manual_seed(config.seed))
    grid_columns = getattr(task, "grid_columns", 8)  # a conditional GAN: one row per class, 10 z's
    if ranks.main and not (out / "samples" / "real.png").exists():
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed))[:GRID]
        sampling.save_grid(data.images[pick], out / "samples" / "real.png", nrow=8)

    def check_finite() -> None:
        """Stop before a non-finite loss reaches a checkpoint: the last good one stays."""
        bad = {k: float(sums[k]) for k in task.metric_names if k in sums and not math.isfinite(float(sums[k]))}
        if bad:
            losses = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise Diverged(f"training diverged at step {step} (epoch {step // steps_per_epoch + 1}): {losses}; "
                           f"the last good checkpoint in '{out}/checkpoints' is kept; lower --lr or change the recipe")

    def checkpoint() -> None:
        """Every rank calls this; rank 0 writes every rank's random state and epoch sums,
        once it has checked that all ranks hold the same weights."""
        check_finite()
        own = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
               "epoch_sums": {k: float(v) for k, v in sums.items()}}
        everyone = ranks.gather((own, weights_digest(task.modules) if ranks.world > 1 else None))
        digests = {d for _, d in everyone}
        if len(digests) > 1:
            raise Diverged(f"the {ranks.world} ranks hold different weights at step {step}; the last good "
                           f"checkpoint in '{out}/checkpoints' is kept (a gankit bug: please report it)")
        if not ranks.main:
            return
        rng = {"cpu": own["cpu"], "cuda": own["cuda"]}
        if ranks.world > 1:
            rng["ranks"] = [r for r, _ in everyone]
        state = {
            "gankit_version": gankit.__version__,
            "kind": config.model,
            "config": config.to_dict(),
            "step": step,
            "dataset_size": len(data),
            "native_size": data.native_size,
            "modules": {k: m.state_dict() for k, m in task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
            "rng": rng,
            "epoch_sums": own["epoch_sums"],
        }
        if ranks.world > 1:
            state["weights_digest"] = digests.pop()
        try:
            save_checkpoint(state, out / "checkpoints")
        except OSError as e:
            raise UserError(f"cannot save a checkpoint in '{out}/checkpoints' ({e.strerror or e}); "
                            "the previous checkpoint is kept; free disk space or make the folder writable, "
                            "then resume") from None

    if step >= total:
        log(f"nothing to do: '{out}' is at step {step} of {total}; pass --epochs with a larger number to go on")
        return out
    recipe = f" ({config.recipe} recipe)" if config.model == "dcgan" else ""
    mode = ("bf16" if dtype is not None else "fp32") + (", CUDA graph" if stepper.graph else "")
    where = f"{device} ({mode})" if ranks.world == 1 else \
        f"{ranks.world} processes on {device.type} ({mode}), {config.batch_size // ranks.world} images a rank"
    log(f"training {config.model}{recipe} on {config.dataset}: {len(data)} images, "
        f"{steps_per_epoch} steps per epoch, {where}, run folder {out}")

    if resume is None:
        checkpoint()  # step 0: a run folder always holds a checkpoint that loads and resumes
    save_steps, save_seconds = parse_save_every(config.save_every)
    last_save = time.monotonic()
    bar = None
    stopped = 0  # the signal number of an agreed stop request
    session_start = time.perf_counter()
    epoch_clock = time.perf_counter()
    board_config = config if ranks.main else dataclasses.replace(config, tensorboard=False)
    with stop_requests() as stop, open_board(out, board_config, step, log) as board:
        while step < total:
            epoch, i = divmod(step, steps_per_epoch)
            if bar is None or i == 0:
                epoch_clock = time.perf_counter() - sums.get("seconds", 0.0)
                bar = tqdm(total=steps_per_epoch, initial=i, desc=f"epoch {epoch + 1}/{config.epochs}",
                           disable=not (config.progress and ranks.main), leave=True, file=sys.stderr, dynamic_ncols=True)
            if config.conditional:
                metrics = stepper(batches.batch(epoch, i), batches.labels(epoch, i))
            else:
                metrics = stepper(batches.batch(epoch, i))
            for k, v in metrics.items():  # fp32 sums: a bf16 sum stops growing at 256
                sums[k] = sums.get(k, 0.0) + v.float()
            sums["steps"] = sums.get("steps", 0) + 1
            step += 1
            if step % SYNC_EVERY == 0:
                check_finite()  # reads the sums: one host sync per SYNC_EVERY steps, not per step
                board.step(step, metrics)
            if bar is not None:
                bar.update(1)
                if step % SYNC_EVERY == 0 or step % steps_per_epoch == 0:
                    seconds = time.perf_counter() - epoch_clock
                    shown_now = {k: f"{float(metrics[k]):.3f}" for k in task.metric_names[:2]}
                    bar.set_postfix(**shown_now, img_s=f"{sums['steps'] * config.batch_size / max(seconds, 1e-9):.0f}")

            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch:
                bar.close()
                sums["seconds"] = time.perf_counter() - epoch_clock
                sums.update(ranks.mean({k: v for k, v in sums.items() if torch.is_tensor(v)}))  # over all shards
                record = epoch_record(epoch + 1, step, sums, config.batch_size)
                check_finite()
                if ranks.main:
                    if test is not None:
                        eval_rng = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
                        record.update(task.evaluate(test.images, eval_rng))
                    if wants_eval(config, epoch + 1, last=step == total):
                        record.update(judge_samples(task, config, data.native_size, log))
                    for name, pics in task.pictures(fixed_z, shown).items():
                        sampling.save_grid(to_native(pics, data.native_size),
                                           out / "samples" / f"{name}_epoch_{epoch + 1:03d}.png", nrow=grid_columns)
                sums = {}
                checkpoint()
                last_save = time.monotonic()
                if ranks.main:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    board.epoch(step, record, out / "samples")
                    report.refresh(out, log)  # losses.png and progress.gif
                    log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                          if k not in ("epoch", "step", "seconds")
                                                          and isinstance(v, (int, float))))
            # A stop request and a timed save are decided where the ranks meet (every step
            # in one process), so that all ranks stop or save after the same step.
            if ranks.world == 1 or step % SYNC_EVERY == 0:
                stopped, timed = ranks.max(stop[0] if stop else 0,
                                           int(bool(save_seconds) and time.monotonic() - last_save >= save_seconds))
            else:
                timed = 0
            if not end_of_epoch and ((save_steps and step % save_steps == 0) or timed):
                sums["seconds"] = time.perf_counter() - epoch_clock
                checkpoint()
                last_save = time.monotonic()
            if stopped and step < total:
                break
    if step % steps_per_epoch != 0:  # stopped inside an epoch: keep the epoch's running sums
        if bar is not None:
            bar.close()
        sums["seconds"] = time.perf_counter() - epoch_clock
        checkpoint()
    if stopped and step < total:
        launcher = f"torchrun --nproc_per_node={ranks.world} -m " if ranks.world > 1 else ""
        raise Stopped(stopped, f"stopped by {signal.Signals(stopped).name} at step {step}; checkpoint saved; "
                      f"resume with: {launcher}gankit train --resume {out}")
    log(f"done: {step} steps in {time.perf_counter() - session_start:.1f} s; run folder {out}")
    return out


EVAL_SAMPLES = 10000


def wants_eval(config: TrainConfig, epoch: int, last: bool) -> bool:
    """--eval-every E: every E epochs and at the end; None: at the end only; 0: never."""
    from gankit.metrics.judge import JUDGED

    if config.dataset not in JUDGED or config.eval_every == 0:
        return False
    return last or bool(config.eval_every and epoch % config.eval_every == 0)


def judge_samples(task, config: TrainConfig, native: int, log) -> dict:
    """The evaluator's figures for EVAL_SAMPLES fresh samples, as `eval_*` metrics."""
    from gankit.metrics.judge import judge

    images = sampling.generate(task, EVAL_SAMPLES, seed=config.seed, native=native)  # balanced labels
    result = judge(images, config.dataset, config.data_dir, seed=config.seed, floor=False,
                   progress=config.progress, labels=sampling.sample_labels(task, EVAL_SAMPLES))
    return {f"eval_{k}": v for k, v in result.items() if k not in ("n", "num_classes")}


def epoch_record(epoch: int, step: int, sums: dict, batch_size: int) -> dict:
    n = max(int(sums.get("steps", 0)), 1)
    seconds = float(sums.get("seconds", 0.0))
    record = {"epoch": epoch, "step": step}
    for k, v in sums.items():
        if k not in ("steps", "seconds"):
            record[k] = float(v) / n
    record["images_per_s"] = n * batch_size / max(seconds, 1e-9)
    record["seconds"] = seconds
    return record


def resume_state(run: Path) -> tuple[TrainConfig, dict]:
    """(config, state) of a run folder's newest checkpoint (or a checkpoint file)."""
    from gankit.checkpoint import find_checkpoint

    state = load_checkpoint(find_checkpoint(run))
    try:
        config = TrainConfig.from_dict(state["config"])
    except TypeError as e:
        raise UserError(f"checkpoint in '{run}' has an unreadable config ({e})") from None
    return config, state


def load_run(run: Path, device: str = "cpu"):
    """(config, task, state, native_size) of a run folder's newest checkpoint, for sampling."""
    config, state = resume_state(run)
    config.device = device
    native = int(state.get("native_size", config.image_size))
    task = make_task(config, config.channels, pick_device(device), native, state)
    return config, task, state, native
