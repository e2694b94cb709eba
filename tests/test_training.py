import json

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, requires_mnist
from gankit.checkpoint import load_checkpoint
from gankit.cli import main


def weights(run):
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    return state


def assert_same_state(a, b):
    for name in a["modules"]:
        for k, v in a["modules"][name].items():
            assert torch.equal(v, b["modules"][name][k]), f"{name}.{k} differs"
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        for idx in sa:
            for k in sa[idx]:
                assert torch.equal(torch.as_tensor(sa[idx][k]), torch.as_tensor(sb[idx][k]))


def assert_resume_is_exact(tmp_path, flags, total: int, first: int):
    """Train `total` steps straight, and `first` steps + resume to `total`; the two runs must
    end with identical weights and optimizer states. Returns (straight, split) run folders."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *flags, "--max-steps", str(total), "--out", str(straight)]) == 0
    assert main(["train", *flags, "--max-steps", str(first), "--out", str(split)]) == 0
    assert weights(split)["step"] == first
    assert main(["train", "--resume", str(split), "--max-steps", str(total), "--no-progress"]) == 0
    a, b = weights(straight), weights(split)
    assert a["step"] == b["step"] == total
    assert_same_state(a, b)
    return straight, split


def test_run_folder_contents(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "2", "--out", str(run)]) == 0
    assert (run / "samples" / "real.png").exists()
    assert (run / "samples" / "fake_epoch_001.png").exists()
    assert (run / "samples" / "fake_epoch_002.png").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["recipe"] == "dcgan-b64-r1-adam0" and config["beta2"] == 0.99
    assert config["image_size"] == 16 and config["channels"] == 1
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2]
    assert [ln["step"] for ln in lines] == [4, 8]  # 64 images / batch 16
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "images_per_s", "seconds"):
        assert all(np.isfinite(ln[key]) for ln in lines), key
    assert all(0 <= ln["d_real"] <= 1 and 0 <= ln["d_fake"] <= 1 for ln in lines)
    state = weights(run)
    assert state["step"] == 8 and state["gankit_version"]
    assert set(state["modules"]) == {"generator", "discriminator"}
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    assert "cpu" in state["rng"]


@pytest.mark.parametrize("first", [3, 4])  # stop inside an epoch, and exactly at its end
def test_resume_is_exact(tmp_path, tiny_args, first):
    straight, split = assert_resume_is_exact(tmp_path, tiny_args, 7, first)
    # The epoch that spanned the resume logs the same means as the straight run.
    la = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    lb = json.loads((split / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert la[key] == pytest.approx(lb[key], rel=1e-6)


def test_resume_counts_epochs_from_the_start(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2, 3]
    assert weights(run)["step"] == 12


def test_same_seed_same_weights(tmp_path, tiny_args):
    for name in ("a", "b"):
        assert main(["train", *tiny_args, "--max-steps", "2", "--seed", "5", "--out", str(tmp_path / name)]) == 0
    assert_same_state(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_explicit_flags_override_the_recipe(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--recipe", "tutorial", "--beta2", "0.99", "--max-steps", "1",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["beta2"] == 0.99  # explicit flag wins
    assert config["edge"] == "1x1" and config["d_input_bn"] is True and config["init"] == "pytorch"
    state = weights(run)
    assert tuple(state["optimizers"]["generator"]["param_groups"][0]["betas"]) == (0.5, 0.99)


def test_sample_npz_and_grid(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "2", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "20", "--seed", "3", "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["sample", str(run), "--n", "20", "--seed", "3", "--batch-size", "7",
                 "--out", str(tmp_path / "b.npz")]) == 0
    assert main(["sample", str(run), "--n", "20", "--seed", "4", "--out", str(tmp_path / "c.npz")]) == 0
    a, b, c = (np.load(tmp_path / f"{k}.npz")["images"] for k in "abc")
    assert a.shape == (20, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed, same images, whatever the batch size
    assert not np.array_equal(a, c)
    assert main(["sample", str(run), "--grid", str(tmp_path / "g.png")]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "g.png").size == (8 * 18 + 2, 8 * 18 + 2)  # 64 images of 16 px, 2 px gaps


def test_rgb_samples_are_hwc(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--channels", "3", "--max-steps", "1", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8


@requires_mnist
def test_real_mnist_run_gives_28x28_samples(tmp_path):
    """MNIST from ../shared/data/mnist: padded to 32 for the network, 28x28 for the user."""
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(MNIST_DIR), "--width", "8", "--nz", "8", "--batch-size", "64",
                 "--max-steps", "2", "--no-progress", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == 32 and config["channels"] == 1
    from PIL import Image
    assert Image.open(run / "samples" / "real.png").size == (8 * 30 + 2, 8 * 30 + 2)  # 28 px + 2 px gaps
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 28, 28)


def test_resume_drops_metric_lines_the_checkpoint_has_not_seen(tmp_path, tiny_args):
    """A crash after a metrics line but before its checkpoint must not leave duplicates."""
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--epochs", "1", "--out", str(run)]) == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "step": 8}) + "\n" + '{"epoch": 3, "st')  # written, then a crash
    halves = [run / ".losses.png-k1ll3d.tmp", run / "samples" / ".fake_epoch_002.png-x.tmp"]  # killed writes
    for half in halves:
        half.write_bytes(b"half a file")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2] and "loss_d" in lines[1]
    assert not any(h.exists() for h in halves)


def test_ema_generator_averages_resumes_exactly_and_is_what_samples_come_from(tmp_path, tiny_args):
    from gankit.models import Ema
    from gankit.runs import load_run

    straight, split = tmp_path / "straight", tmp_path / "split"
    ema = ["--ema", "0.9"]
    assert main(["train", *tiny_args, *ema, "--max-steps", "6", "--out", str(straight)]) == 0
    assert main(["train", *tiny_args, *ema, "--max-steps", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--max-steps", "6", "--no-progress"]) == 0
    a, b = weights(straight), weights(split)
    assert_same_state(a, b)  # the average and its update count come back exactly
    avg, g = a["modules"]["generator_ema"], a["modules"]["generator"]
    assert int(avg["updates"]) == 6
    assert not torch.equal(avg["module.net.0.weight"], g["net.0.weight"])  # an average, not a copy
    _, task, _, _ = load_run(straight)
    z = task.noise(4, rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        task.generator_ema.eval()
        assert torch.allclose(task.generate(z), task.generator_ema.module(z), atol=1e-6)
        assert not torch.allclose(task.generate(z), task.generator.eval()(z), atol=1e-4)

    # The warm-up: after one update the average sits between the old and new weights.
    lin = torch.nn.Linear(2, 2)
    avg = Ema(lin, 0.999)
    before = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    avg.update(lin)
    keep = 2 / 11  # (1 + t) / (10 + t) at t = 1, below 0.999
    assert torch.allclose(avg.module.weight, keep * before + (1 - keep) * lin.weight.detach())
