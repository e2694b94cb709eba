"""FID against sampling steps for a trained flow run: how few ODE steps are enough.

Each point is `gankit eval RUN --json --n N --ode-steps S --solver X` in its own process
(the same samples' seed for every point, so the points differ only in the solver), with
the sampling speed eval reports. Prints one JSON line per point and writes them all to
--json; --plot draws FID against network evaluations per image, one line per solver.

  python benchmarks/flow_steps.py runs/flow-mnist --n 2000 --heun 2 4 8 16 --euler 8 16 100 --json steps.json
  python benchmarks/flow_steps.py --from steps.json --plot flow_steps.png

FID grows as N shrinks (its bias is about 1/N), so compare points of one --n only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gankit.training.flow import EVALUATIONS  # noqa: E402  (network evaluations a step, per solver)

KEEP = ("fid", "classifier_score", "precision", "recall", "kl_to_uniform", "class_accuracy")


def point(run: str, solver: str, steps: int, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "gankit", "eval", run, "--json", "--no-progress", "--n", str(args.n),
               "--seed", str(args.seed), "--solver", solver, "--ode-steps", str(steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        return {"solver": solver, "steps": steps, "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout)
    return {"solver": solver, "steps": steps, "evaluations": steps * EVALUATIONS[solver], "n": args.n,
            **{k: result[k] for k in KEEP if k in result},
            "floor_fid": result.get("floor", {}).get("fid"),
            "images_per_s": round(result["sampling"]["images_per_second"], 1)}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for solver in EVALUATIONS:
        line = sorted((p for p in points if p["solver"] == solver and "fid" in p), key=lambda p: p["evaluations"])
        if line:
            ax.plot([p["evaluations"] for p in line], [p["fid"] for p in line], marker="o", label=solver)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations an image")
    ax.set_ylabel(f"FID (gankit's MNIST evaluator, {points[0]['n']} samples)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a flow run folder")
    p.add_argument("--n", type=int, default=2000, help="samples a point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heun", nargs="*", type=int, default=[2, 4, 8, 16], help="Heun's step counts")
    p.add_argument("--euler", nargs="*", type=int, default=[8, 16, 100], help="Euler's step counts")
    p.add_argument("--json", help="write all points here (JSON list)")
    p.add_argument("--from", dest="source", help="read points from this JSON instead of sampling")
    p.add_argument("--plot", help="draw FID against network evaluations")
    args = p.parse_args()
    if args.source:
        points = json.loads(Path(args.source).read_text())
    elif args.run:
        points = []
        for solver, counts in (("heun", args.heun), ("euler", args.euler)):
            for steps in counts:
                points.append(point(args.run, solver, steps, args))
                print(json.dumps(points[-1]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(points, indent=1) + "\n")
    else:
        p.error("give a run folder, or --from a JSON of points")
    if args.plot:
        plot(points, Path(args.plot))


if __name__ == "__main__":
    main()
