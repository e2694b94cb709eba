"""The conditional DCGAN (`gankit train --conditional`): G and D take the class label.

Training tests use a tiny folder of random 16x16 images in ten class subfolders (8 each,
so an epoch is 5 steps of 16): every code path in seconds, no MNIST needed."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, run_cli
from test_training import assert_resume_is_exact, weights

from conftest import MNIST_DIR, make_class_folder, requires_mnist
from gankit.cli import main
from gankit.models.dcgan import Discriminator, Generator, dcgan_init

SMALL = dict(image_size=16, channels=1, width=8)


@pytest.fixture
def class_folder(tmp_path):
    """tmp/classes/<0..9>/<k>.png: 10 classes of 8 random grayscale images."""
    return make_class_folder(tmp_path / "classes", 10)


@pytest.fixture
def cond_args(class_folder):
    return ["--dataset", "folder", "--data-dir", str(class_folder), "--image-size", "16", "--channels", "1",
            "--width", "8", "--nz", "8", "--batch-size", "16", "--no-progress", "--no-tensorboard",
            "--eval-every", "0", "--conditional"]


def test_the_label_changes_gs_image_and_ds_logit():
    torch.manual_seed(0)
    g = Generator(nz=8, num_classes=10, **{k: v for k, v in SMALL.items()})
    d = Discriminator(num_classes=10, **SMALL)
    dcgan_init(g), dcgan_init(d)
    g.eval(), d.eval()
    assert g.net[0].in_channels == 16 and d.embed.weight.shape == (10, d.net[-1].in_channels)
    z = torch.randn(4, 8)
    with torch.no_grad():
        a, b = g(z, torch.zeros(4, dtype=torch.long)), g(z, torch.full((4,), 3))
        assert a.shape == b.shape == (4, 1, 16, 16)
        assert not torch.allclose(a, b)
        x = torch.rand(4, 1, 16, 16) * 2 - 1
        la, lb = d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.full((4,), 3))
        assert la.shape == lb.shape == (4,)
        assert not torch.allclose(la, lb)
        # The projection is exactly <embed(y), sum over space of h> on top of the last layer.
        h = d.net[:-1](x)
        expected = d.net[-1](h).view(-1) + (d.embed(torch.full((4,), 3)) * h.sum((2, 3))).sum(1)
        assert torch.allclose(lb, expected, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        g(z)
    with pytest.raises(ValueError, match="labels"):
        d(x)


@pytest.mark.parametrize("nz", [8, 100])
def test_gs_class_vectors_start_unit_long_whatever_nz(nz):
    """Each class vector starts about unit long, as a one-hot label (z is sqrt(nz) long):
    at z's own length G drew one digit per class whatever z (models/dcgan.py says why)."""
    torch.manual_seed(0)
    g = Generator(nz=nz, num_classes=1000, **SMALL)
    dcgan_init(g)  # the DCGAN init leaves the embedding as the Generator made it
    lengths = g.embed.weight.norm(dim=1)
    assert lengths.mean().item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("edge", ["4x4", "1x1"])
def test_unconditional_modules_are_unchanged(edge):
    """num_classes=0 builds nothing more: the same keys (old checkpoints load), the same
    initial weights drawn in the same order, the same outputs."""
    def build(**extra):
        torch.manual_seed(1)
        g = Generator(nz=8, edge=edge, **SMALL, **extra)
        d = Discriminator(edge=edge, **SMALL, **extra)
        dcgan_init(g), dcgan_init(d)
        return g.eval(), d.eval(), torch.rand(1)  # the next draw: nothing more was consumed

    g0, d0, after0 = build()
    g1, d1, after1 = build(num_classes=0)
    assert torch.equal(after0, after1)
    for a, b in ((g0, g1), (d0, d1)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(k.startswith("net.") for k in sa)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    z, x = torch.randn(3, 8), torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g0(z), g1(z)) and torch.equal(g1(z), g1.net(z.view(3, 8, 1, 1)))
        assert torch.equal(d0(x), d1(x)) and torch.equal(d1(x), d1.net(x).view(-1))
    # A conditional pair shares everything of D but the embedding, and G but its first layer.
    torch.manual_seed(1)
    gc = Generator(nz=8, edge=edge, num_classes=10, **SMALL)
    assert set(gc.state_dict()) == set(g0.state_dict()) | {"embed.weight"}


