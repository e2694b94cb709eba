"""Stacked MNIST (Metz et al. 2017; VEEGAN, PacGAN): three random MNIST digits of one split
in the R, G and B channels; 1000 classes, label 100 r + 10 g + b. A standard test of mode
collapse: a generator that covers the data makes all 1000 combinations."""

from __future__ import annotations

import torch

from gankit.data import ImageData
from gankit.data.mnist import load_idx_dataset

TEST_SIZE = 10000


def load_stacked(split: str, config, log=None) -> ImageData:
    """stacked_size images for the train split (TEST_SIZE for test), drawn from the seed."""
    images, labels = load_idx_dataset("mnist", split, config.data_dir, log=log)
    n = config.stacked_size if split == "train" else TEST_SIZE
    g = torch.Generator().manual_seed(config.seed * 2 + (split == "test"))
    pick = torch.randint(0, len(images), (n, 3), generator=g)          # (n, 3) digit indices
    x = torch.from_numpy(images)[pick]                                  # (n, 3, 28, 28)
    digits = torch.from_numpy(labels).long()[pick]                      # (n, 3)
    return ImageData(x, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2], "stacked")
