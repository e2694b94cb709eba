"""How a task's step runs on a device: where its batches come from, in which precision,
and, on CUDA, replayed from one captured graph.

Whatever the mode, the step is the task's own `step(real)` (`step(real, labels)` for a
conditional run): the eager path calls it,
the graph path captures that same call once and replays it. So a fast run is the same
training as a plain one, and a change to a step changes every mode at once.

- Batches: the uint8 dataset sits on the device (or, when it does not fit a GPU, in
  pinned host memory) and batches are gathered by index from the epoch's permutation,
  in the process, with no DataLoader workers. A memory-mapped dataset too large for host
  memory stays on disk, and each batch is read from there, by the same indices.
- Precision: bf16 autocast where the hardware computes bf16 natively (CUDA GPUs of the
  Ampere generation on; CPUs with AMX or AVX512-BF16), fp32 elsewhere. Weights, the
  optimizers and the losses stay fp32; docs/performance.md has the measurements.
- CUDA graph: the first WARMUP steps run eagerly on a side stream (they are real steps,
  on real batches; they also create the optimizers' state), then the step is captured
  with static input and output buffers, and every later step is a copy into the input
  buffer and one replay. Adam runs with capturable=True so its step counter lives on the
  GPU. Nothing here reads a value back to the host: the loop decides when it syncs.
"""

from __future__ import annotations

import torch

from gankit import seeds
from gankit.data import to_model
from gankit.data.folder_cache import fits_in_memory, is_memory_mapped
from gankit.training.augment import random_hflip

