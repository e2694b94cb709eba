"""Data-parallel training: the measured inputs of the README's multi-GPU plan, and a check
of the DDP step on a device.

  python benchmarks/ddp.py step --device cuda
      One rank's DCGAN step (default recipe, 32x32 MNIST-sized, bf16 where native) by
      per-rank batch size, eager (how a rank runs under torchrun) and, on CUDA, replayed
      from a CUDA graph (how one process runs). Also what one step sends between ranks.
  python benchmarks/ddp.py ranks --world 2 --threads 1 [--device cuda]
      WORLD processes joined over gloo (on a GPU: all on the same one, which NCCL does not
      allow) train the same global batch with gankit's distributed step (DDP, synchronized
      BatchNorm, sharded batches). Prints the time a step and whether every rank ends with
      the same weights, beside one process with WORLD * THREADS threads.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from gankit.config import TrainConfig  # noqa: E402
from gankit.distributed import Ranks, weights_digest  # noqa: E402
from gankit.resolve import resolve  # noqa: E402
from gankit.training.gan import GanTask  # noqa: E402
from gankit.training.runner import WARMUP, Batches, Stepper, resolve_precision  # noqa: E402

SIZE = 32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(batch: int, device: torch.device, *, graph: bool, steps: int, ranks: Ranks | None = None):
    """(seconds a step, after WARMUP + 2 untimed steps; the task); `batch` is the global batch."""
    torch.manual_seed(0)
    config = resolve(TrainConfig(recipe="dcgan", image_size=SIZE, channels=1, batch_size=batch))
    task = GanTask(config, channels=1, device=device)
    if ranks is not None and ranks.world > 1:
        task.distribute(ranks)
    images = torch.randint(0, 256, (batch * (steps + WARMUP + 2), 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    batches = Batches(images, batch_size=batch, seed=0, image_size=SIZE, device=device,
                      shard=ranks.shard if ranks is not None else None)
    stepper = Stepper(task, device, dtype=resolve_precision("auto", device), graph=graph)
    for i in range(WARMUP + 2):
        stepper(batches.batch(0, i))
    sync(device)
    start = time.perf_counter()
    for i in range(WARMUP + 2, WARMUP + 2 + steps):
        stepper(batches.batch(0, i))
    sync(device)
    return (time.perf_counter() - start) / steps, task


def traffic() -> dict:
    """What one step sends between ranks: DDP's all-reduce of the fp32 gradients of G and
    D (the step's bulk), beside synchronized BatchNorm's small all-reduces (counted by `ranks`)."""
    config = resolve(TrainConfig(recipe="dcgan", image_size=SIZE, channels=1))
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    g = sum(p.numel() for p in task.generator.parameters())
    d = sum(p.numel() for p in task.discriminator.parameters())
    bn_g = sum(isinstance(m, torch.nn.BatchNorm2d) for m in task.generator.modules())
    bn_d = sum(isinstance(m, torch.nn.BatchNorm2d) for m in task.discriminator.modules())
    return {"generator_parameters": g, "discriminator_parameters": d,
            "gradient_megabytes_per_step": round(4 * (g + d) / 2**20, 2),
            "batchnorm_layers": {"generator": bn_g, "discriminator": bn_d}}


def cmd_step(args) -> dict:
    device = torch.device(args.device)
    rows = []
    for b in args.batches:
        eager = timed_steps(b, device, graph=False, steps=args.steps)[0]
        row = {"per_rank_batch": b, "eager_ms": round(1000 * eager, 3)}
        if device.type == "cuda":
            row["graph_ms"] = round(1000 * timed_steps(b, device, graph=True, steps=args.steps)[0], 3)
        rows.append(row)
    return {"device": device_name(device), "torch": torch.__version__, "steps": args.steps, "rows": rows,
            "traffic": traffic()}


def rank_worker(rank: int, args, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    try:
        ranks = Ranks(rank, args.world, 0)
        ranks.device = torch.device(args.device)
        if ranks.device.type == "cuda" and ranks.device.index is None:
            ranks.device = torch.device("cuda", 0)    # every rank on the same GPU
        seconds, task = timed_steps(args.batch, ranks.device, graph=False, steps=args.steps, ranks=ranks)
        # One more step, counting the all-reduces called from Python: synchronized BatchNorm's
        # (DDP's gradient buckets go through its C++ reducer, not through dist.all_reduce).
        calls, all_reduce = [0], dist.all_reduce

        def counted(*a, **k):
            calls[0] += 1
            return all_reduce(*a, **k)
        dist.all_reduce = counted
        real = torch.rand(args.batch // args.world, 1, SIZE, SIZE, device=ranks.device) * 2 - 1
        with torch.autocast(ranks.device.type, dtype=resolve_precision("auto", ranks.device) or torch.float32,
                            enabled=resolve_precision("auto", ranks.device) is not None):
            task.step(real)
        dist.all_reduce = all_reduce
        digests = ranks.gather(weights_digest(task.modules))
        times = ranks.gather(seconds)
        if ranks.main:
            Path(folder, "result.json").write_text(json.dumps({
                "seconds": max(times), "weights_agree": len(set(digests)) == 1,
                "batchnorm_all_reduces_per_step": calls[0]}))
    finally:
        dist.destroy_process_group()


def cmd_ranks(args) -> dict:
    import torch.multiprocessing as mp

    device = torch.device(args.device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(rank_worker, args=(args, port, folder), nprocs=args.world)
        ranks = json.loads(Path(folder, "result.json").read_text())
    torch.set_num_threads(args.world * args.threads)
    one, _ = timed_steps(args.batch, device, graph=False, steps=args.steps)
    return {"device": device_name(device), "torch": torch.__version__, "global_batch": args.batch,
            "steps": args.steps,
            "ranks": {"world": args.world, "threads_each": args.threads,
                      "ms_per_step": round(1000 * ranks["seconds"], 2),
                      "images_per_s": round(args.batch / ranks["seconds"]), "weights_agree": ranks["weights_agree"],
                      "batchnorm_all_reduces_per_step": ranks["batchnorm_all_reduces_per_step"]},
            "traffic": traffic(),
            "one_process": {"threads": args.world * args.threads, "ms_per_step": round(1000 * one, 2),
                            "images_per_s": round(args.batch / one)}}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")], default=[16, 32, 64, 128, 256])
    s.add_argument("--steps", type=int, default=50)
    r = sub.add_parser("ranks")
    r.add_argument("--device", default="cpu")
    r.add_argument("--world", type=int, default=2)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    print(json.dumps(cmd_step(args) if args.what == "step" else cmd_ranks(args)))


if __name__ == "__main__":
    main()
