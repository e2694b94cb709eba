"""Three families on one judge: trained runs of the GAN, the VAE and the flow model, side by side.

For each NAME=RUN it reads the run's training seconds (the sum of its epochs' `seconds` in
metrics.jsonl: training alone, no judging or pictures) and its parameter counts, then runs
`gankit eval RUN --json` in a fresh process (10,000 samples against the test split, the
run's own sampling settings, and the sampling speed eval measures). Prints one JSON line a
run, writes them all to --json; --markdown prints the docs' table, --plot draws FID
against training seconds, a curve where a run was judged during training
(`--eval-every`) and its final point otherwise.

  python benchmarks/families.py --run "default GAN=runs/dcgan-mnist" --run "flow=runs/flow-mnist --ode-steps 16" \
      --json f.json
  python benchmarks/families.py --from f.json --markdown --plot families.png
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

from ablation import fid_against_seconds  # noqa: E402  (benchmarks/, this script's folder)

from gankit.runs import load_run  # noqa: E402  (the checkout's gankit, as the eval processes use)

KEEP = ("fid", "classifier_score", "precision", "recall", "kl_to_uniform", "modes", "class_accuracy")


def parameters(run: Path) -> dict:
    """Parameters of what samples (the sampler's network) and of everything trained."""
    task = load_run(run).task
    sampler = task.sampler()
    trained = {name: m for name, m in task.modules.items() if not name.endswith("_ema")}
    return {"sampler_parameters": sum(p.numel() for p in sampler.parameters()),
            "trained_parameters": sum(p.numel() for m in trained.values() for p in m.parameters())}


def judge(name: str, run: Path, flags: list[str], args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "gankit", "eval", str(run), "--json", "--no-progress",
               "--n", str(args.n), "--seed", str(args.seed), *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        return {"name": name, "run": str(run), "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    seconds, curve = 0.0, []
    for e in epochs:
        seconds += e["seconds"]
        if "eval_fid" in e:
            curve.append({"epoch": e["epoch"], "train_seconds": round(seconds, 1), "fid": e["eval_fid"]})
    return {"name": name, "run": str(run), "model": config["model"], "epochs": len(epochs),
            **{k: result[k] for k in KEEP if k in result},
            "floor": {k: result["floor"][k] for k in KEEP if k in result["floor"]},
            **parameters(run), "train_seconds": round(seconds, 1),
            "sampling_images_per_s": round(result["sampling"]["images_per_second"], 1),
            "sampling": result["sampling"]["how"], "curve": curve}


def markdown(results: list[dict]) -> str:
    head = ("| run | model | FID | classifier score | precision | recall | KL | parameters (sampler) | "
            "training seconds | sampling images/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    floor = next(r["floor"] for r in results if "floor" in r)
    lines = [f"| real floor | 10,000 training images | {floor['fid']:.3f} | {floor['classifier_score']:.2f} | "
             f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['kl_to_uniform']:.4f} | | | |"]
    for r in results:
        how = f" ({r['sampling']})" if r["sampling"] else ""
        lines.append(f"| {r['name']} | {r['model']}, {r['epochs']} epochs | {r['fid']:.2f} | "
                     f"{r['classifier_score']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['kl_to_uniform']:.4f} | "
                     f"{r['sampler_parameters'] / 1e6:.2f} M | {r['train_seconds']:.0f} | "
                     f"{r['sampling_images_per_s']:.0f}{how} |")
    return head + "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """A curve where a run was judged during training, its final point otherwise."""
    fid_against_seconds([(f"{r['name']} ({r['model']}, {r['epochs']} epochs)",
                          r["curve"] or [{"train_seconds": r["train_seconds"], "fid": r["fid"]}]) for r in results],
                        path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN [FLAGS]",
                   help="a trained run and its name; flags after the run go to its gankit eval (--ode-steps 16)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all results here (JSON list)")
    p.add_argument("--from", dest="source", help="read results from this JSON instead of judging")
    p.add_argument("--markdown", action="store_true", help="print the docs' table")
    p.add_argument("--plot", help="draw FID against training seconds")
    args = p.parse_args()
    if args.source:
        results = json.loads(Path(args.source).read_text())
    else:
        results = []
        for given in args.run:
            name, _, rest = given.partition("=")
            run, *flags = rest.split()
            results.append(judge(name, Path(run), flags, args))
            print(json.dumps(results[-1]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        print(markdown([r for r in results if "error" not in r]))
    if args.plot:
        plot([r for r in results if "error" not in r], Path(args.plot))


if __name__ == "__main__":
    main()
