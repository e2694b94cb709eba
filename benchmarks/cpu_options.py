"""What makes gankit's DCGAN step fast on a CPU: precision, threads, channels_last and
torch.compile, measured on the same step in one process (alternating rounds, best round
counts); and the cost of batching through a DataLoader against gankit's in-place batches.

  python benchmarks/cpu_options.py                  # about 2 minutes on 2 cores
  python benchmarks/cpu_options.py --compile        # adds torch.compile (slow to compile)

Prints one JSON object: images/s of each variant at batch 128, 32x32, and each one's
speed relative to fp32 at the default thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from gankit.config import TrainConfig  # noqa: E402
from gankit.resolve import resolve  # noqa: E402
from gankit.training.gan import GanTask  # noqa: E402
from gankit.training.runner import Batches, Stepper  # noqa: E402


def variant(dtype, compiled: bool, channels_last: bool = True) -> Stepper:
    torch.manual_seed(0)
    config = resolve(TrainConfig(recipe="dcgan", image_size=32, channels=1))
    task = GanTask(config, channels=1, device=torch.device("cpu"), channels_last=channels_last)
    if compiled:
        task.generator.forward = torch.compile(task.generator.forward)
        task.discriminator.forward = torch.compile(task.discriminator.forward)
    return Stepper(task, torch.device("cpu"), dtype=dtype, graph=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    default_threads = torch.get_num_threads()
    real = torch.rand(128, 1, 32, 32) * 2 - 1
    variants = {}
    for threads in sorted({1, default_threads}):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            variants[(name, threads, False, True)] = variant(dtype, False)
            variants[(name, threads, False, False)] = variant(dtype, False, channels_last=False)
            if args.compile:
                variants[(name, threads, True, True)] = variant(dtype, True)
    compile_seconds = {}
    for key, stepper in variants.items():  # warm-up, and compilation where asked
        torch.set_num_threads(key[1])
        start = time.perf_counter()
        for _ in range(2):
            stepper(real)
        compile_seconds[key] = time.perf_counter() - start
    best = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for key, stepper in variants.items():
            torch.set_num_threads(key[1])
            start = time.perf_counter()
            for _ in range(args.steps):
                stepper(real)
            best[key] = max(best[key], args.steps * 128 / (time.perf_counter() - start))
    base = best[("fp32", default_threads, False, True)]
    rows = [{"precision": k[0], "threads": k[1], "compiled": k[2], "channels_last": k[3],
             "images_per_s": round(v, 1), "vs_fp32": round(v / base, 3),
             "warmup_seconds": round(compile_seconds[k], 1)}
            for k, v in best.items()]
    torch.set_num_threads(default_threads)
    print(json.dumps({"variants": rows, "batching": batching(), "torch": torch.__version__}))


def batching(steps: int = 200, batch_size: int = 128) -> dict:
    """Seconds for `steps` batches of 60,000 MNIST-sized images: the tutorial's DataLoader
    over a float TensorDataset against gankit's Batches over the uint8 tensor."""
    images = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images.float() / 127.5 - 1),
                                         batch_size=batch_size, shuffle=True, drop_last=True)
    start = time.perf_counter()
    for i, (batch,) in zip(range(steps), loader):
        torch.nn.functional.pad(batch, (2, 2, 2, 2), value=-1.0)  # the tutorial's 32x32
    dataloader = time.perf_counter() - start
    batches = Batches(images, batch_size=batch_size, seed=0, image_size=32, device=torch.device("cpu"))
    start = time.perf_counter()
    for i in range(steps):
        batches.batch(0, i)
    gankit = time.perf_counter() - start
    return {"steps": steps, "batch_size": batch_size, "dataloader_seconds": round(dataloader, 3),
            "gankit_batches_seconds": round(gankit, 3)}


if __name__ == "__main__":
    main()
