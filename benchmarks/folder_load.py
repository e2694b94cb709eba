"""Benchmark loading an image folder: one-thread decode, the first (parallel, cached) load and
the cached load, and training on a folder bigger than a memory limit.

Usage (from the repository root):

    PYTHONPATH=src python benchmarks/folder_load.py [--root DIR] [--sizes 10000 100000] [--json OUT]

It writes N synthetic JPEGs of 178x218 pixels (CelebA's aligned faces' size; drawn procedurally:
a colour gradient with ellipses, quality 90, no downloads) under ROOT/N, once, and then times,
each in a fresh process at 64x64:
- "one_thread": the decode gankit did before its cache: one process, every file, in memory;
- "first": the first load: every core decodes, the result is written to the cache;
- "cached": the next load, which lists the folder and opens the cache.
Each figure comes with the process's peak resident memory (and its decode workers' peak).
Then "streamed": `gankit train` for --train-steps steps on the largest folder with
GANKIT_MEMORY_LIMIT below the decoded array's size, so that batches are read from the
memory-mapped cache; its peak memory and whether it streamed. Prints one JSON object.
The page cache is not dropped between loads (that needs privileges a benchmark should not
assume): a cached load reads the array from memory where the system still holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 178, 218

# One load in a fresh process: prints {"seconds", "images", "rss_mb", "children_rss_mb"}.
LOAD = """
import json, resource, sys, time
from pathlib import Path
from gankit.data.folder import load_folder
root, cache, workers = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
started = time.perf_counter()
data = load_folder(root, size=64, channels=3, cache_dir=Path(cache) if cache != "-" else None,
                   workers=int(workers) if workers != "-" else None, progress=False, log=lambda m: None)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "images": len(data),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def draw(args: tuple[Path, int]) -> None:
    """One synthetic picture: a seeded gradient and a few ellipses, as a JPEG."""
    path, k = args
    rng = np.random.default_rng(k)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, HEIGHT)[:, None, None]
    pixels = (top * (1 - t) + bottom * t).repeat(WIDTH, axis=1).astype(np.uint8)
    image = Image.fromarray(pixels)
    pen = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
        rx, ry = rng.integers(10, 60), rng.integers(10, 60)
        pen.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    image.save(path, quality=90)


def make_folder(folder: Path, n: int) -> float:
    """ROOT/N with n JPEGs (kept from an earlier run when complete); seconds it took."""
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return 0.0
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        list(pool.map(draw, [(folder / f"{k:06d}.jpg", k) for k in range(n)], chunksize=256))
    return time.perf_counter() - started


def load(folder: Path, cache: str, workers: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", LOAD, str(folder), cache, workers], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def streamed_training(folder: Path, cache: Path, out: Path, steps: int, limit_mb: int) -> dict:
    """`gankit train` with a memory limit below the decoded array: its time, peak memory, log."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GANKIT_MEMORY_LIMIT": f"{limit_mb}M"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gankit", "train", "--dataset", "folder", "--data-dir", str(folder),
                           "--cache-dir", str(cache), "--max-steps", str(steps), "--no-progress", "--no-tensorboard",
                           "--eval-every", "0", "--out", str(out)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"steps": steps, "memory_limit_mb": limit_mb, "exit_code": done.returncode, "seconds": seconds,
            "peak_rss_mb": peak / 1024 if peak > before else None,
            "streamed": "do not fit in memory" in done.stderr, "log": done.stderr.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/gankit-folder-bench")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--memory-limit-mb", type=int, default=512)
    ap.add_argument("--json", help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    root = Path(args.root)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "processor": platform.processor() or platform.machine()},
              "image": f"{WIDTH}x{HEIGHT} JPEG, quality 90", "size": 64, "folders": {}}
    for n in args.sizes:
        folder, cache = root / str(n), root / f"cache-{n}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        row = {"write_seconds": make_folder(folder, n)}
        row["one_thread"] = load(folder, "-", "1")
        row["first"] = load(folder, str(cache), "-")
        row["cached"] = load(folder, str(cache), "-")
        row["first_speedup"] = row["one_thread"]["seconds"] / row["first"]["seconds"]
        result["folders"][n] = row
        print(json.dumps({n: row}), file=sys.stderr)
    largest = max(args.sizes)
    result["streamed"] = streamed_training(root / str(largest), root / f"cache-{largest}", root / "run",
                                           args.train_steps, args.memory_limit_mb)
    subprocess.run(["rm", "-rf", str(root / "run")], check=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
