"""The ablation of issue 14: each modern option added to the DCGAN default, trained and
judged the way a user would (`gankit train`, then `gankit eval --json`), one process per run.

Each row trains for --epochs on MNIST (or --dataset) for every --seeds, then judges 10,000
samples against the test split beside the real floor. Rows in --curves are also judged
after every epoch, which gives FID against training seconds (which recipe is good
soonest); --plot draws that. Prints one JSON line per run and writes them all to --json.

  python benchmarks/ablation.py --data-dir DIR --epochs 10 --seeds 0 1 2 --json ablation.json
  python benchmarks/ablation.py --data-dir DIR --rows default hinge --epochs 3
  python benchmarks/ablation.py --from ablation.json --plot fid_vs_seconds.png
  python benchmarks/ablation.py --from docs/measurements/ablation-cpu.json --section screening_3_epochs --markdown

A --from file is a list of results, or (docs/measurements/) an object with lists of
results under a few names and the --speed results under "speed".
  python benchmarks/ablation.py --speed --json speed.json   # training images/s of every row only

--speed times each row's training step in this process (MNIST's shape, random images,
the run's precision, a CUDA graph on a GPU): WARMUP steps, then --rounds rounds of
--steps steps, the best round counts. Real images consumed per second, so a row with
five D steps per G step counts five batches a step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Row name -> the flags it adds to the DCGAN paper's recipe (`--recipe dcgan`, the default
# when these rows were measured; `flags_of` pins it, so a row keeps its meaning now that the
# default was `dcgan-b64-r1`, the row batch64-r1; now `dcgan-b64-r1-adam0`, batch64-r1-adam0).
ROWS: dict[str, list[str]] = {
    "default": [],
    "hinge": ["--loss", "hinge"],
    "lsgan": ["--loss", "lsgan"],
    "sn": ["--sn", "--no-d-bn"],                        # BCE + SN, D without BatchNorm
    "dcgan-sn": ["--recipe", "dcgan-sn"],               # hinge + SN, no BatchNorm (SNGAN's CNN setting)
    "r1": ["--r1", "1"],                                # BCE + R1, lazily every 16 steps
    "r10": ["--r1", "10"],                              # gamma 10, as Mescheder et al. at 64x64 and up
    "diffaugment": ["--recipe", "dcgan-diffaugment"],
    "pack2": ["--pack", "2"],
    "ttur": ["--lr-d", "4e-4", "--lr-g", "1e-4"],
    "ema": ["--ema", "0.999"],
    "batch64": ["--batch-size", "64"],
    "batch64-r1": ["--batch-size", "64", "--r1", "1"],
    # Levers on batch64-r1 (the default since it was measured), screened at 3 epochs:
    "batch64-r1-ema": ["--batch-size", "64", "--r1", "1", "--ema", "0.999"],     # sample from G's EMA
    "batch64-r1-adam0": ["--batch-size", "64", "--r1", "1", "--beta1", "0", "--beta2", "0.99"],  # StyleGAN2's Adam
    "batch32-r1": ["--batch-size", "32", "--r1", "1"],                          # twice the updates again
    "sngan": ["--recipe", "sngan"],                     # the ResNet, five D steps, Adam (0, 0.9)
    "sngan-dcgan-arch": ["--recipe", "sngan", "--arch", "dcgan"],
}


def flags_of(row: str) -> list[str]:
    """The `gankit train` flags of a row: its own, on the paper's recipe unless it names one."""
    flags = ROWS[row]
    return flags if "--recipe" in flags else ["--recipe", "dcgan", *flags]


# What the plot calls a row where its name alone would mislead.
LABELS = {"default": "dcgan (the paper's recipe, the first default)", "batch64-r1": "dcgan-b64-r1",
          "batch64-r1-adam0": "dcgan-b64-r1-adam0 (the default)"}

KEEP = ("fid", "kid", "classifier_score", "precision", "recall", "modes", "kl_to_uniform", "class_accuracy")


def gankit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "gankit", *args], env=env, capture_output=True, text=True)


