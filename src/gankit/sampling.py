"""Turning images into things a person keeps: PNG grids, .npz arrays, latent walks.

Images here are uint8 (N, C, H, W) at the dataset's native size.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gankit import seeds
from gankit.checks import whole_number
from gankit.data import to_native
from gankit.data.folder_cache import available_memory
from gankit.errors import UserError
from gankit.files import write_atomic


def grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 picture (rows, cols, C), nrow images a row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    pics = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        canvas[y:y + h, x:x + w] = pics[i]
    return canvas


def grid_png(images: torch.Tensor, *, nrow: int | None = None) -> bytes:
    """uint8 (N, C, H, W) -> the bytes of a PNG grid (grayscale for one channel)."""
    picture = grid(images, nrow=nrow)
    if picture.shape[2] == 1:
        picture = picture[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: Path, *, nrow: int | None = None) -> None:
    write_atomic(Path(path), grid_png(images, nrow=nrow))


def to_array(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, H, W) for one channel, (N, H, W, 3) for RGB."""
    x = images.cpu().numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def from_array(array: np.ndarray, name: str) -> torch.Tensor:
    """The inverse of to_array: (N, H, W) or (N, H, W, C) -> (N, C, H, W); UserError when
    the array cannot be images (`name` says where it came from)."""
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise UserError(f"'{name}' holds an array 'images' of shape {tuple(array.shape)}; it needs uint8 images "
                        "of shape (N, H, W) or (N, H, W, 3), as `gankit sample` writes them")
    images = torch.from_numpy(np.ascontiguousarray(array))
    return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)


def save_npz(images: torch.Tensor, path: Path) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=to_array(images))
    write_atomic(Path(path), buf.getvalue())


def balanced_labels(n: int, classes: int) -> torch.Tensor:
    """0, 1, ..., C-1, 0, 1, ...: n labels (on the CPU), every class as often as n allows."""
    return torch.arange(n) % classes


def check_label(task, label: int | None, run) -> None:
    """`sample --class K` (Run.sample(label=K)): a conditional run, and K one of its classes."""
    if label is None:
        return
    classes = task.num_classes  # 0: unconditional (the task protocol)
    if not classes:
        raise UserError(f"--class needs a conditional run (trained with --conditional); '{run}' is not one")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < classes:
        raise UserError(f"--class {label!r:.20} is not a class of '{run}'; use 0 to {classes - 1}")


def sample_labels(task, n: int, label: int | None = None) -> torch.Tensor | None:
    """The labels `generate` draws n images of: None for an unconditional task; else
    `label` for every image, or, when None, balanced_labels."""
    classes = task.num_classes  # 0: unconditional (the task protocol)
    if not classes:
        return None
    if label is not None:
        return torch.full((n,), int(label), dtype=torch.long)
    return balanced_labels(n, classes)


def generate(task, n: int, *, seed: int, native: int, batch_size: int = 500,
             label: int | None = None) -> torch.Tensor:
    """n images, uint8 (n, C, native, native) on the CPU, from a trained task.

    All of z comes at once from one seeded CPU generator, so the same seed gives the
    same images whatever the batch size or device. A conditional task draws every image
    as class `label`, or (None) the classes in turn: sample_labels."""
    check_room(n, task, native)
    z = task.noise(n, rng=torch.Generator().manual_seed(seeds.check(seed)))
    return decode(task, z, native=native, batch_size=batch_size, labels=sample_labels(task, n, label))


def check_walk(steps) -> None:
    """A walk's image count (`--steps`): at least its two ends."""
    whole_number(steps, "--steps", low=2, why=" (a walk has two ends)")


def check_room(n: int, task, native: int, *, flag: str = "--n") -> None:
    """Refuse a sample count whose images cannot fit in memory (before trying to allocate
    them), saying how many would: each image is its z (float32) and its uint8 pixels twice
    (the tensor, and the array a caller gets from it)."""
    per_image = 4 * task.nz + 2 * task.channels * native * native
    available = available_memory()
    if available is not None and n * per_image > available:
        fit = available // per_image
        raise UserError(f"{flag} {n} needs {n * per_image / 2**30:.1f} GiB for the images, more than the "
                        f"{available / 2**30:.1f} GiB of memory available; at most {fit} fit at once "
                        "(draw more in parts, each with its own --seed)")


