"""Benchmark loading an image folder: one-thread decode, the first (parallel, cached) load and
the cached load, and training on a folder bigger than a memory limit.

Usage (from the repository root):

    PYTHONPATH=src python benchmarks/folder_load.py [--root DIR] [--sizes 10000 100000] [--json OUT]

It writes N synthetic JPEGs of 178x218 pixels (CelebA's aligned faces' size; drawn procedurally:
a colour gradient with ellipses, quality 90, no downloads) under ROOT/N, once, and then times,
each in a fresh process at 64x64:
- "one_thread": the decode of gankit 0.1.0: one process, every pixel of every file decoded,
  then cropped and resized, in memory, no cache (load_folder's draft=False, workers=1);
- "first": the first load: every core decodes (a JPEG at the smallest scale that still
  gives 64 pixels), the result is written to the cache;
- "cached": the next load, which lists the folder and opens the cache.
Each figure comes with the process's peak resident memory (and its decode workers' peak).
Then "streamed": `gankit train` for --train-steps steps on the largest folder with
GANKIT_MEMORY_LIMIT below the decoded array's size, so that batches are read from the
memory-mapped cache, in a memory cgroup held to that limit where one can be made (see
streamed_training); its peak memory and whether it streamed. Prints one JSON object.
Before each load every image file is read once, so that every load finds the files in the
page cache alike (dropping the page cache needs privileges a benchmark should not assume).
The cached load maps the cache file; its pages are read as training touches them.
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
root, cache, workers, draft = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "draft"
started = time.perf_counter()
data = load_folder(root, size=64, channels=3, cache_dir=Path(cache) if cache != "-" else None,
                   workers=int(workers) if workers != "-" else None, progress=False, log=lambda m: None, draft=draft)
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


def warm(folder: Path) -> None:
    """Read every file once, so that each timed load finds them in the page cache alike: the
    loads are compared on decoding, not on what the disk had cached from the one before."""
    for path in folder.iterdir():
        path.read_bytes()


def load(folder: Path, cache: str, workers: str, draft: str = "draft") -> dict:
    warm(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", LOAD, str(folder), cache, workers, draft], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# `gankit train` in a process that says its own peak resident memory at the end.
# Also how much of the cache file is resident in memory when the last step has run
# (/proc/self/smaps, read while the run still holds its data): what streaming read of it.
TRAIN = """
import json, resource, sys
import gankit.training.loop as loop
from gankit.cli import main

def resident_mb(suffix):
    total, name = 0, ""
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line; a path, if any, 6th
            name = head[5] if len(head) >= 6 else ""
        elif head and head[0] == "Rss:" and name.endswith(suffix):
            total += int(head[1])
    return total / 1024

seen, run_steps = {}, loop.run_steps
def measured(run):
    run_steps(run)
    seen["dataset_resident_mb"] = resident_mb("images.npy")
loop.run_steps = measured
code = main(["train", *sys.argv[1:]])
print(json.dumps({"exit_code": code, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **seen}))
"""


def streamed_training(folder: Path, cache: Path, out: Path, steps: int, limit_mb: int) -> dict:
    """`gankit train` with GANKIT_MEMORY_LIMIT below the decoded array, the array evicted from
    the page cache first (posix_fadvise DONTNEED: its pages come from disk as batches need
    them), and, where this process may make one, in a memory cgroup whose limit is that same
    limit: the kernel itself then holds the run to it. Its time, peak memory, log."""
    for npy in cache.glob("folders/*/images.npy"):
        with open(npy, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    group = memory_cgroup(limit_mb)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GANKIT_MEMORY_LIMIT": f"{limit_mb}M"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TRAIN, "--dataset", "folder", "--data-dir", str(folder),
                           "--cache-dir", str(cache), "--max-steps", str(steps), "--no-progress", "--no-tensorboard",
                           "--eval-every", "0", "--out", str(out)], env=env, capture_output=True, text=True,
                          preexec_fn=(lambda: (group / "cgroup.procs").write_text(str(os.getpid()))) if group else None)
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    peak = int((group / "memory.max_usage_in_bytes").read_text()) / 2**20 if group else None
    if group:
        group.rmdir()
    return {"steps": steps, "memory_limit_mb": limit_mb, "cgroup_limit": group is not None,
            "cgroup_peak_mb": peak, "exit_code": report.get("exit_code", done.returncode), "seconds": seconds,
            "peak_rss_mb": report.get("rss_mb"), "dataset_resident_mb": report.get("dataset_resident_mb"),
            "streamed": "do not fit in memory" in done.stderr, "log": done.stderr.strip().splitlines()[-3:]}


def memory_cgroup(limit_mb: int) -> Path | None:
    """A cgroup (v1 memory controller) limited to limit_mb, or None where none can be made."""
    group = Path("/sys/fs/cgroup/memory") / f"gankit-bench-{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mb << 20))
        return group
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/gankit-folder-bench")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--memory-limit-mb", type=int, default=1024,
                    help="the streamed run's limit: below the 100,000-image array (1.1 GiB), above what the "
                    "process needs besides it")
    ap.add_argument("--json", help="also write the JSON object to this file")
    ap.add_argument("--write-only", action="store_true", help="only write the folders (ROOT/N), e.g. to train on")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if args.write_only:
        for n in args.sizes:
            make_folder(root / str(n), n)
        return 0
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "processor": platform.processor() or platform.machine()},
              "image": f"{WIDTH}x{HEIGHT} JPEG, quality 90", "size": 64, "folders": {}}
    for n in args.sizes:
        folder, cache = root / str(n), root / f"cache-{n}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        row = {"write_seconds": make_folder(folder, n)}
        row["one_thread"] = load(folder, "-", "1", "full")
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
