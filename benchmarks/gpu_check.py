"""The GPU checks of the fast path, in one script for a machine with a CUDA GPU (a few minutes).

1. Eager and graphed steps from the same seed on the same batches: the per-step losses
   agree within bf16 tolerance (the graph replays the same step; only kernel choices and
   bf16 rounding may differ).
2. 10 MNIST epochs at defaults: the sum of the epochs' training seconds (what the speed
   target counts) and the whole wall time (with setup, pictures and checkpoints).
3. benchmarks/throughput.py --device cuda.
4. Every GAN option of issue 14 (losses, SN, R1 with its lazy second graph, DiffAugment,
   packing, TTUR and D steps, the ResNet) and the flow model (each time distribution,
   conditional with its label drop) captured as CUDA graphs: the capture must not
   fall back, and its losses agree with eager steps from the same seed.
Also: a dataset streamed from pinned memory gives the same batches as a resident one.

  PYTHONPATH=src python benchmarks/gpu_check.py --data-dir DIR --out OUT
Prints one JSON object and writes it to OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from gankit.config import TrainConfig  # noqa: E402
from gankit.registry import task_class  # noqa: E402
from gankit.resolve import resolve  # noqa: E402
from gankit.training.loop import train  # noqa: E402
from gankit.training.runner import Batches, Stepper  # noqa: E402

OPTIONS = {  # TrainConfig settings of each option, as tests/test_gan_options.py runs them on the CPU
    "hinge": {"loss": "hinge"}, "lsgan": {"loss": "lsgan"}, "sn": {"sn": True, "d_bn": False},
    "r1": {"r1": 1.0, "r1_every": 4}, "diffaugment": {"diffaugment": "color,translation,cutout"},
    "pack": {"pack": 2}, "ttur-d-steps": {"lr_d": 4e-4, "lr_g": 1e-4, "d_steps": 2},
    "ema": {"ema": 0.999}, "sngan-resnet": {"recipe": "sngan"}, "hflip": {"hflip": True},
    "flow": {"model": "flow"}, "flow-uniform-t": {"model": "flow", "time_dist": "uniform"},
    "flow-conditional": {"model": "flow", "conditional": True, "num_classes": 10},
}


def losses(graph: bool, steps: int, **settings) -> tuple[list[list[float]], bool]:
    """Per-step metrics (a GAN's loss_d, loss_g; a flow's loss) of `steps` steps from seed 0,
    and whether a graph ran."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    config = resolve(TrainConfig(**{"recipe": "dcgan", **settings}, image_size=32, channels=1))
    cls = task_class(config.model)
    task = cls(config, channels=1, device=device, native_size=32)
    per_step = 128 * cls.batches_per_step(config)
    images = torch.randint(0, 256, (per_step * steps, 1, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(2))
    batches = Batches(images, labels, batch_size=per_step, seed=0, image_size=32, device=device)
    stepper = Stepper(task, device, dtype=torch.bfloat16, graph=graph, log=print, hflip=config.hflip)
    out = []
    for i in range(steps):
        batch = (batches.batch(0, i), batches.labels(0, i)) if config.conditional else (batches.batch(0, i),)
        m = stepper(*batch, regularize=task.regularizes(i))
        out.append([float(m[k]) for k in cls.metric_names[:2]])
    return out, stepper.graph and bool(stepper._graphs)


def worst_difference(eager, graphed) -> float:
    return max(abs(a - b) / max(abs(a), 1e-3) for ea, ga in zip(eager, graphed) for a, b in zip(ea, ga))


def options_capture() -> dict:
    """Each option, eager and graphed; R1 every 4 steps captures its second graph by step 16."""
    found = {}
    for name, settings in OPTIONS.items():
        eager, _ = losses(False, 20, **settings)
        graphed, captured = losses(True, 20, **settings)
        found[name] = {"captured": captured, "max_relative_difference": worst_difference(eager, graphed),
                       "first": graphed[0], "last": graphed[-1]}
        print(json.dumps({name: found[name]}), flush=True)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="the four MNIST files (default: gankit's data folder)")
    p.add_argument("--out", default="gpu-check")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    (eager, _), (graphed, _) = losses(False, 30), losses(True, 30)
    worst = worst_difference(eager, graphed)
    result["eager_vs_graph"] = {"steps": 30, "max_relative_difference": worst, "agree": worst < 0.05,
                                "eager_first": eager[0], "graph_first": graphed[0],
                                "eager_last": eager[-1], "graph_last": graphed[-1]}
    print(json.dumps(result["eager_vs_graph"]), flush=True)
    result["options"] = options_capture()

    import gankit.training.runner as runner  # the pinned-memory fallback gives the same batches
    images = torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8)
    kw = dict(batch_size=100, seed=0, image_size=32, device=torch.device("cuda"))
    resident = runner.Batches(images, **kw)
    runner.GPU_DATA_FRACTION = 0.0
    streamed = runner.Batches(images, **kw)
    runner.GPU_DATA_FRACTION = 0.5
    result["streaming"] = {"streamed": streamed.streamed and not resident.streamed,
                           "same_batches": all(torch.equal(resident.batch(1, i), streamed.batch(1, i))
                                               for i in range(10))}
    print(json.dumps(result["streaming"]), flush=True)

    started = time.perf_counter()
    run = train(TrainConfig(recipe="dcgan", data_dir=args.data_dir, out=str(out / "mnist-10"), progress=False,
                            eval_every=0, save_every="0"))
    wall = time.perf_counter() - started
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result["mnist_10_epochs"] = {"training_seconds": sum(e["seconds"] for e in epochs), "wall_seconds": wall,
                                 "images_per_s": [round(e["images_per_s"]) for e in epochs],
                                 "last_epoch": {k: epochs[-1][k] for k in ("loss_d", "loss_g", "d_real", "d_fake")}}
    print(json.dumps(result["mnist_10_epochs"]), flush=True)

    bench = subprocess.run([sys.executable, str(Path(__file__).with_name("throughput.py")), "--device", "cuda"],
                           capture_output=True, text=True)
    result["throughput"] = json.loads(bench.stdout) if bench.returncode == 0 else {"error": bench.stderr[-2000:]}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
