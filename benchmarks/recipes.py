"""Which of the DCGAN paper's details make the tutorial's GAN work? Prints JSON lines.

Each variant is the default recipe with one detail set back to the tutorial's
literal reading (leave-one-out), plus both ends: `dcgan` (all four details) and
`tutorial` (none). After each listed epoch count the run is judged by an
independent MNIST classifier (gankit.metrics.evaluator) on 10,000 samples:

  modes          digit classes holding at least 1 % of the samples (of 10)
  kl_to_uniform  KL(class histogram || uniform), nats; 0 is perfectly even
  diversity      mean pairwise distance of evaluator features among samples,
                 over the same for real test digits (1.0: as varied as real data)
  class_diversity  the same within each predicted class, averaged: low values
                 mean the same few shapes repeated inside a class

Usage:
  python benchmarks/recipes.py --data-dir DIR --epochs 1,2 [--variants a,b]
  python benchmarks/recipes.py --data-dir DIR --judge runs/A runs/B
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gankit import sampling  # noqa: E402
from gankit.config import TrainConfig  # noqa: E402
from gankit.metrics import classify, load_or_train_evaluator, mode_coverage  # noqa: E402
from gankit.paths import default_data_root  # noqa: E402
from gankit.registry import load_dataset  # noqa: E402
from gankit.runs import load_run, resume_state  # noqa: E402
from gankit.training.loop import train  # noqa: E402

VARIANTS = {
    "dcgan": {},
    "no-normal-init": {"init": "pytorch"},
    "d-input-bn": {"d_input_bn": True},
    "1x1-edge": {"edge": "1x1"},
    "beta2-0.9": {"beta2": 0.9},
    "tutorial": {"recipe": "tutorial"},
}


def mean_pairwise(f: torch.Tensor) -> float:
    return float(torch.pdist(f).mean()) if len(f) > 1 else float("nan")


def judge(run: Path, evaluator, real_features: torch.Tensor, n: int = 10000, seed: int = 0) -> dict:
    config, task, state, native = load_run(run)
    images = sampling.generate(task, n, seed=seed, native=native)
    probs, features = classify(evaluator, images)
    predicted = probs.argmax(1)
    coverage = mode_coverage(predicted, min_fraction=0.01)
    real_spread = mean_pairwise(real_features[:2000])
    per_class = [mean_pairwise(features[:4000][predicted[:4000] == c]) for c in range(10)]
    per_class = [v for v in per_class if v == v]
    return {
        "run": str(run), "step": state["step"], "epoch": state["step"] / (state["dataset_size"] // config.batch_size),
        "recipe": config.recipe, "init": config.init, "d_input_bn": config.d_input_bn,
        "edge": config.edge, "beta2": config.beta2, "seed": config.seed,
        "modes": coverage["modes"], "kl_to_uniform": round(coverage["kl_to_uniform"], 4),
        "max_fraction": round(coverage["max_fraction"], 4), "histogram": coverage["histogram"],
        "diversity": round(mean_pairwise(features[:2000]) / real_spread, 3),
        "class_diversity": round(sum(per_class) / len(per_class) / real_spread, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", default="1,2", help="judge after each of these epoch counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                   help="training precision (default fp32: the README's recipe tables were measured in fp32)")
    p.add_argument("--out", default="runs/recipes")
    p.add_argument("--judge", nargs="*", help="only judge these existing run folders")
    args = p.parse_args()

    train_data = load_dataset("mnist", split="train", data_dir=args.data_dir)
    test_data = load_dataset("mnist", split="test", data_dir=args.data_dir)
    evaluator = load_or_train_evaluator(train_data.images, train_data.labels,
                                        default_data_root() / "evaluators")
    _, real_features = classify(evaluator, test_data.images[:2000])

    if args.judge:
        for run in args.judge:
            print(json.dumps(judge(Path(run), evaluator, real_features)), flush=True)
        return
    for name in args.variants.split(","):
        run = Path(args.out) / f"{name}-seed{args.seed}"
        started = time.perf_counter()
        for epochs in map(int, args.epochs.split(",")):
            if (run / "checkpoints" / "last.pt").exists():
                config, state = resume_state(run)
                config.epochs, config.progress = epochs, False
                train(config, resume=state)
            else:
                config = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=epochs, seed=args.seed,
                                     out=str(run), progress=False, precision=args.precision,
                                     **{"recipe": "dcgan", **VARIANTS[name]})  # the paper's, then the variant
                train(config)
            result = {"variant": name, **judge(run, evaluator, real_features),
                      "train_seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