def decode(task, z: torch.Tensor, *, native: int, batch_size: int = 500,
           labels: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, C, native, native) on the CPU from z (N, nz) (and, conditional,
    labels (N,)), batch_size at a time."""
    if labels is None:
        return torch.cat([to_native(task.generate(zb), native).cpu() for zb in z.split(batch_size)])
    return torch.cat([to_native(task.generate(zb, yb.to(task.device)), native).cpu()
                      for zb, yb in zip(z.split(batch_size), labels.split(batch_size))])


def slerp(a: torch.Tensor, b: torch.Tensor, t, *, eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation from a (t=0) to b (t=1), over the last dimension.

    a, b: (..., D); t: a number or a tensor that broadcasts against a[..., :1], e.g.
    a, b (rows, 1, D) and t (1, steps, 1) give (rows, steps, D). Why not a straight
    line: z ~ N(0, I) lies near the sphere of radius sqrt(D), and the midpoint of two such
    points has a norm of about sqrt(D / 2), where the generator never saw a z; slerp keeps
    the norm between two vectors of equal norm (White 2016, "Sampling Generative Networks").
    Where the great circle is not defined (nearly parallel or opposite vectors, a zero
    vector), it falls back to the straight line. t=0 and t=1 give a and b exactly.
    """
    # float64 for the angle: arccos of a float32 cosine near +-1 loses most of its digits.
    a64, b64 = a.double(), b.double()
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / norms.clamp_min(1e-300)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    straight = (sin < eps) | (norms == 0)
    sin = torch.where(straight, torch.ones_like(sin), sin)  # no 0/0, even in the branch not taken
    wa = torch.where(straight, 1 - t, torch.sin((1 - t) * omega) / sin)
    wb = torch.where(straight, t, torch.sin(t * omega) / sin)
    return (wa * a64 + wb * b64).to(a.dtype)


def walks(task, rows: int, steps: int, *, seed: int, native: int, batch_size: int = 500,
          label: int | None = None) -> torch.Tensor:
    """`rows` latent walks of `steps` images each: uint8 (rows * steps, C, native, native),
    walk after walk. Walk i goes by slerp from one z to another, both drawn from one seeded
    CPU generator: the same seed gives the same walks on every device and batch size.
    A conditional task keeps one class along a walk: `label`, or class i % C for walk i."""
    check_walk(steps)
    check_room(rows * steps, task, native, flag=f"--n {rows} walks of --steps")
    ends = task.noise(2 * rows, rng=torch.Generator().manual_seed(seeds.check(seed))).cpu()
    t = torch.arange(steps, dtype=torch.float64) / (steps - 1)         # exactly 0 and 1 at the ends
    z = slerp(ends[:rows, None], ends[rows:, None], t[None, :, None])   # (rows, steps, nz)
    per_row = sample_labels(task, rows, label)
    labels = None if per_row is None else per_row.repeat_interleave(steps)
    return decode(task, z.flatten(0, 1).to(task.device), native=native, batch_size=batch_size, labels=labels)


def walk_gif(images: torch.Tensor, rows: int, steps: int, *, frame_ms: int = 120, hold_ms: int = 600) -> bytes:
    """An animated GIF of `walks`' images: frame t shows every walk at its step t, up to 4
    walks a row. It goes forward and back (2 * steps - 2 frames), so it loops without a jump,
    and rests at the two ends. Scaled up by a whole factor (nearest neighbour) to about 64 px
    an image: GIF viewers show pictures at their own size, and 28 px digits are hard to see."""
    _, c, h, w = images.shape
    scale = max(1, 64 // h)
    by_step = images.view(rows, steps, c, h, w).transpose(0, 1)     # (steps, rows, C, H, W)
    order = list(range(steps)) + list(range(steps - 2, 0, -1))
    frames = []
    for t in order:
        picture = grid(by_step[t], nrow=min(rows, 4))
        frame = Image.fromarray(picture[:, :, 0] if c == 1 else picture)
        frames.append(frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST))
    durations = [hold_ms if t in (0, steps - 1) else frame_ms for t in order]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buf.getvalue()


def save_walks(images: torch.Tensor, rows: int, steps: int, png: Path, gif: Path) -> None:
    """The walks as a PNG grid, one walk a row, and as an animated GIF (walk_gif)."""
    save_grid(images, Path(png), nrow=steps)
    write_atomic(Path(gif), walk_gif(images, rows, steps))
