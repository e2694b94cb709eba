"""The training loop: epochs, batches, logging, pictures, checkpoints and resume.

It reads top to bottom as one run: `train` checks the settings, `setup` gathers what a
run needs into a `Session`, `run_steps` is the loop, `end_epoch` writes an epoch's figures
and pictures, `save` a checkpoint. The model-specific part is a task (the protocol is in
gankit.training.task); the loop knows nothing else about it. Labels reach the step only
for a --conditional run.

Exact resume: the batch order of epoch e is a permutation seeded by (seed, e), so
the position inside an epoch follows from the step count alone; the global RNG
(which draws z) is saved and restored; so are the running sums of the epoch's
metrics. N steps straight and N/2 + resume + N/2 give identical weights on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm  # a widget in Jupyter, text in a terminal

from gankit import report, sampling, seeds
from gankit.board import Board, open_board
from gankit.checkpoint import make_state, rank_state, save_checkpoint
from gankit.config import TrainConfig, parse_save_every
from gankit.data import ImageData, to_model, to_native
from gankit.distributed import Ranks, noise_seed, weights_digest, world_size
from gankit.errors import Diverged, Stopped, UserError
from gankit.files import remove_stale_temps, write_atomic, write_json
from gankit.metrics.judge_evaluator import score_samples
from gankit.registry import dataset_spec, task_class
from gankit.resolve import resolve
from gankit.runs import (
    build_task,
    check_unchanged,
    default_out,
    has_test_split,
    load_split,
    open_out,
    pick_device,
    resolve_data_config,
)
from gankit.training.runner import Batches, Stepper, resolve_precision
from gankit.training.signals import signal_name, stop_requests

GRID = 64  # images in the per-epoch grids: 8x8, as in the tutorial
SYNC_EVERY = 25  # steps between the loop's reads of device values (and, under torchrun, the ranks' agreement)
EVAL_SAMPLES = 10000


@dataclass
class Session:
    """What one training session works with. `step` and `sums` (the epoch's running sums
    of the step's metrics, plus "steps" and "seconds") change as it goes."""

    config: TrainConfig
    ranks: Ranks
    log: object
    out: Path
    data: ImageData
    test: ImageData | None
    task: object
    batches: Batches
    stepper: Stepper
    fixed_z: torch.Tensor
    shown: torch.Tensor
    total: int
    step: int
    sums: dict = field(default_factory=dict)
    epoch_clock: float = 0.0

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    @property
    def device(self) -> torch.device:
        return self.ranks.device


def train(config: TrainConfig, *, resume: dict | None = None, log=None) -> Path:
    """Train from scratch, or go on from a checkpoint's state. Returns the run folder.

    Under torchrun every rank calls this (gankit.distributed says what differs per rank);
    only rank 0 logs and writes."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    config = resolve(config)
    device = pick_device(config.device)
    world = world_size()
    if config.batch_size % world:  # checked before the processes meet: each says it and leaves
        raise UserError(f"--batch-size {config.batch_size} (the global batch) does not split evenly over "
                        f"{world} processes; use a multiple of {world}")
    ranks = Ranks.start(device)
    together = False  # every rank ends the same way: done, or stopped after the same step (run_steps)
    try:
        with ExitStack() as held:  # the run folder's lock (runs.open_out): from setup to the last save
            run = setup(config, resume, log if ranks.main else (lambda msg: None), ranks, held)
            if run.step >= run.total:
                run.log(f"nothing to do: '{run.out}' is at step {run.step} of {run.total}; pass --epochs with "
                        "a larger number to go on")
            else:
                if resume is None:
                    save(run)  # step 0: a run folder always holds a checkpoint that loads and resumes
                run_steps(run)
        together = True
    except Stopped:
        together = True
        raise
    finally:
        ranks.close(together)
    return run.out


def run_folder(config: TrainConfig, resume: dict | None, ranks: Ranks, held: ExitStack) -> Path:
    """Rank 0 picks the run folder and holds it for writing until `held` closes (the other
    ranks never write); the others learn where it is, or its error."""
    error, out = None, None
    if ranks.main:
        out = Path(config.out) if config.out else default_out(config)
        try:
            held.enter_context(open_out(out, resuming=resume is not None))
            if resume is not None:
                check_unchanged(out, resume)  # holding the lock: no one can save after this check
        except UserError as e:
            error = e
    out = Path(ranks.broadcast(str(out) if ranks.main else None))
    ranks.agree(error)
    return out


def setup(config: TrainConfig, resume: dict | None, log, ranks: Ranks, held: ExitStack) -> Session:
    """Data, run folder (its lock held until `held` closes), task, batches and stepper, with
    the random state where a straight run would have it."""
    # Data first: a missing dataset must fail before anything is written.
    data = ranks.main_first(lambda: load_split(config, "train", log))
    config = resolve_data_config(config, data)
    per_step = config.batch_size * task_class(config.model).batches_per_step(config)
    if per_step > len(data):
        several = f" x {per_step // config.batch_size} batches a step" if per_step > config.batch_size else ""
        raise UserError(f"--batch-size {config.batch_size}{several} is larger than the dataset "
                        f"({len(data)} images); use a smaller batch size")
    out = run_folder(config, resume, ranks, held)
    config.out = str(out)
    device = ranks.device
    task = build_task(config, data.channels, device, data.native_size, resume)
    if ranks.world > 1:
        task.distribute(ranks)
    # Held-out images for the per-epoch test figures and reconstruction grids, where the
    # dataset has a test split; otherwise training images stand in for the pictures.
    test = ranks.main_first(lambda: load_split(config, "test", log)) if has_test_split(config) else None
    shown = to_model((test if test is not None else data).images[:32].to(device), config.image_size)
    # A step may take several batches (a GAN's --d-steps): one epoch still shows every image once.
    batches = Batches(data.images, data.labels if config.conditional else None,
                      batch_size=per_step, seed=config.seed,
                      image_size=config.image_size, device=device, log=log, shard=ranks.shard)
    total = config.epochs * batches.steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    step, sums = 0, {}
    if resume:
        step = resume["step"]
        sums = restore_rank(resume, ranks, config.seed, device, log)
    elif ranks.rank:
        torch.manual_seed(noise_seed(config.seed, ranks.rank))  # after the init: same weights, other noise
    if ranks.main:
        if resume:
            tidy_run_folder(out, step)
        write_json(out / "config.json", config.to_dict())
    stepper = make_stepper(config, task, ranks, log)
    fixed_z = task.noise(GRID, rng=torch.Generator().manual_seed(config.seed))
    if ranks.main and not (out / "samples" / "real.png").exists():
        sampling.save_grid(real_images(data, config.seed), out / "samples" / "real.png", nrow=8)
    run = Session(config=config, ranks=ranks, log=log, out=out, data=data, test=test, task=task, batches=batches,
              stepper=stepper, fixed_z=fixed_z, shown=shown, total=total, step=step, sums=sums)
    log_start(run)
    return run


def real_images(data: ImageData, seed: int) -> torch.Tensor:
    """The GRID training images of samples/real.png: a seeded pick, the same for every session."""
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:GRID]
    return data.images[pick]


def make_stepper(config: TrainConfig, task, ranks: Ranks, log) -> Stepper:
    dtype = resolve_precision(config.precision, ranks.device)
    graph = config.cuda_graph and ranks.world == 1
    if config.cuda_graph and ranks.device.type == "cuda" and not graph:
        log("note: no CUDA graph under torchrun: DDP's all-reduces run outside a captured step")
    return Stepper(task, ranks.device, dtype=dtype, graph=graph, log=log, hflip=config.hflip)


def log_start(run: Session) -> None:
    config, ranks = run.config, run.ranks
    recipe = type(run.task).summary(config)
    mode = ("bf16" if run.stepper.dtype is not None else "fp32") + (", CUDA graph" if run.stepper.graph else "")
    where = f"{run.device} ({mode})" if ranks.world == 1 else \
        f"{ranks.world} processes on {run.device.type} ({mode}), {config.batch_size // ranks.world} images a rank"
    run.log(f"training {config.model}{recipe} on {config.dataset}: {len(run.data)} images, "
            f"{run.steps_per_epoch} steps per epoch, {where}, run folder {run.out}")


def tidy_run_folder(out: Path, step: int) -> None:
    """Before going on from a checkpoint at `step`: drop what a crashed session wrote after
    it (metric lines) or left half-written (temporary files)."""
    trim_metrics(out / "metrics.jsonl", step)
    for folder in (out, out / "samples", out / "checkpoints"):
        remove_stale_temps(folder)


def trim_metrics(path: Path, step: int) -> None:
    """Keep only the metric lines a checkpoint at `step` has seen (a crash may leave more)."""
    if not path.exists():
        return
    kept = [line for line, record in report.metric_lines(path.read_bytes()) if record["step"] <= step]
    write_atomic(path, "".join(ln + "\n" for ln in kept).encode())


def restore_rank(resume: dict, ranks: Ranks, seed: int, device: torch.device, log) -> dict:
    """Set this rank's random state from a checkpoint and return its epoch's running sums:
    its own when the run had as many ranks. Else rank 0 goes on with rank 0's, and each
    other rank starts its noise from a new seed derived from (seed, rank, step)."""
    mine, had = rank_state(resume, ranks.rank, ranks.world)
    if had != ranks.world:
        log(f"note: this run was trained by {had} process(es) and goes on with {ranks.world}; the data order "
            "and the global batch stay the same, the other ranks' noise starts from new seeds, so it goes on "
            "correctly but not bit for bit as it would have")
    if mine is None:
        torch.manual_seed(noise_seed(seed, ranks.rank) + resume["step"])
        return {}
    torch.set_rng_state(mine["cpu"])
    if device.type == "cuda" and mine.get("cuda") is not None:
        torch.cuda.set_rng_state(mine["cuda"], device)
    return dict(mine.get("epoch_sums", {}))


def run_steps(run: Session) -> None:
    """The loop: a step, its sums, and at the right steps the epoch's end, a checkpoint, a stop."""
    config, ranks, task = run.config, run.ranks, run.task
    save_steps, save_seconds = parse_save_every(config.save_every)
    last_save = time.monotonic()
    bar = None
    stopped = 0  # the signal number of an agreed stop request
    session_start = time.perf_counter()
    board_config = config if ranks.main else dataclasses.replace(config, tensorboard=False)
    with stop_requests() as stop, open_board(run.out, board_config, run.step, run.log) as board:
        while run.step < run.total:
            epoch, i = divmod(run.step, run.steps_per_epoch)
            if bar is None or i == 0:
                run.epoch_clock = time.perf_counter() - run.sums.get("seconds", 0.0)
                bar = tqdm(total=run.steps_per_epoch, initial=i, desc=f"epoch {epoch + 1}/{config.epochs}",
                           disable=not (config.progress and ranks.main), leave=True, file=sys.stderr,
                           dynamic_ncols=True)
            batch = (run.batches.batch(epoch, i),)
            if config.conditional:
                batch += (run.batches.labels(epoch, i),)
            metrics = run.stepper(*batch, regularize=task.regularizes(run.step))
            for k, v in metrics.items():  # fp32 sums: a bf16 sum stops growing at 256
                run.sums[k] = run.sums.get(k, 0.0) + v.float()
            run.sums["steps"] = run.sums.get("steps", 0) + 1
            run.step += 1
            if run.step % SYNC_EVERY == 0:
                check_finite(run)  # reads the sums: one host sync per SYNC_EVERY steps, not per step
                board.step(run.step, metrics)
            bar.update(1)
            if run.step % SYNC_EVERY == 0 or run.step % run.steps_per_epoch == 0:
                seconds = time.perf_counter() - run.epoch_clock
                shown = {k: f"{float(metrics[k]):.3f}" for k in task.metric_names[:2]}
                bar.set_postfix(**shown, img_s=f"{run.sums['steps'] * run.batches.batch_size / max(seconds, 1e-9):.0f}")
            end_of_epoch = run.step % run.steps_per_epoch == 0
            if end_of_epoch:
                bar.close()
                end_epoch(run, epoch, board)
                last_save = time.monotonic()
            # A stop request and a timed save are decided where the ranks meet (every step
            # in one process), so that all ranks stop or save after the same step.
            timed = 0
            if ranks.world == 1 or run.step % SYNC_EVERY == 0:
                stopped, timed = ranks.max(stop[0] if stop else 0,
                                           int(bool(save_seconds) and time.monotonic() - last_save >= save_seconds))
            if not end_of_epoch and ((save_steps and run.step % save_steps == 0) or timed):
                run.sums["seconds"] = time.perf_counter() - run.epoch_clock
                save(run)
                last_save = time.monotonic()
            if stopped and run.step < run.total:
                break
    if run.step % run.steps_per_epoch != 0:  # stopped inside an epoch: keep the epoch's running sums
        bar.close()
        run.sums["seconds"] = time.perf_counter() - run.epoch_clock
        save(run)
    if stopped and run.step < run.total:
        launcher = f"torchrun --nproc_per_node={ranks.world} -m " if ranks.world > 1 else ""
        raise Stopped(stopped, f"stopped by {signal_name(stopped)} at step {run.step}; checkpoint saved; "
                      f"resume with: {launcher}gankit train --resume {run.out}")
    run.log(f"done: {run.step} steps in {time.perf_counter() - session_start:.1f} s; run folder {run.out}")


def end_epoch(run: Session, epoch: int, board: Board) -> None:
    """An epoch's record (averaged over all shards), its test figures, the judge's figures
    when asked for, its grids, a checkpoint, its line in metrics.jsonl, TensorBoard and plots."""
    config, ranks, sums = run.config, run.ranks, run.sums
    sums["seconds"] = time.perf_counter() - run.epoch_clock
    sums.update(ranks.mean({k: v for k, v in sums.items() if torch.is_tensor(v)}))  # over all shards
    record = epoch_record(epoch + 1, run.step, sums, run.batches.batch_size)
    check_finite(run)
    if ranks.main:
        if run.test is not None:
            record.update(run.task.evaluate(run.test.images, torch.Generator().manual_seed(
                seeds.derive(config.seed, epoch))))
        if wants_eval(config, epoch + 1, last=run.step == run.total):
            record.update(judge_samples(run.task, config, run.data.native_size))
        for name, pics in run.task.pictures(run.fixed_z, run.shown).items():
            sampling.save_grid(to_native(pics, run.data.native_size),
                               run.out / "samples" / f"{name}_epoch_{epoch + 1:03d}.png",
                               nrow=run.task.grid_columns)
    run.sums = {}
    save(run)
    if ranks.main:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        board.epoch(run.step, record, run.out / "samples")
        report.refresh(run.out, run.log)  # losses.png and progress.gif
        run.log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                  if k not in ("epoch", "step", "seconds")
                                                  and isinstance(v, (int, float))))


