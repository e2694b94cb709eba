"""Training throughput: the tutorial's plain loop against gankit's step, in one process.

(a) plain:  the loop as the PyTorch DCGAN tutorial writes it, written out here as the
            reference: a DataLoader over a TensorDataset of float images, fp32, eager,
            Sigmoid + BCELoss, the losses read with .item() every step.
(b) gankit: gankit's own training step, as `gankit train` runs it: the uint8 dataset
            resident on the device, batches gathered in the process, the task's step under
            the run's precision (--precision auto) and, on CUDA, replayed from a CUDA graph.

Both train the same networks (DCGAN, width 64, nz 100) from the same initial weights on
the same images (synthetic uint8 noise: throughput does not depend on the pictures).
Warm-up steps (and the graph capture) are excluded; rounds alternate (a) and (b) and the
best round of each counts, so that a busy machine slows both alike. Prints one JSON
object: images/s of each at batch 128 and 32x32, `ratio` = b / a, and a sweep over batch
size and image size with the peak memory of each (on a CPU, of (b) alone, one timed step
a point: a rough guide to scaling; the ratio is the measured figure).

  python benchmarks/throughput.py                   # CPU, about 2-3 minutes on 2 cores
  python benchmarks/throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gankit.config import TrainConfig  # noqa: E402
from gankit.resolve import resolve  # noqa: E402
from gankit.training.gan import GanTask  # noqa: E402
from gankit.training.runner import WARMUP, Batches, Stepper, resolve_precision  # noqa: E402

NZ, WIDTH, DATASET_SIZE = 100, 64, 60000


def tutorial_nets(size: int, nz: int = NZ, ngf: int = WIDTH) -> tuple[nn.Module, nn.Module]:
    """The tutorial's Generator and Discriminator, for size x size grayscale images."""
    g_layers, ch = [nn.ConvTranspose2d(nz, ngf * size // 8, 4, 1, 0, bias=False)], ngf * size // 8
    g_layers += [nn.BatchNorm2d(ch), nn.ReLU(True)]
    while ch > ngf:
        g_layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
        ch //= 2
    g_layers += [nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh()]
    d_layers, ch = [nn.Conv2d(1, ngf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)], ngf
    while ch < ngf * size // 8:
        d_layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
        ch *= 2
    d_layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    return nn.Sequential(*g_layers), nn.Sequential(*d_layers)


def weights_init(m: nn.Module) -> None:  # the tutorial's
    if "Conv" in type(m).__name__:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif "BatchNorm" in type(m).__name__:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


class Plain:
    """(a): the tutorial's training loop, step by step."""

    def __init__(self, images: torch.Tensor, batch_size: int, size: int, device: torch.device):
        self.device = device
        data = torch.utils.data.TensorDataset(images.float() / 127.5 - 1)  # the transform's [-1, 1]
        self.loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
        self.it = iter(self.loader)
        self.netG, self.netD = tutorial_nets(size)
        self.netG.to(device).apply(weights_init)
        self.netD.to(device).apply(weights_init)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.losses = []

    def step(self) -> None:
        try:
            (data,) = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            (data,) = next(self.it)
        real = data.to(self.device)
        b = real.size(0)
        label = torch.full((b,), 1.0, device=self.device)
        self.netD.zero_grad()
        err_real = self.criterion(self.netD(real).view(-1), label)
        err_real.backward()
        fake = self.netG(torch.randn(b, NZ, 1, 1, device=self.device))
        label.fill_(0.0)
        err_fake = self.criterion(self.netD(fake.detach()).view(-1), label)
        err_fake.backward()
        self.optD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        err_g = self.criterion(self.netD(fake).view(-1), label)
        err_g.backward()
        self.optG.step()
        self.losses.append(((err_real + err_fake).item(), err_g.item()))  # as the tutorial logs


class Gankit:
    """(b): gankit's step, through the same Batches and Stepper as `gankit train`."""

    def __init__(self, images: torch.Tensor, batch_size: int, size: int, device: torch.device, precision: str,
                 graph: bool):
        config = resolve(TrainConfig(recipe="dcgan", image_size=size, channels=1, batch_size=batch_size,
                                     precision=precision, cuda_graph=graph))
        self.task = GanTask(config, channels=1, device=device)
        self.batches = Batches(images, batch_size=batch_size, seed=0, image_size=size, device=device)
        self.stepper = Stepper(self.task, device, dtype=resolve_precision(precision, device), graph=graph)
        self.i = 0
        self.sums: dict = {}

    def step(self) -> None:
        epoch, i = divmod(self.i, self.batches.steps_per_epoch)
        metrics = self.stepper(self.batches.batch(epoch, i))
        for k, v in metrics.items():  # the loop's running sums: no host sync per step
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.i += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(loop, steps: int, batch_size: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loop.step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def compare(images, batch_size, size, device, args, rounds, steps, warmup, plain: bool = True) -> dict:
    """images/s of (a) and (b) (or of (b) alone), best of `rounds` alternating rounds; peak
    memory of each on CUDA."""
    result = {"batch_size": batch_size, "image_size": size}
    loops = {}
    makers = [("plain", lambda: Plain(images, batch_size, size, device))] if plain else []
    makers.append(("gankit", lambda: Gankit(images, batch_size, size, device, args.precision, args.graph)))
    for name, make in makers:
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        loops[name] = make()
        for _ in range(warmup):
            loops[name].step()
        sync(device)
    best = {name: 0.0 for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            best[name] = max(best[name], timed(loop, steps, batch_size, device))
            if device.type == "cuda":
                result[f"{name}_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    for name in loops:
        result[f"{name}_images_per_s"] = round(best[name], 1)
    if plain:
        result["ratio"] = round(best["gankit"] / best["plain"], 3)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="gankit's (b)")
    p.add_argument("--no-graph", dest="graph", action="store_false", help="(b) without the CUDA graph")
    p.add_argument("--steps", type=int, help="timed steps per round at batch 128, 32x32 (cpu 8, cuda 200)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sweep-steps", type=int, help="timed steps per sweep point (cpu 1, cuda 50)")
    p.add_argument("--sweep-plain", action=argparse.BooleanOptionalAction,
                   help="time the plain loop in the sweep too (default: on cuda; on a cpu it would "
                   "double the 3 minutes)")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 128, 256, 512, 1024])
    p.add_argument("--image-sizes", type=int, nargs="*", default=[32, 64])
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but PyTorch sees no CUDA GPU")
    cuda = device.type == "cuda"
    steps = args.steps or (200 if cuda else 8)
    sweep_steps = args.sweep_steps or (50 if cuda else 1)
    sweep_plain = cuda if args.sweep_plain is None else args.sweep_plain
    warmup = WARMUP + 2  # covers (b)'s eager steps and its capture

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    data = {s: torch.randint(0, 256, (DATASET_SIZE, 1, s, s), dtype=torch.uint8, generator=generator)
            for s in sorted(set(args.image_sizes) | {32})}
    main_point = compare(data[32], 128, 32, device, args, args.rounds, steps, warmup)
    sweep = []
    for size in args.image_sizes:
        for bs in args.batch_sizes:
            point = compare(data[size], bs, size, device, args, 1, sweep_steps, warmup if cuda else 1, sweep_plain)
            sweep.append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)
    dtype = resolve_precision(args.precision, device)
    print(json.dumps({
        "ratio": main_point["ratio"],
        "plain_images_per_s": main_point["plain_images_per_s"],
        "gankit_images_per_s": main_point["gankit_images_per_s"],
        "batch_size": 128, "image_size": 32,
        "gankit_mode": {"precision": "bf16" if dtype is not None else "fp32",
                        "cuda_graph": bool(cuda and args.graph)},
        "main": main_point, "sweep": sweep,
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
