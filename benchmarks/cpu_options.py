"""What makes gankit's DCGAN step fast on a CPU: precision, threads and torch.compile,
measured on the same step in one process (alternating rounds, best round counts).

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
from gankit.training.gan import GanTask  # noqa: E402
from gankit.training.runner import Stepper  # noqa: E402


def variant(dtype, compiled: bool) -> Stepper:
    torch.manual_seed(0)
    config = TrainConfig(image_size=32, channels=1).resolved()
    task = GanTask(config, channels=1, device=torch.device("cpu"))
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
            variants[(name, threads, False)] = variant(dtype, False)
            if args.compile:
                variants[(name, threads, True)] = variant(dtype, True)
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
    base = best[("fp32", default_threads, False)]
    rows = [{"precision": k[0], "threads": k[1], "compiled": k[2], "images_per_s": round(v, 1),
             "vs_fp32": round(v / base, 3), "warmup_seconds": round(compile_seconds[k], 1)}
            for k, v in best.items()]
    print(json.dumps({"variants": rows, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