def check_finite(run: Session) -> None:
    """Stop before a non-finite loss reaches a checkpoint: the last good one stays."""
    sums = run.sums
    bad = {k: float(sums[k]) for k in run.task.metric_names if k in sums and not math.isfinite(float(sums[k]))}
    if bad:
        losses = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise Diverged(f"training diverged at step {run.step} (epoch {run.step // run.steps_per_epoch + 1}): "
                       f"{losses}; the last good checkpoint in '{run.out}/checkpoints' is kept; lower --lr or "
                       "change the recipe")


def save(run: Session) -> None:
    """A checkpoint. Every rank calls this; rank 0 writes every rank's random state and epoch
    sums, once it has checked that all ranks hold the same weights."""
    check_finite(run)
    ranks, device = run.ranks, run.device
    own = {"cpu": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
           "epoch_sums": {k: float(v) for k, v in run.sums.items()}}
    everyone = ranks.gather((own, weights_digest(run.task.modules) if ranks.world > 1 else None))
    digests = {d for _, d in everyone}
    if len(digests) > 1:
        raise Diverged(f"the {ranks.world} ranks hold different weights at step {run.step}; the last good "
                       f"checkpoint in '{run.out}/checkpoints' is kept (a gankit bug: please report it)")
    if not ranks.main:
        return
    rng = {"cpu": own["cpu"], "cuda": own["cuda"]}
    if ranks.world > 1:
        rng["ranks"] = [r for r, _ in everyone]
    state = make_state(run.config, run.task, step=run.step, dataset_size=len(run.data),
                       native_size=run.data.native_size, rng=rng, epoch_sums=own["epoch_sums"],
                       weights_digest=digests.pop() if ranks.world > 1 else None)
    try:
        save_checkpoint(state, run.out / "checkpoints")
    except OSError as e:
        raise UserError(f"cannot save a checkpoint in '{run.out}/checkpoints' ({e.strerror or e}); "
                        "the previous checkpoint is kept; free disk space or make the folder writable, "
                        "then resume") from None


def wants_eval(config: TrainConfig, epoch: int, last: bool) -> bool:
    """--eval-every E: every E epochs and at the end; None: at the end only; 0: never."""
    if not dataset_spec(config.dataset).evaluator or config.eval_every == 0:
        return False
    return last or bool(config.eval_every and epoch % config.eval_every == 0)


def judge_samples(task, config: TrainConfig, native: int) -> dict:
    """The evaluator's figures for EVAL_SAMPLES fresh samples, as `eval_*` metrics."""
    images = sampling.generate(task, EVAL_SAMPLES, seed=config.seed, native=native)  # balanced labels
    result = score_samples(images, config.dataset, config.data_dir, seed=config.seed, floor=False,
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