WARMUP = 3                  # eager steps before the capture (PyTorch's CUDA graph notes ask for a few)
GPU_DATA_FRACTION = 0.5     # keep the dataset on the GPU while it takes at most this part of free memory


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bf16 in hardware, so that autocast makes it faster."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later
        if device.type == "cpu":  # private helpers, hence the guard: absent means no
            return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, TypeError, RuntimeError):
        pass
    return False


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision`, or None for plain fp32."""
    if requested == "bf16" or (requested == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The batch order of one epoch, a function of (seed, epoch) only. Drawn on the CPU,
    so that every device trains on the same batches in the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seeds.derive(seed, epoch)))


class Batches:
    """The batches of a uint8 dataset, in the order of (seed, epoch).

    `batch(epoch, i)` is batch i of that epoch, scaled to [-1, 1] at the model's size on
    the device; `labels(epoch, i)` the labels (int64) of the same images, when labels were
    given. The last partial batch of an epoch is dropped, so shapes never change (which a
    captured graph needs), and every image is used at most once per epoch.

    Where the images are kept (`placement`): on the device; in pinned host memory when
    they do not fit a GPU; or, for a memory-mapped dataset (gankit.data.folder_cache) that
    does not fit host memory either, or with stream=True, where they are, each batch read
    on the host (from disk, for a mapped one). Every placement gives the same batches.
    memory_limit: bytes of host memory to assume available (tests, benchmarks).

    Under torchrun, `shard` (gankit.distributed.Ranks.shard) cuts each global batch of
    batch_size images down to this rank's part of it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, batch_size: int, seed: int,
                 image_size: int, device: torch.device, log=None, shard=None, stream: bool = False,
                 memory_limit: int | None = None):
        self.batch_size, self.seed, self.image_size, self.device = batch_size, seed, image_size, device
        self.shard = shard or (lambda indices: indices)
        self.n = len(images)
        self.steps_per_epoch = self.n // batch_size
        where = placement(images, device, stream=stream, memory_limit=memory_limit)
        self.streamed = where != "device"        # batches travel to the device one at a time
        self.from_disk = where == "host"          # ... gathered from the images where they are
        if where == "pinned":
            if log:
                log(f"the dataset ({images.numel() / 2**30:.1f} GiB) does not fit the GPU; "
                    "streaming batches from pinned memory")
            self.images = images.pin_memory()
        elif where == "host":
            if log and is_memory_mapped(images) and not stream:
                log(f"the dataset ({images.numel() / 2**30:.1f} GiB) does not fit in memory; "
                    "reading each batch from its memory-mapped file")
            self.images = images
        else:
            self.images = images.to(device)
        # Batches gathered on the host go to a GPU through pinned memory (an asynchronous copy).
        self._pin = device.type == "cuda" and self.images.device.type == "cpu"
        # Beside the images, where they are (a few bytes an image): gathered by the same indices.
        self._labels = None
        if labels is not None:
            if len(labels) != self.n:
                raise ValueError(f"{len(labels)} labels for {self.n} images")
            labels = labels.long()
            self._labels = labels.to(self.images.device)
            if self._pin:
                self._labels = self._labels.pin_memory()
        self._epoch, self._perm = None, None

    def indices(self, epoch: int, i: int) -> torch.Tensor:
        if self._epoch != epoch:
            self._epoch = epoch
            self._perm = epoch_permutation(self.seed, epoch, self.n).to(self.images.device)
        return self.shard(self._perm[i * self.batch_size:(i + 1) * self.batch_size])

    def batch(self, epoch: int, i: int) -> torch.Tensor:
        indices = self.indices(epoch, i)
        batch = gather_in_order(self.images, indices) if self.from_disk else self.images[indices]
        return to_model(self._to_device(batch), self.image_size)

    def labels(self, epoch: int, i: int) -> torch.Tensor:
        """The labels (N,) of batch(epoch, i)'s images, in the same order, on the device."""
        if self._labels is None:
            raise ValueError("these batches were made without labels")
        return self._to_device(self._labels[self.indices(epoch, i)])

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)


def placement(images: torch.Tensor, device: torch.device, *, stream: bool = False,
              memory_limit: int | None = None) -> str:
    """Where Batches keeps the images: "device", "pinned" (host memory, pinned, for a GPU
    they do not fit) or "host" (left where they are, a memory-mapped file included, and
    each batch gathered from there)."""
    if stream:
        return "host"
    if device.type == "cuda" and fits_on_gpu(images, device):
        return "device"  # a mapped dataset too, when the GPU holds it: read once, through the page cache
    if is_memory_mapped(images) and not fits_in_memory(images.numel() * images.element_size(), limit=memory_limit):
        return "host"    # pinning or copying it would read the whole file into memory it does not fit
    return "pinned" if device.type == "cuda" else "device"


def gather_in_order(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """images[indices], read in increasing index order: from a memory-mapped file, the
    reads then go forward through it (sequential-ish, read-ahead helps) instead of jumping
    about; the rows are then put back in the order of `indices`."""
    order = torch.argsort(indices)
    rows = images[indices[order]]
    out = torch.empty_like(rows)
    out[order] = rows
    return out


def fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= GPU_DATA_FRACTION * free


class Stepper:
    """Calls task.step(*batch, regularize=...) (batch: real, or real and labels) under the
    run's precision; on CUDA with graph=True, from a captured CUDA graph after WARMUP eager
    steps. A task whose steps come in two shapes (a lazy penalty: regularize True on some
    steps) gets one graph for each, each captured after its own warmup. Returns the step's
    0-d metric tensors (with a graph: the same static tensors every time; read or add them
    before the next call)."""

    def __init__(self, task, device: torch.device, *, dtype: torch.dtype | None, graph: bool, log=None,
                 hflip: bool = False):
        self.task, self.device, self.dtype, self.log = task, device, dtype, log
        self.hflip = hflip  # --hflip: the real images flipped at random, inside the step (and its graph)
        self.graph = graph and device.type == "cuda"
        self.eager_steps = {False: 0, True: 0}
        self._graphs: dict[bool, tuple] = {}  # regularize -> (graph, static inputs, static outputs)
        set_capturable(task.optimizers.values(), self.graph)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once

    def eager(self, *batch: torch.Tensor, regularize: bool = False) -> dict[str, torch.Tensor]:
        # cache_enabled=False: autocast's weight-cast cache must not outlive a graph capture.
        if self.hflip:
            batch = (random_hflip(batch[0]), *batch[1:])
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None,
                            cache_enabled=False):
            return self.task.step(*batch, regularize=regularize)

    def __call__(self, *batch: torch.Tensor, regularize: bool = False) -> dict[str, torch.Tensor]:
        if not self.graph:
            return self.eager(*batch, regularize=regularize)
        if regularize not in self._graphs and self.eager_steps[regularize] < WARMUP:
            self.eager_steps[regularize] += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self.eager(*batch, regularize=regularize)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        if regularize not in self._graphs and not self._capture(batch, regularize):
            return self.eager(*batch, regularize=regularize)
        graph, static_in, static_out = self._graphs[regularize]
        for static, given in zip(static_in, batch, strict=True):
            static.copy_(given)
        graph.replay()
        return static_out

    def _capture(self, batch: tuple[torch.Tensor, ...], regularize: bool) -> bool:
        """Record one step; nothing runs during the capture, so no step is lost."""
        static_in = tuple(t.clone() for t in batch)  # one static buffer per input: images, labels
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = self.eager(*static_in, regularize=regularize)
        except RuntimeError as e:  # an op that cannot be captured: train on, eagerly
            self.graph = False
            set_capturable(self.task.optimizers.values(), False)
            if self.log:
                self.log(f"CUDA graph capture failed ({str(e).splitlines()[0][:160]}); "
                         "going on without it (--no-cuda-graph skips the attempt)")
            return False
        self._graphs[regularize] = (graph, static_in, static_out)
        return True


def set_capturable(optimizers, on: bool) -> None:
    """Adam's capturable flag, with its step counters moved to where that flag wants them
    (the GPU when on, the host when off), whatever the checkpoint they came from."""
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" not in group:
                continue
            group["capturable"] = on
            for p in group["params"]:
                state = opt.state.get(p, {})
                if "step" in state and torch.is_tensor(state["step"]):
                    state["step"] = state["step"].to(p.device if on else "cpu", torch.float32)
