"""Latent walks: slerp, and `gankit sample --interpolate` (a PNG grid and a GIF)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, run_cli

from gankit.cli import main
from gankit.sampling import slerp


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_slerp_ends_exactly_at_its_endpoints():
    a, b = gaussian(5, 100, seed=1), gaussian(5, 100, seed=2)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    t = torch.arange(8, dtype=torch.float64) / 7
    walk = slerp(a[:, None], b[:, None], t[None, :, None])
    assert walk.shape == (5, 8, 100) and walk.dtype == a.dtype
    assert torch.equal(walk[:, 0], a) and torch.equal(walk[:, -1], b)


def test_slerp_keeps_the_norm_and_the_angle_steps_evenly():
    a = gaussian(100, seed=3)
    b = gaussian(100, seed=4)
    b = b * a.norm() / b.norm()  # equal norms
    t = torch.linspace(0, 1, 11)
    walk = slerp(a[None], b[None], t[:, None])  # (11, 100)
    assert torch.allclose(walk.norm(dim=1), a.norm().expand(11), rtol=1e-5)
    # On the great circle: equal t steps are equal angles.
    unit = walk / walk.norm(dim=1, keepdim=True)
    angles = torch.arccos((unit[:-1] * unit[1:]).sum(1).clamp(-1, 1))
    assert torch.allclose(angles, angles.mean().expand(10), rtol=1e-3)
    # A straight line would not: its midpoint is about 1/sqrt(2) as long for orthogonal-ish z.
    assert ((a + b) / 2).norm() < 0.8 * a.norm()


def test_slerp_falls_back_to_a_straight_line_for_parallel_vectors():
    a = gaussian(16, seed=5)
    t = torch.tensor([[0.0], [0.25], [0.5], [1.0]])
    for b in (3 * a, a * (1 + 1e-7), -a, a + 1e-9):  # parallel, nearly, opposite, nearly equal
        walk = slerp(a[None], b[None], t)
        assert torch.isfinite(walk).all()
        lerp = a[None] + t * (b - a)[None]
        assert torch.allclose(walk, lerp, atol=1e-5)


def test_slerp_never_gives_nan():
    zero = torch.zeros(8)
    a = gaussian(8, seed=6)
    for x, y in ((zero, a), (a, zero), (zero, zero), (a, a)):
        walk = slerp(x[None], y[None], torch.linspace(0, 1, 5)[:, None])
        assert torch.isfinite(walk).all()
        assert torch.equal(walk[0], x) and torch.equal(walk[-1], y)


def test_slerp_of_orthogonal_unit_vectors_is_the_quarter_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


def gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as gif:
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.array(gif.convert("L")))
    return frames


def picture(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"))


def test_sample_interpolate_writes_a_png_grid_and_a_gif(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "2", "--out", str(run)]) == 0
    walk = tmp_path / "walk.png"
    assert main(["sample", str(run), "--interpolate", "--n", "3", "--steps", "5", "--seed", "7",
                 "--out", str(walk)]) == 0
    grid = picture(walk)
    assert grid.shape == (3 * 18 + 2, 5 * 18 + 2)  # 3 walks, 5 steps a row; 16 px images, 2 px gaps
    frames = gif_frames(tmp_path / "walk.gif")
    assert len(frames) == 2 * 5 - 2  # forward and back
    # A frame: the 3 walks side by side, 16 px images scaled by 4 to 64 px.
    assert frames[0].shape == (4 * (18 + 2), 4 * (3 * 18 + 2))
    # The GIF's frame t shows the grid's column t.
    for t in (0, 2, 4):
        first_walk_in_png = grid[2:18, 2 + 18 * t:18 + 18 * t]
        first_walk_in_gif = frames[t][4 * 2:4 * 18:4, 4 * 2:4 * 18:4]
        assert np.array_equal(first_walk_in_png, first_walk_in_gif), t
    assert np.array_equal(frames[1], frames[-1])  # going back the same way

    # Same seed, same images; another seed, others.
    again = tmp_path / "again.png"
    assert main(["sample", str(run), "--interpolate", "--n", "3", "--steps", "5", "--seed", "7",
                 "--batch-size", "4", "--out", str(again)]) == 0
    assert np.array_equal(picture(again), grid)
    assert (tmp_path / "again.gif").read_bytes() == (tmp_path / "walk.gif").read_bytes()
    other = tmp_path / "other.png"
    assert main(["sample", str(run), "--interpolate", "--n", "3", "--steps", "5", "--seed", "8",
                 "--out", str(other)]) == 0
    assert not np.array_equal(picture(other), grid)


def test_sample_interpolate_defaults(tmp_path, tiny_args):
    """8 walks of 8 images, into walk.png and walk.gif in the current folder."""
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--interpolate"]) == 0
    assert picture(Path("walk.png")).shape == (8 * 18 + 2, 8 * 18 + 2)
    assert len(gif_frames(Path("walk.gif"))) == 14


@pytest.mark.parametrize("args,needles", [
    (["sample", "x", "--interpolate", "--out", "x.npz"], ["--interpolate", "x.png"]),
    (["sample", "x", "--interpolate", "--grid", "g.png"], ["--interpolate", "--grid"]),
    (["sample", "x", "--interpolate", "--steps", "1"], ["--steps", "2"]),
    (["sample", "x", "--steps", "4"], ["--steps", "--interpolate"]),
    (["sample", "x", "--interpolate", "--out", "no-such-folder/w.png"], ["no-such-folder"]),
    (["sample", "no-such-run", "--interpolate"], ["no-such-run"]),
])
def test_bad_interpolate_flags(args, needles, capsys):
    before = set(Path.cwd().rglob("*"))
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *needles)
    assert set(Path.cwd().rglob("*")) == before