def test_a_conditional_run_trains_resumes_exactly_and_draws_a_grid_per_class(tmp_path, cond_args):
    straight, _ = assert_resume_is_exact(tmp_path, cond_args, 7, 3)
    a = weights(straight)
    assert "embed.weight" in a["modules"]["generator"] and "embed.weight" in a["modules"]["discriminator"]
    config = json.loads((straight / "config.json").read_text())
    assert config["conditional"] is True and config["num_classes"] == 10
    # Epoch 1 ended at step 5: its grid is 10 rows (classes) of 10 columns (z's), 16 px + 2 px gaps.
    grid = Image.open(straight / "samples" / "fake_epoch_001.png")
    assert grid.size == (10 * 18 + 2, 10 * 18 + 2)
    line = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert all(np.isfinite(line[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake"))


def test_sample_class_k_draws_class_k(tmp_path, cond_args, capsys):
    from gankit.runs import load_run

    run = tmp_path / "run"
    assert main(["train", *cond_args, "--max-steps", "2", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "6", "--class", "3", "--out", str(tmp_path / "three.npz")]) == 0
    three = torch.from_numpy(np.load(tmp_path / "three.npz")["images"])
    _, task, _, _ = load_run(run)
    z = task.noise(6, rng=torch.Generator().manual_seed(0))
    from gankit.data import to_native
    assert torch.equal(three, to_native(task.generate(z, torch.full((6,), 3)), 16)[:, 0])
    assert not torch.equal(three, to_native(task.generate(z, torch.full((6,), 4)), 16)[:, 0])
    # Without --class: the classes in turn, 0, 1, 2, ...
    assert main(["sample", str(run), "--n", "6", "--out", str(tmp_path / "all.npz")]) == 0
    mixed = torch.from_numpy(np.load(tmp_path / "all.npz")["images"])
    assert torch.equal(mixed, to_native(task.generate(z, torch.arange(6)), 16)[:, 0])
    assert main(["sample", str(run), "--interpolate", "--n", "2", "--steps", "3", "--class", "5",
                 "--out", str(tmp_path / "walk.png")]) == 0
    for k in ("10", "-1"):
        code, err = run_cli(["sample", str(run), "--class", k, "--out", str(tmp_path / "x.npz")], capsys)
        assert_one_line_error(code, err, f"--class {k}", "0 to 9")
    assert not (tmp_path / "x.npz").exists()


def test_class_on_an_unconditional_run_is_a_user_error(tmp_path, tiny_args, capsys):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--eval-every", "0", "--out", str(run)]) == 0
    code, err = run_cli(["sample", str(run), "--class", "3", "--out", str(tmp_path / "s.npz")], capsys)
    assert_one_line_error(code, err, "--class", "--conditional")
    assert not (tmp_path / "s.npz").exists()


def test_conditional_needs_class_subfolders(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(20):
        Image.fromarray(np.full((16, 16), k * 10, np.uint8)).save(flat / f"{k}.png")
    out = tmp_path / "run"
    code, err = run_cli(["train", "--dataset", "folder", "--data-dir", str(flat), "--conditional",
                         "--image-size", "16", "--out", str(out), "--no-progress"], capsys)
    assert_one_line_error(code, err, "--conditional needs labelled data", "one subfolder per class")
    assert not out.exists()


@requires_mnist
def test_conditional_mnist_run_samples_28x28_digits_of_a_class(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(MNIST_DIR), "--conditional", "--width", "8",
                 "--nz", "8", "--batch-size", "16", "--max-steps", "2", "--eval-every", "0", "--no-progress",
                 "--no-tensorboard", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 10 and config["image_size"] == 32
    assert main(["sample", str(run), "--n", "4", "--class", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 28, 28)
