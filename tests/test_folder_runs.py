"""Training on an image folder as a user does it: the decoded images cached between runs, a
folder bigger than memory streamed from its cache, crops, flips, RGB at 64x64, and the field's
Inception-v3 figures (on a scripted stand-in with the real network's calling convention: the
real weights are never downloaded in a test)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_inception import StandIn, save_scripted
from test_training import assert_same_state, weights

import gankit
from gankit.cli import main

TINY = ["--image-size", "16", "--width", "8", "--nz", "8", "--batch-size", "8", "--no-progress",
        "--no-tensorboard", "--eval-every", "0"]


def make_folder(root, n=40, size=(26, 20), seed=0):
    """n RGB images of `size` (width, height): PNGs and JPEGs, of random colours."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for k in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{k:03d}.{'png' if k % 2 else 'jpg'}")
    return root


def train(args, capsys):
    capsys.readouterr()
    code = main(["train", *TINY, *args])
    return code, capsys.readouterr().err


def test_the_decoded_folder_is_cached_and_reused_on_the_next_run_and_on_resume(tmp_path, capsys):
    folder = make_folder(tmp_path / "images")
    flags = ["--dataset", "folder", "--data-dir", str(folder), "--max-steps", "2"]
    code, err = train([*flags, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "caching the decoded images" in err
    cache = list((tmp_path / "data-cache" / "folders").iterdir())
    assert len(cache) == 1 and (cache[0] / "images.npy").is_file()
    code, err = train([*flags, "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "caching" not in err and "rebuilding" not in err
    (folder / "000.jpg").unlink()
    code, err = train([*flags, "--out", str(tmp_path / "c")], capsys)
    assert code == 0 and "rebuilding the image cache" in err and "files removed: 1" in err
    assert main(["train", "--resume", str(tmp_path / "c"), "--max-steps", "3", "--no-progress"]) == 0
    assert "rebuilding" not in capsys.readouterr().err


def test_cache_dir_puts_the_cache_where_asked(tmp_path, capsys):
    folder = make_folder(tmp_path / "images")
    code, _ = train(["--dataset", "folder", "--data-dir", str(folder), "--max-steps", "1",
                     "--cache-dir", str(tmp_path / "elsewhere"), "--out", str(tmp_path / "run")], capsys)
    assert code == 0 and list((tmp_path / "elsewhere" / "folders").glob("*/images.npy"))


def test_a_folder_bigger_than_memory_is_streamed_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    folder = make_folder(tmp_path / "images")
    flags = ["--dataset", "folder", "--data-dir", str(folder), "--save-every", "0"]
    code, _ = train([*flags, "--max-steps", "9", "--out", str(tmp_path / "memory")], capsys)
    assert code == 0
    monkeypatch.setenv("GANKIT_MEMORY_LIMIT", "1K")  # 40 images of 16x16x3 are 30 KiB: more than that
    code, err = train([*flags, "--max-steps", "4", "--out", str(tmp_path / "streamed")], capsys)
    assert code == 0 and "do not fit in memory" in err
    assert main(["train", "--resume", str(tmp_path / "streamed"), "--max-steps", "9", "--no-progress"]) == 0
    assert_same_state(weights(tmp_path / "memory"), weights(tmp_path / "streamed"))  # same batches, same run


def test_crops_give_the_network_size_and_differ(tmp_path):
    from gankit.registry import load_dataset

    folder = make_folder(tmp_path / "images", n=4)  # 26x20 images
    seen = {crop: load_dataset("folder", data_dir=str(folder), image_size=16, crop=crop).images
            for crop in ("center", "none", "18", 12)}
    assert all(images.shape == (4, 3, 16, 16) for images in seen.values())
    assert len({images.numpy().tobytes() for images in seen.values()}) == 4
    run = gankit.train(dataset="folder", data_dir=folder, crop=18, image_size=16, width=8, nz=8, batch_size=4,
                       max_steps=1, progress=False, tensorboard=False, eval_every=0, out=tmp_path / "run")
    assert run.config.crop == 18 and run.real_grid().mode == "RGB"
    with pytest.raises(gankit.UserError, match="smaller than --crop 24"):
        gankit.train(dataset="folder", data_dir=folder, crop=24, image_size=16, progress=False, out=tmp_path / "x")


def test_crop_and_cache_dir_are_refused_where_they_mean_nothing(tmp_path, capsys):
    for args, message in [(["--crop", "abc", "--dataset", "folder", "--data-dir", str(tmp_path)],
                           "--crop 'abc' is not center, none or a number of pixels"),
                          (["--crop", "108"], "--crop applies to --dataset folder only, not --dataset mnist"),
                          (["--cache-dir", "x", "--dataset", "fake"], "--cache-dir applies to --dataset folder")]:
        code, err = train([*args, "--out", str(tmp_path / "run")], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        with pytest.raises(gankit.UserError, match=message.split(" (")[0].replace("'", ".")):
            gankit.train(**{a.lstrip("-").replace("-", "_"): b for a, b in zip(args[::2], args[1::2])},
                         out=tmp_path / "api")
    assert not (tmp_path / "run").exists() and not (tmp_path / "api").exists()


def test_hflip_flips_about_half_the_images_and_never_the_labels():
    from gankit.training.augment import random_hflip
    from gankit.training.runner import Stepper

    torch.manual_seed(0)
    x = torch.arange(16.0).repeat(1000, 1, 16, 1)  # every row 0..15: a flip reverses it
    flipped = random_hflip(x)
    reversed_ = (flipped[:, 0, 0, 0] == 15).float().mean().item()
    assert 0.45 < reversed_ < 0.55
    assert torch.equal(flipped.flip(-1).eq(x).all(dim=(1, 2, 3)) | flipped.eq(x).all(dim=(1, 2, 3)),
                       torch.ones(1000, dtype=torch.bool))

    class Probe:  # a task whose step hands back what it was given
        optimizers = {}

        def step(self, real, labels=None, *, regularize=False):
            return {"real": real, "labels": labels}

    labels = torch.arange(1000)
    out = Stepper(Probe(), torch.device("cpu"), dtype=None, graph=False, hflip=True)(x, labels)
    assert torch.equal(out["labels"], labels) and not torch.equal(out["real"], x)
    same = Stepper(Probe(), torch.device("cpu"), dtype=None, graph=False)(x, labels)
    assert torch.equal(same["real"], x)


def test_hflip_resumes_exactly(tmp_path):
    from test_training import assert_resume_is_exact

    assert_resume_is_exact(tmp_path, ["--dataset", "fake", "--fake-size", "64", *TINY, "--hflip",
                                      "--batch-size", "16"], total=6, first=3)


def test_an_rgb_run_at_64_pixels_draws_samples_grids_gif_and_exports(tmp_path, capsys):
    from gankit.serve import create_app

    folder = make_folder(tmp_path / "images", n=16, size=(90, 70))
    out = tmp_path / "rgb"
    assert main(["train", "--dataset", "folder", "--data-dir", str(folder), "--width", "8", "--batch-size", "8",
                 "--epochs", "2", "--no-progress", "--no-tensorboard", "--eval-every", "0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 64 and config["channels"] == 3 and config["nz"] == 100
    for name in ("real.png", "fake_epoch_002.png"):
        with Image.open(out / "samples" / name) as grid:
            assert grid.mode == "RGB" and grid.size[0] == 8 * 66 + 2
    with Image.open(out / "progress.gif") as gif:
        assert gif.n_frames == 2
    run = gankit.load(out)
    assert run.sample(3).shape == (3, 64, 64, 3)
    meta = run.export(tmp_path / "g.safetensors")
    assert meta["image_size"] == 64 and meta["channels"] == 3
    page = create_app(out).test_client().get("/samples.png?n=4")
    with Image.open(io.BytesIO(page.data)) as picture:
        assert picture.mode == "RGB" and picture.size == (2 * 66 + 2, 2 * 66 + 2)


@pytest.fixture
def stand_in(tmp_path):
    return save_scripted(StandIn(64), tmp_path / "stand-in.pt")


@pytest.fixture
def folder_run(tmp_path):
    folder = make_folder(tmp_path / "images", n=48)
    return gankit.train(dataset="folder", data_dir=folder, image_size=16, width=8, nz=8, batch_size=8, max_steps=2,
                        progress=False, tensorboard=False, eval_every=0, out=tmp_path / "run")


def test_eval_with_inception_features_judges_against_the_training_folder(folder_run, stand_in, tmp_path, capsys):
    from gankit.metrics.inception import load_feature_network
    from gankit.metrics.judge_inception import inception_judge

    capsys.readouterr()
    assert main(["eval", str(folder_run.path), "--features", "inception", "--feature-weights", str(stand_in),
                 "--n", "30", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["features"] == "inception" and result["n"] == 30 and result["reference_n"] == 48
    assert set(result["floor"]) >= {"fid", "kid", "inception_score", "precision", "recall"}
    # The same figures as the library's judge on the same samples and the run's own training images.
    from gankit.registry import load_dataset

    samples = torch.from_numpy(folder_run.sample(30)).permute(0, 3, 1, 2)
    reals = load_dataset("folder", data_dir=folder_run.config.data_dir, image_size=16).images
    direct = inception_judge(samples, reals, net=load_feature_network(stand_in), cache_dir=tmp_path / "direct")
    for key in ("fid", "kid", "inception_score", "precision", "recall"):
        assert result[key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12), key
    assert list((tmp_path / "data-cache" / "inception").glob("reference-*.pt"))  # reference statistics cached
    api = folder_run.evaluate(n=30, features="inception", feature_weights=stand_in, progress=False)
    # The same figures; the sampling speed is a clock's, measured anew by each call.
    assert api.pop("sampling")["images_per_second"] > 0 and result.pop("sampling")["images_per_second"] > 0
    assert json.loads(json.dumps(api)) == result
    capsys.readouterr()
    assert main(["eval", str(folder_run.path), "--features", "inception", "--feature-weights", str(stand_in),
                 "--n", "30", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "Inception Score" in table and "real floor" in table and "48 real images" in table


def test_eval_with_inception_features_against_another_folder_and_of_an_npz(folder_run, stand_in, tmp_path, capsys):
    other = make_folder(tmp_path / "other", n=24, size=(40, 40), seed=5)
    assert main(["sample", str(folder_run.path), "--n", "20", "--out", str(tmp_path / "s.npz")]) == 0
    for target in (str(folder_run.path), str(tmp_path / "s.npz")):
        capsys.readouterr()
        assert main(["eval", target, "--features", "inception", "--feature-weights", str(stand_in), "--n", "20",
                     "--reference", str(other), "--json", "--no-progress"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["reference_n"] == 24 and "other" in result["reference"]


def test_missing_inception_weights_are_one_line_and_exit_2(folder_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(folder_run.path), "--features", "inception", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inception-2015-12-05.pt" in err and "--feature-weights PATH" in err
    for args, message in [(["--features", "clip"], "unknown --features 'clip'"),
                          (["--reference", "x"], "--reference and --feature-weights go with --features inception")]:
        assert main(["eval", str(folder_run.path), *args, "--no-progress"]) == 2
        assert message in capsys.readouterr().err


def test_the_evaluator_points_a_folder_run_to_inception_features(folder_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(folder_run.path), "--n", "20", "--no-progress"]) == 2
    assert "use --features inception" in capsys.readouterr().err


@pytest.mark.parametrize("crop", ["center", "none", 108])
def test_a_jpeg_decoded_at_a_reduced_scale_matches_the_full_decode(tmp_path, crop):
    """A 178x218 photo-like JPEG (smooth gradients and shapes) for 64x64: decoded at half
    scale, it differs from the full decode by rounding, not by content."""
    from PIL import ImageDraw

    from gankit.data.folder import load_image

    picture = Image.fromarray(np.linspace(0, 255, 218 * 178 * 3).reshape(218, 178, 3).astype(np.uint8))
    ImageDraw.Draw(picture).ellipse((40, 60, 140, 170), fill=(200, 30, 90))
    picture.save(tmp_path / "face.jpg", quality=90)
    quick = load_image(tmp_path / "face.jpg", 64, 3, crop).astype(float)
    full = load_image(tmp_path / "face.jpg", 64, 3, crop, draft=False).astype(float)
    assert quick.shape == full.shape == (64, 64, 3)
    assert np.abs(quick - full).mean() < 2.0 and np.percentile(np.abs(quick - full), 99) < 16
    with Image.open(tmp_path / "face.jpg") as img:
        img.draft("RGB", (64, 64))
        assert img.size == (89, 109)  # the scale it decodes at: 1/2