def train_and_judge(row: str, seed: int, args) -> dict:
    out = Path(args.runs) / f"{row}-seed{seed}"
    every = str(args.curve_every) if row in args.curves else "0"
    flags = ["--dataset", args.dataset, "--epochs", str(args.epochs), "--seed", str(seed), "--no-progress",
             "--save-every", "0", "--eval-every", every, "--out", str(out)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if out.exists() and (out / "checkpoints" / "last.pt").exists():
        flags = ["--resume", str(out), "--epochs", str(args.epochs), "--no-progress"]  # go on, or nothing to do
    started = time.perf_counter()
    done = gankit("train", *(flags if flags[0] == "--resume" else flags + flags_of(row) + args.extra))
    wall = time.perf_counter() - started
    if done.returncode:
        return {"row": row, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    judged = gankit("eval", str(out), "--json", "--no-progress", "--seed", str(seed))
    if judged.returncode:
        return {"row": row, "seed": seed, "error": judged.stderr.strip().splitlines()[-1:]}
    result = json.loads(judged.stdout)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds, curve = 0.0, []
    for e in epochs:
        seconds += e["seconds"]
        if "eval_fid" in e:
            curve.append({"epoch": e["epoch"], "train_seconds": round(seconds, 1), "fid": e["eval_fid"]})
    return {"row": row, "flags": ROWS[row] + args.extra, "seed": seed, "epochs": args.epochs,
            **{k: result[k] for k in KEEP if k in result},
            "floor": {k: result["floor"][k] for k in KEEP if k in result["floor"]},
            "images_per_s": round(sum(e["images_per_s"] for e in epochs) / len(epochs), 1),
            "train_seconds": round(seconds, 1), "wall_seconds": round(wall, 1), "curve": curve}


def speed(row: str, args) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from gankit.cli import build_parser
    from gankit.config import TrainConfig
    from gankit.resolve import resolve
    from gankit.runs import pick_device
    from gankit.training.gan import GanTask
    from gankit.training.runner import WARMUP, Stepper, resolve_precision

    given = vars(build_parser().parse_args(["train", *flags_of(row), *args.extra]))
    given.pop("command")
    config = resolve(TrainConfig(**given, image_size=32, channels=1))
    device = pick_device("auto")
    torch.manual_seed(0)
    task = GanTask(config, channels=1, device=device)
    stepper = Stepper(task, device, dtype=resolve_precision(config.precision, device), graph=device.type == "cuda")
    per_step = config.batch_size * GanTask.batches_per_step(config)
    real = torch.rand(per_step, 1, 32, 32, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step = 0
    for step in range(WARMUP + 2):
        stepper(real, regularize=task.regularizes(step))
    best = float("inf")
    for _ in range(args.rounds):
        sync()
        started = time.perf_counter()
        for _ in range(args.steps):
            step += 1
            stepper(real, regularize=task.regularizes(step))
        sync()
        best = min(best, time.perf_counter() - started)
    return {"row": row, "flags": ROWS[row] + args.extra, "images_per_s": round(per_step * args.steps / best, 1),
            "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}


def plot(results: list[dict], path: Path) -> None:
    lines = [(f"{LABELS.get(r['row'], r['row'])} ({r['epochs']} epochs, seed {r['seed']})", r["curve"])
             for r in results if r.get("curve")]
    fid_against_seconds(lines, path)


def fid_against_seconds(lines: list[tuple[str, list[dict]]], path: Path) -> None:
    """FID against training seconds, one line a (label, points with train_seconds and fid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, points in lines:
        ax.plot([p["train_seconds"] for p in points], [p["fid"] for p in points], marker="o", label=label)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("FID (gankit's MNIST evaluator)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def markdown(results: list[dict], speeds: dict[str, float]) -> str:
    """The docs' table: a row per run, with the floor's figures as the first row."""
    head = ("| row | flags | FID | classifier score | precision | recall | modes | KL | images/s |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    floor = next((r["floor"] for r in results if "floor" in r), None)
    lines = []
    if floor:
        lines.append(f"| real floor | 10,000 training images | {floor['fid']:.3f} | {floor['classifier_score']:.2f} | "
                     f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['modes']} | "
                     f"{floor['kl_to_uniform']:.4f} | |")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | `{' '.join(ROWS[r['row']])}` | failed: {r['error']} |")
            continue
        speed = speeds.get(r["row"])
        lines.append(f"| {r['row']} (seed {r['seed']}) | `{' '.join(r['flags']) or '(defaults)'}` | {r['fid']:.2f} | "
                     f"{r['classifier_score']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['modes']} | "
                     f"{r['kl_to_uniform']:.4f} | {f'{speed:.0f}' if speed else ''} |")
    return head + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--curves", nargs="*", default=["default"], help="rows judged during training too")
    p.add_argument("--curve-every", type=int, default=1, help="judge --curves rows every this many epochs")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags added to every row")
    p.add_argument("--runs", default="runs/ablation", help="where the run folders go")
    p.add_argument("--json", help="write all results here (JSON list)")
    p.add_argument("--from", dest="source", help="read results from this JSON instead of training")
    p.add_argument("--plot", help="draw FID against training seconds for the rows with curves")
    p.add_argument("--speed", action="store_true", help="time each row's step instead of training")
    p.add_argument("--markdown", nargs="?", const="", help="with --from: print the docs' table; images/s "
                   "from this --speed JSON (default: the --from file's \"speed\")")
    p.add_argument("--section", help="with --from an object: the list of results to use (default: all)")
    p.add_argument("--steps", type=int, default=16, help="--speed: timed steps per round (16: one R1 step)")
    p.add_argument("--rounds", type=int, default=3, help="--speed: rounds, the best counts")
    args = p.parse_args()
    if args.speed:
        results = []
        for row in args.rows:
            results.append({**speed(row, args), "machine": platform.processor() or platform.machine()})
            print(json.dumps(results[-1]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    speeds = {}
    if args.source:
        results = json.loads(Path(args.source).read_text())
        if isinstance(results, dict):
            speeds = {r["row"]: r["images_per_s"] for r in results.get("speed", [])}
            names = [args.section] if args.section else [k for k, v in results.items() if k != "speed"
                                                         and isinstance(v, list)]
            results = [r for name in names for r in results[name]]
    else:
        results = []
        for row in args.rows:
            for seed in args.seeds:
                results.append(train_and_judge(row, seed, args))
                results[-1]["machine"] = platform.processor() or platform.machine()
                print(json.dumps(results[-1]), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:  # the rows and seeds asked for (default: every row, seed 0)
        plot([r for r in results if r["row"] in args.rows and r["seed"] in args.seeds], Path(args.plot))
    if args.markdown is not None:
        if args.markdown:
            speeds = {r["row"]: r["images_per_s"] for r in json.loads(Path(args.markdown).read_text())}
        print(markdown(results, speeds))


if __name__ == "__main__":
    main()
