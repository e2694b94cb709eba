"""Benchmark the MNIST evaluator: train on the full train split, test on t10k.

Usage (from the repository root):

    PYTHONPATH=src python benchmarks/evaluator.py [MNIST_DIR] [--epochs N] [--seed S]

MNIST_DIR: a folder with the four MNIST files (default: gankit's data folder, where
`gankit train` keeps them). Prints one JSON line:
{"test_accuracy": ..., "train_seconds": ..., "threads": ..., "torch": ..., ...}
(extra keys: CPU seconds and the 1-minute load average before/after training,
so that a timing taken on a busy machine can be recognised as such).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from gankit.metrics.evaluator import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    classify,
    train_evaluator,
)
from gankit.registry import load_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mnist_dir", nargs="?", default=None)
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads before training (default: torch's choice)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train = load_dataset("mnist", split="train", data_dir=args.mnist_dir)
    test = load_dataset("mnist", split="test", data_dir=args.mnist_dir)
    x_train, y_train, x_test, y_test = train.images, train.labels, test.images, test.labels

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    c0 = time.process_time()
    model = train_evaluator(x_train, y_train, seed=args.seed, epochs=args.epochs,
                            batch_size=args.batch_size, progress=not args.no_progress)
    train_seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    load_after = os.getloadavg()[0]

    probs, _ = classify(model, x_test)
    acc = (probs.argmax(1) == y_test).double().mean().item()
    print(json.dumps({
        "test_accuracy": round(acc, 5),
        "train_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "train_cpu_seconds": round(cpu_seconds, 1),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "cpu_count": os.cpu_count(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_size": int(x_train.shape[0]),
        "test_size": int(x_test.shape[0]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
