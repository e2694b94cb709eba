"""TensorBoard logging of a run, into RUN/tensorboard: `tensorboard --logdir runs` shows every run.

What it logs: the run's settings once a session (as text, and as hparams for the HPARAMS
tab), every 25 steps the step's losses (`step/...`, read where the loop reads the device
anyway), at every epoch end the epoch's means, images/s and test figures (`epoch/...`),
the judge's figures when there are any (`eval/...`) and the epoch's grids (`samples/...`),
and the real images once. The x axis is the training step throughout, as TensorBoard
expects, so that a resumed session can hide what a crashed one logged after its last
checkpoint (`purge_step`).

Logging is a side channel: a writer that cannot be made (the package missing, a folder
that cannot be written) or that fails later costs one warning line, never the run.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gankit.registry import task_class

FOLDER = "tensorboard"

# The figures the HPARAMS tab shows beside each run's settings: the last value of each tag,
# the model's own (its task's hparam_tags) and the judge's.
EVAL_TAGS = ("eval/fid", "eval/kid", "eval/precision", "eval/recall", "eval/modes")


class Board:
    """A SummaryWriter, or nothing: with no writer (off, or failed) every method does nothing."""

    def __init__(self, writer, log):
        self.writer = writer
        self.log = log

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _writing(self):
        """Run a few writes; the first failure turns logging off with one warning, training goes on."""
        try:
            yield self.writer
        except Exception as e:  # any failure of a side channel: warn, never stop training
            self.log(f"warning: TensorBoard logging stopped ({type(e).__name__}: {first_line(e)}); "
                     "training goes on without it")
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except Exception:  # it failed once already; one warning is enough
                pass

    def start(self, config: dict, step: int, real_png: Path | None) -> None:
        """The settings this run goes on with (a resume may change some), and the real images once."""
        if self.writer is None:
            return
        tags = (*task_class(config["model"]).hparam_tags, *EVAL_TAGS)
        text = json.dumps(config, indent=2)
        with self._writing() as w:
            # Four spaces make a Markdown code block: the text tab shows config.json as it is.
            w.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), step)
            write_hparams(w, config, tags, step)
            if real_png is not None and real_png.exists():
                w.add_image("samples/real", read_png(real_png), 0, dataformats="HWC")
            w.flush()

    def step(self, step: int, metrics: dict[str, torch.Tensor]) -> None:
        """The losses of one step. Called where the loop already waits for the device."""
        if self.writer is None:
            return
        values = torch.stack([v.detach().float() for v in metrics.values()]).tolist()  # one transfer
        with self._writing() as w:
            for name, value in zip(metrics, values):
                w.add_scalar(f"step/{name}", value, step)

    def epoch(self, step: int, record: dict, samples: Path) -> None:
        """An epoch's line of metrics.jsonl, and the grids written for it
        (samples/fake_epoch_NNN.png -> samples/fake, recon_epoch_NNN.png -> samples/recon)."""
        if self.writer is None:
            return
        pictures = sorted(Path(samples).glob(f"*_epoch_{record['epoch']:03d}.png"))
        with self._writing() as w:
            for name, value in record.items():
                if name in ("epoch", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue  # the axes, and lists such as eval_histogram
                w.add_scalar(scalar_tag(name), value, step)
            for path in pictures:
                w.add_image(f"samples/{path.name.split('_epoch_')[0]}", read_png(path), step, dataformats="HWC")
            w.flush()  # an epoch is worth seeing now, not after flush_secs

    def close(self) -> None:
        if self.writer is None:
            return
        with self._writing() as w:
            w.close()
        self.writer = None


def open_board(run: Path, config, step: int, log) -> Board:
    """A Board writing to RUN/tensorboard from `step` on; an idle one when off or when no writer
    can be made (the warning says why)."""
    if not config.tensorboard:
        return Board(None, log)
    try:
        from torch.utils.tensorboard import SummaryWriter

        # On resume, TensorBoard hides what an earlier session logged after the checkpoint
        # this one starts from (steps a crash or Ctrl-C left behind); they are logged anew.
        writer = SummaryWriter(str(run / FOLDER), purge_step=step + 1 if step else None)
    except Exception as e:  # ImportError, OSError, or whatever else the writer raises
        log(f"warning: no TensorBoard logging ({type(e).__name__}: {first_line(e)}); training goes on "
            "without it (--no-tensorboard silences this)")
        return Board(None, log)
    board = Board(writer, log)
    board.start(config.to_dict(), step, run / "samples" / "real.png" if step == 0 else None)
    return board


def write_hparams(writer, config: dict, metric_tags: tuple[str, ...], step: int) -> None:
    """The settings as hparams in this run's own folder (SummaryWriter.add_hparams would
    make a second run in a subfolder named by the time)."""
    from torch.utils.tensorboard.summary import hparams

    settings = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
    for summary in hparams(settings, {tag: 0.0 for tag in metric_tags}):
        writer.file_writer.add_summary(summary, step)


def scalar_tag(name: str) -> str:
    """metrics.jsonl's key -> a TensorBoard tag: eval_fid -> eval/fid, loss_d -> epoch/loss_d."""
    if name.startswith("eval_"):
        return "eval/" + name[len("eval_"):]
    return "epoch/" + name


def read_png(path: Path) -> np.ndarray:
    """A grid PNG as uint8 (H, W, 3); TensorBoard shows grayscale as RGB anyway."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "no message"
