"""Pictures of a whole run, redrawn after every epoch: losses.png and progress.gif.

Each is a function of what the run folder already holds (metrics.jsonl and
samples/fake_epoch_NNN.png), so a resumed run draws the same pictures as a straight
one, and both are written atomically: a viewer never sees half a file.
"""

from __future__ import annotations

import io
import math
import re
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gankit.files import loads_strict, write_atomic

# Per-epoch losses: the GAN's two, the VAE's negative ELBO and its two terms, the flow's
# velocity loss. The VAE's test_* figures are drawn dashed in the colour of their training twin.
LOSSES = ("loss_d", "loss_g", "neg_elbo", "recon", "kl", "loss")
# The judge's figures in the order `gankit eval` lists them; any other eval_* figure follows.
EVAL_ORDER = ("fid", "kid", "classifier_score", "precision", "recall", "modes", "kl_to_uniform")
EVAL_COLUMNS = 4


def refresh(run: Path, log=None) -> None:
    """Redraw RUN/losses.png and RUN/progress.gif. These pictures are for watching a run:
    one that cannot be drawn or written costs a warning line, never the run."""
    run = Path(run)
    try:
        write_atomic(run / "losses.png", plot_losses(read_metrics(run / "metrics.jsonl")))
        frames = fake_grids(run / "samples")
        if frames:
            write_atomic(run / "progress.gif", progress_gif(frames))
    except Exception as e:  # disk full, matplotlib missing, ...: the checkpoint matters, not these
        if log:
            reason = (str(e).strip().splitlines() or ["no message"])[0][:200]
            log(f"warning: cannot draw losses.png / progress.gif in '{run}' ({type(e).__name__}: {reason})")


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (metric_lines' rule)."""
    return [record for _, record in metric_lines(Path(path).read_bytes())]


def metric_lines(data: bytes) -> list[tuple[str, dict]]:
    """(line, record) of each line of a metrics.jsonl that is one of gankit's records: a JSON
    object (read strictly: no NaN or Infinity) with a whole-number "epoch" and "step", as the
    loop writes them. A line a crash cut short, or one that was damaged, is skipped."""
    found = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = loads_strict(line)
        except ValueError:
            continue
        if isinstance(record, dict) and all(type(record.get(k)) is int for k in ("epoch", "step")):
            found.append((line, record))
    return found


def curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one figure, over the records that have it as a number."""
    points = [(r["epoch"], float(r[key])) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [e for e, _ in points], [v for _, v in points]


def eval_keys(records: list[dict]) -> list[str]:
    """The judge's figures present in the records (eval_fid, ...), without their *_std companions."""
    found = {k for r in records for k, v in r.items()
             if k.startswith("eval_") and not k.endswith("_std") and isinstance(v, (int, float))}
    known = [f"eval_{name}" for name in EVAL_ORDER if f"eval_{name}" in found]
    return known + sorted(found - set(known))


def plot_losses(records: list[dict]) -> bytes:
    """losses.png: loss_figure as a PNG."""
    return loss_figure(records)._repr_png_()


def loss_figure(records: list[dict]):
    """A matplotlib Figure: the per-epoch losses on top; below, one small panel per eval figure
    when the records have any (their scales differ too much to share one axis: FID ~10, KID
    ~0.01). Made without pyplot (no display, no global state); it shows itself in Jupyter."""
    from matplotlib.ticker import MaxNLocator

    evals = eval_keys(records)
    rows = math.ceil(len(evals) / EVAL_COLUMNS)
    fig = _figure_class()(figsize=(8, 4 + 2.2 * rows), dpi=100, layout="constrained")
    grid = fig.add_gridspec(1 + rows, EVAL_COLUMNS, height_ratios=[4] + [2.2] * rows)
    ax = fig.add_subplot(grid[0, :])
    draw_losses(ax, records)
    for i, key in enumerate(evals):
        # sharex: an eval point sits under the epoch of the losses it belongs to
        draw_eval(fig.add_subplot(grid[1 + i // EVAL_COLUMNS, i % EVAL_COLUMNS], sharex=ax), records, key)
    for axis in fig.axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return fig


@cache
def _figure_class():
    """matplotlib's Figure with a PNG of itself for Jupyter's display (_repr_png_), made on
    first use so that importing gankit does not import matplotlib."""
    from matplotlib.figure import Figure

    class PngFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png")
            return buf.getvalue()

    return PngFigure


def draw_losses(ax, records: list[dict]) -> None:
    for i, key in enumerate(k for k in LOSSES if curve(records, k)[0]):
        colour = f"C{i}"
        ax.plot(*curve(records, key), marker="o", markersize=3, color=colour, label=key)
        test = curve(records, f"test_{key}")
        if test[0]:
            ax.plot(*test, marker="o", markersize=3, color=colour, linestyle="--", label=f"test_{key}")
    ax.set_xlabel("epoch")
    ax.set_title("losses, mean per epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")


def draw_eval(ax, records: list[dict], key: str) -> None:
    epochs, values = curve(records, key)
    std = dict(zip(*curve(records, f"{key}_std")))
    ax.errorbar(epochs, values, yerr=[std.get(e, 0.0) for e in epochs], marker="o", markersize=3, capsize=2)
    ax.set_title(key[len("eval_"):], fontsize="small")
    ax.tick_params(labelsize="x-small")
    ax.grid(alpha=0.3)


def fake_grids(samples: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of samples/fake_epoch_NNN.png, in epoch order (NNN may pass 999)."""
    found = []
    for path in Path(samples).glob("fake_epoch_*.png"):
        match = re.fullmatch(r"fake_epoch_(\d+)\.png", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def progress_gif(frames: list[tuple[int, Path]], *, frame_ms: int = 400, hold_ms: int = 2000) -> bytes:
    """An animated GIF of the fixed-noise grids, one frame per epoch, each captioned with its
    epoch; the last frame stays hold_ms before the loop starts over."""
    pictures = [captioned(path, f"epoch {epoch}") for epoch, path in frames]
    durations = [frame_ms] * (len(pictures) - 1) + [hold_ms]
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return buf.getvalue()


def captioned(path: Path, text: str) -> Image.Image:
    """The grid with a strip below it saying `text`. Besides telling the epoch, the caption keeps
    every frame distinct: Pillow merges identical consecutive frames into one."""
    with Image.open(path) as grid:
        grid = grid.convert("RGB" if grid.mode not in ("L", "RGB") else grid.mode)
        font = ImageFont.load_default()
        strip = 14
        frame = Image.new(grid.mode, (grid.width, grid.height + strip), 0)
        frame.paste(grid, (0, 0))
    white = 255 if frame.mode == "L" else (255, 255, 255)
    ImageDraw.Draw(frame).text((2, grid.height + 1), text, fill=white, font=font)
    return frame
