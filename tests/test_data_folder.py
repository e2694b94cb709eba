import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.data import fake_data
from gankit.errors import UserError
from gankit.registry import load_dataset


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_recursive_crop_resize_and_labels(tmp_path):
    root = tmp_path / "imgs"
    # A wide image: left third red, middle third green, right third blue. The centre crop keeps green.
    wide = np.zeros((30, 90, 3), np.uint8)
    wide[:, :30, 0] = wide[:, 30:60, 1] = wide[:, 60:, 2] = 255
    write(root / "a" / "wide.png", wide)
    write(root / "b" / "deep" / "gray.jpg", np.full((40, 40), 128, np.uint8))
    data = load_dataset("folder", data_dir=str(root), image_size=16, channels=3)
    assert data.images.shape == (2, 3, 16, 16) and data.images.dtype == torch.uint8
    green = data.images[0].float().mean(dim=(1, 2))
    assert green[1] > 250 and green[0] < 5 and green[2] < 5
    assert data.labels.tolist() == [0, 1]  # first-level folders a, b
    gray = load_dataset("folder", data_dir=str(root), image_size=16, channels=1)
    assert gray.images.shape == (2, 1, 16, 16)


def test_folder_without_subfolders_has_no_labels(tmp_path):
    write(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    data = load_dataset("folder", data_dir=str(tmp_path), image_size=16, channels=3)
    assert data.labels.tolist() == [-1]


def test_folder_skips_unreadable_files_with_a_count(tmp_path):
    warnings = []
    write(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    from gankit.data.folder import load_folder
    data = load_folder(tmp_path, size=16, channels=3, log=warnings.append)
    assert len(data) == 1
    assert len(warnings) == 1 and "skipped 1 of 2" in warnings[0]


def test_folder_with_nothing_usable_fails_clearly(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(UserError, match="could be read"):
        load_dataset("folder", data_dir=str(tmp_path), image_size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no PNG/JPEG images"):
        load_dataset("folder", data_dir=str(empty), image_size=16)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("folder", data_dir=str(tmp_path / "nope"), image_size=16)


def test_train_on_a_folder_gives_rgb_samples(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(40):
        write(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "imgs"), "--image-size", "16",
                 "--width", "8", "--nz", "8", "--batch-size", "8", "--max-steps", "2", "--no-progress",
                 "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (3, 16, 16, 3)


def test_fake_data_is_seeded():
    a, b, c = fake_data(10, size=16, channels=1, seed=1), fake_data(10, size=16, channels=1, seed=1), \
        fake_data(10, size=16, channels=1, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (10, 1, 16, 16) and a.labels.min() >= 0 and a.labels.max() <= 9
