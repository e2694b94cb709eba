import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def has_mnist(folder: Path) -> bool:
    """All four MNIST files in `folder`, each gzipped or raw (as gankit stores them)."""
    return all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in MNIST_FILES)


def find_mnist() -> Path:
    """Where the real-MNIST tests read MNIST: $GANKIT_TEST_MNIST, else a data folder beside
    the checkout (../shared/data/mnist), else gankit's own data folder, where the first
    `gankit train` keeps it ($GANKIT_DATA or ~/.cache/gankit, then mnist/). Looked up before
    any test points GANKIT_DATA at a temporary folder."""
    from gankit.paths import default_data_root

    candidates = [Path(p) for p in [os.environ.get("GANKIT_TEST_MNIST")] if p]
    candidates += [REPO.parent / "shared" / "data" / "mnist", default_data_root() / "mnist", default_data_root()]
    return next((c for c in candidates if has_mnist(c)), candidates[0])


MNIST_DIR = find_mnist()

# Tests run on 2 cores next to each other; one thread each keeps them predictable.
torch.set_num_threads(1)


@pytest.fixture
def tiny_args():
    """The smallest CLI flags that still run every code path of training."""
    return ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8",
            "--nz", "8", "--batch-size", "16", "--no-progress"]


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch, tmp_path):
    # Never read or fill the user's real cache from a test, and never download a network's weights.
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "data-cache"))
    monkeypatch.setenv("GANKIT_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    yield


def mnist_available() -> bool:
    return has_mnist(MNIST_DIR)


requires_mnist = pytest.mark.skipif(not mnist_available(), reason="MNIST files not found (train once with "
                                    "`gankit train`, or set GANKIT_TEST_MNIST to a folder that holds them)")


def make_class_folder(root: Path, classes: int, per_class: int = 8, size: int = 16) -> Path:
    """root/<0..classes-1>/<k>.png: random grayscale images, one subfolder per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / str(c)).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / str(c) / f"{k}.png")
    return root


@pytest.fixture(scope="session")
def explorer_runs(tmp_path_factory):
    """Three tiny runs for `gankit serve`'s tests (16x16, width 8, 2 steps; made once):
    gan (unconditional DCGAN, fake data), cond (conditional DCGAN, 10 classes), vae (conv VAE)."""
    from gankit.cli import main

    root = tmp_path_factory.mktemp("explorer-runs")
    tiny = ["--image-size", "16", "--width", "8", "--nz", "8", "--batch-size", "16", "--max-steps", "2",
            "--no-progress", "--no-tensorboard", "--eval-every", "0"]
    fake = ["--dataset", "fake", "--fake-size", "64"]
    classes = make_class_folder(root / "classes", 10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANKIT_DATA", str(root / "data-cache"))
        for name, args in {"gan": fake, "vae": [*fake, "--model", "vae"],
                           "cond": ["--dataset", "folder", "--data-dir", str(classes), "--channels", "1",
                                    "--conditional"]}.items():
            assert main(["train", *tiny, *args, "--out", str(root / name)]) == 0
    return root
