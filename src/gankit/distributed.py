"""Training in several processes at once: `torchrun --nproc_per_node=N -m gankit train ...`.

torchrun starts N copies of `gankit train` and tells each its RANK, LOCAL_RANK and
WORLD_SIZE in the environment. Every rank builds the same model from the same seed,
DistributedDataParallel averages the gradients after each backward pass, and so every
rank takes the same optimizer step and the weights stay identical. What differs per rank:

- Data: each global batch of --batch-size B is cut into N contiguous parts of B/N, and
  rank r trains on part r. So a run has the same steps per epoch and the same global
  batch whatever N is, and every epoch every rank sees its own shard of the data.
- Noise: rank 0 draws z from the run's seed exactly as a single process does; rank r > 0
  from a seed derived from (seed, r). Otherwise all ranks would draw the same fakes.
- BatchNorm: synchronized. Its batch statistics are summed over all ranks (one
  all-reduce per BatchNorm layer and forward pass), so a layer normalizes over the
  global batch of B, as in one process, rather than over B/N images. The DCGAN recipe
  was measured at B = 128; with 8 ranks unsynchronized BatchNorm would normalize over 16.
- Writing: rank 0 alone writes the run folder (grids, logs, TensorBoard, checkpoints);
  a checkpoint also holds every rank's random state, so resume is exact.

A single process is world 1: the same code path, where every method here does nothing.
"""

from __future__ import annotations

import inspect
import os
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from gankit import seeds
from gankit.checkpoint import states_digest
from gankit.errors import UserError

TIMEOUT = timedelta(minutes=30)  # rank 0 judges samples at epoch ends while the others wait


def world_size() -> int:
    """How many processes torchrun (or another launcher) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Ranks:
    """This process's place among the ranks, and the few collective operations the
    training loop needs. Ranks() is a single process: rank 0 of 1."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device = torch.device("cpu")  # this rank's device, where its collectives' tensors live

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device) -> Ranks:
        """Join the process group torchrun set up; `device` is cuda (each rank takes the
        GPU of its LOCAL_RANK) or cpu. A single process gets Ranks() and joins nothing."""
        if world_size() == 1:
            ranks = cls()
            ranks.device = device
            return ranks
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        ranks = cls(rank, world, local)
        if device.type == "cuda":
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            if per_node > torch.cuda.device_count():
                raise UserError(f"torchrun started {per_node} processes on this machine but it has "
                                f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node="
                                f"{torch.cuda.device_count()} (or --device cpu)")
            ranks.device = torch.device("cuda", local)
            torch.cuda.set_device(ranks.device)
            dist.init_process_group("nccl", timeout=TIMEOUT, device_id=ranks.device)
        else:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        return ranks

    def close(self, together: bool = False) -> None:
        """Leave the process group. together=True: first wait for every rank to get here, for
        a run that ends the same way on every rank (done, or an agreed stop); gloo aborts a
        rank whose peer tears the group down while it is still using it."""
        if self.world > 1 and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch's indices."""
        per = len(indices) // self.world
        return indices[self.rank * per:(self.rank + 1) * per]

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` with synchronized BatchNorm (in place) under DistributedDataParallel
        (gradients averaged over the ranks in backward), or `module` itself in one process.
        BatchNorm's running statistics come from the synchronized batch statistics, so they
        agree on every rank and are not broadcast."""
        if self.world == 1:
            return module
        sync_batchnorm(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # A grayscale conv weight (64, 1, 4, 4) in channels_last has two valid stride sets;
        # autograd picks the other one for its gradient, and DDP warns (once, on a GPU)
        # about a copy of 1024 numbers. Nothing to act on.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ddp = nn.parallel.DistributedDataParallel
        # Newer PyTorch renamed the switch (and deprecated the old name); both mean: no
        # broadcast of rank 0's buffers before every forward pass.
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else "broadcast_buffers")
        return ddp(module, device_ids=ids, **{no_sync: False})

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean over the ranks of each 0-d tensor (the epoch's metric sums)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].float().to(self.device) for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked / self.world))

    def max(self, *values: int) -> tuple[int, ...]:
        """Each value's maximum over the ranks: how the ranks agree to stop or to save."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(t.tolist())

    def gather(self, obj) -> list:
        """obj from every rank, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's obj, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, fn):
        """fn() on rank 0 and then, once that worked, on the others: a dataset that must
        be downloaded or converted is written into the cache by one process only."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as e:
                error = e
        self.agree(error)
        return result if self.main else fn()

    def agree(self, error: UserError | None) -> None:
        """Raise on every rank if any rank failed (say, rank 0 could not write the run
        folder), so that no rank waits forever for one that has left."""
        errors = self.gather(None if error is None else (str(error), error.exit_code))
        for rank, e in enumerate(errors):
            if e is not None:
                failed = UserError(e[0] if rank == 0 else f"rank {rank}: {e[0]}")
                failed.exit_code = e[1]
                raise failed


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank r's noise: the run's seed for rank 0, one derived from (seed, r) else."""
    return seed if rank == 0 else seeds.derive(seed, 7_919 * rank)


def weights_digest(modules: dict[str, nn.Module]) -> str:
    """A hash of every parameter and buffer, to check that the ranks hold the same weights."""
    return states_digest({name: module.state_dict() for name, module in modules.items()})


class AllReduceSum(torch.autograd.Function):
    """The sum over the ranks, differentiable: each rank's input feeds every rank's
    output, so its gradient is the sum of all ranks' output gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are taken over the whole global batch,
    on every rank. The same parameters and buffers as BatchNorm2d (checkpoints load either
    way). torch.nn.SyncBatchNorm runs on GPUs only; this one runs wherever the process
    group does (gloo on the CPU, NCCL on GPUs), so the CPU tests exercise what a GPU runs.

    Per channel it all-reduces [sum x, sum x^2, count] in one call. That all-reduce is
    differentiable (its backward is an all-reduce of the gradients), so the gradient is
    the one of BatchNorm over the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        x32 = x.float()  # statistics in fp32, also under bf16 autocast
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        local = torch.cat([x32.sum((0, 2, 3)), x32.square().sum((0, 2, 3)), count])
        total = AllReduceSum.apply(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.square()).clamp_min(0)   # biased: what normalizes
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)   # unbiased, as BatchNorm keeps
        y = (x32 - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm2d in `module` a SyncBatchNorm2d, in place: the same parameter
    objects, so optimizers made before keep working."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module

