"""How good are gankit's samples? Trains the DCGAN at defaults (or takes existing runs),
judges 10,000 samples of each with the evaluator, and prints one JSON line per run,
with the real-data floor and the time the evaluation took (evaluator cached).

  python benchmarks/quality.py --data-dir DIR                 # train, then judge
  python benchmarks/quality.py --data-dir DIR --runs runs/A runs/B
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from gankit import sampling  # noqa: E402
from gankit.config import TrainConfig  # noqa: E402
from gankit.metrics.judge_evaluator import evaluator_for, score_samples  # noqa: E402
from gankit.runs import load_run  # noqa: E402
from gankit.training.loop import train  # noqa: E402


def rounded(d: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else rounded(v) if isinstance(v, dict) else v)
            for k, v in d.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", nargs="*", help="judge these run folders instead of training one")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="training precision (default auto: gankit's default)")
    args = p.parse_args()
    runs = [Path(r) for r in args.runs] if args.runs else [
        train(TrainConfig(recipe="dcgan", data_dir=args.data_dir, out="runs/quality-dcgan", progress=False,
                          eval_every=0, precision=args.precision))]
    for run in runs:
        config, task, state, native = load_run(run)
        evaluator_for(config.dataset, args.data_dir or config.data_dir)  # cached before the clock starts
        started = time.perf_counter()
        images = sampling.generate(task, args.n, seed=args.seed, native=native)
        result = score_samples(images, config.dataset, args.data_dir or config.data_dir, seed=args.seed, progress=False)
        seconds = time.perf_counter() - started
        result.pop("histogram"), result["floor"].pop("histogram")
        print(json.dumps(rounded({
            "run": str(run), "dataset": config.dataset, "recipe": config.recipe, "seed": config.seed,
            "epochs": state["step"] / (state["dataset_size"] // config.batch_size),
            **result, "eval_seconds": seconds, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        })), flush=True)


if __name__ == "__main__":
    main()
