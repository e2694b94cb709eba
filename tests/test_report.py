"""What a run shows while it trains: TensorBoard events, losses.png and progress.gif."""

import io
import json

import pytest
from PIL import Image

from gankit import report
from gankit.checkpoint import load_checkpoint
from gankit.cli import main


def board(run):
    """Everything TensorBoard would show for a run, read back from its event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def gif_frames(path):
    """The duration in ms of each frame of a GIF."""
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    return durations


def test_tensorboard_shows_losses_grids_and_settings(tmp_path, tiny_args):
    run = tmp_path / "run"
    # batch 4: 16 steps an epoch, so 2 epochs pass step 25, where the loop reads the step's losses
    assert main(["train", *tiny_args, "--batch-size", "4", "--epochs", "2", "--out", str(run)]) == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = board(run)
    lines = metrics(run)
    for name in ("loss_d", "loss_g", "d_real", "d_fake", "images_per_s"):
        points = acc.Scalars(f"epoch/{name}")
        assert [p.step for p in points] == [16, 32], name  # one point per epoch, at its last step
        assert [p.value for p in points] == pytest.approx([ln[name] for ln in lines], rel=1e-5), name
    for name in ("loss_d", "loss_g"):
        assert steps(acc, f"step/{name}") == [25]  # every 25 steps, nothing in between
    assert [e.step for e in acc.Images("samples/fake")] == [16, 32]
    assert [e.step for e in acc.Images("samples/real")] == [0]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text) == json.loads((run / "config.json").read_text())  # the settings, as config.json

    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    start = HParamsPluginData.FromString(acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    hparams = start.session_start_info.hparams
    assert hparams["nz"].number_value == 8 and hparams["batch_size"].number_value == 4
    assert hparams["recipe"].string_value == "dcgan-b64-r1-adam0"


def test_vae_logs_its_test_figures_and_reconstructions(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--model", "vae", "--latent-dim", "4", "--epochs", "1",
                 "--out", str(run)]) == 0
    acc = board(run)
    for name in ("neg_elbo", "recon", "kl", "test_neg_elbo", "test_recon", "test_kl"):
        assert steps(acc, f"epoch/{name}") == [4], name
    assert [e.step for e in acc.Images("samples/recon")] == [4]
    assert Image.open(run / "losses.png").format == "PNG"


def test_no_tensorboard_writes_no_folder_and_can_change_on_resume(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--no-tensorboard", "--epochs", "1", "--out", str(run)]) == 0
    assert not (run / "tensorboard").exists()
    assert (run / "losses.png").exists() and (run / "progress.gif").exists()  # these are always drawn
    assert main(["train", "--resume", str(run), "--tensorboard", "--epochs", "2", "--no-progress"]) == 0
    assert steps(board(run), "epoch/loss_d") == [8]


def test_losses_png_and_progress_gif_are_redrawn_after_every_epoch(tmp_path, tiny_args, monkeypatch):
    run = tmp_path / "run"
    seen = []
    redraw = report.refresh

    def spy(folder, log=None):
        redraw(folder, log)
        seen.append(((folder / "losses.png").read_bytes(), gif_frames(folder / "progress.gif")))

    monkeypatch.setattr(report, "refresh", spy)
    assert main(["train", *tiny_args, "--epochs", "2", "--out", str(run)]) == 0
    assert len(seen) == 2  # once per epoch
    assert seen[0][0] != seen[1][0]  # epoch 2 added its point
    assert seen[1][0] == (run / "losses.png").read_bytes()
    with Image.open(run / "losses.png") as png:
        assert png.format == "PNG"
        assert 400 <= png.width <= 2000 and 300 <= png.height <= 2000
    assert seen[0][1] == [2000]  # one frame, held
    assert seen[1][1] == [400, 2000]  # one frame per epoch, the last held longer
    with Image.open(run / "progress.gif") as gif, Image.open(run / "samples" / "fake_epoch_002.png") as grid:
        assert gif.width == grid.width  # the fixed-noise grid at its own size (plus a caption strip)
    assert not list(run.glob(".*.tmp"))  # written through temporary files, all renamed


def test_losses_png_gets_a_panel_per_eval_figure():
    records = [{"epoch": e, "step": 10 * e, "loss_d": 1.0 / e, "loss_g": 2.0 / e} for e in (1, 2, 3)]
    plain = Image.open(io.BytesIO(report.plot_losses(records)))
    records[-1].update(eval_fid=12.5, eval_kid=0.01, eval_kid_std=0.002, eval_precision=0.7, eval_recall=0.6,
                       eval_modes=10, eval_histogram=[0.1] * 10)
    assert report.eval_keys(records) == ["eval_fid", "eval_kid", "eval_precision", "eval_recall", "eval_modes"]
    judged = Image.open(io.BytesIO(report.plot_losses(records)))
    assert judged.width == plain.width and judged.height > plain.height  # a second row of panels


def test_resume_goes_on_with_the_same_pictures(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert gif_frames(run / "progress.gif") == [400, 2000]
    acc = board(run)
    assert steps(acc, "epoch/loss_d") == [4, 8]
    assert [e.step for e in acc.Images("samples/fake")] == [4, 8]
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0


def test_a_rolled_back_resume_shows_each_step_once(tmp_path, tiny_args):
    """A crash after epoch 2's events but before its checkpoint: the resume redoes epoch 2, and
    TensorBoard shows the redone epoch only (the writer's purge_step), not both."""
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "2", "--out", str(run)]) == 0
    (run / "checkpoints" / "prev.pt").replace(run / "checkpoints" / "last.pt")  # back to step 4
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    acc = board(run)
    for name in ("loss_d", "images_per_s"):
        assert steps(acc, f"epoch/{name}") == [4, 8], name
    assert [e.step for e in acc.Images("samples/fake")] == [4, 8]
    assert gif_frames(run / "progress.gif") == [400, 2000]


@pytest.mark.parametrize("failure", ["import", "constructor", "write"])
def test_a_failing_writer_warns_and_training_finishes(tmp_path, tiny_args, monkeypatch, capsys, failure):
    import sys

    import torch.utils.tensorboard

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failure == "import":  # the tensorboard package missing
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    elif failure == "constructor":
        monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", refuse)
    else:  # made, then the disk fills up
        monkeypatch.setattr(torch.utils.tensorboard.SummaryWriter, "add_scalar", refuse)
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "2", "--out", str(run)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "TensorBoard" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning:"), warnings
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8
    assert [ln["epoch"] for ln in metrics(run)] == [1, 2]
    assert gif_frames(run / "progress.gif") == [400, 2000]
