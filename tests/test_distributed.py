"""Training in several processes: torchrun with the gloo backend on the CPU, 2 ranks.

The end-to-end tests start the real command (`torchrun -m gankit train`), as a user does.
A sitecustomize module (written by the test, on PYTHONPATH) installs a Python audit hook
in each rank that records every file the rank opens for writing or renames into place;
that is how the tests see which rank wrote what.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import make_class_folder
from gankit.cli import main
from gankit.distributed import Ranks, SyncBatchNorm2d, sync_batchnorm, weights_digest
from gankit.training.runner import Batches

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# The DCGAN paper's recipe: R1 (the default's) does not run under torchrun yet.
TINY = ["--dataset", "fake", "--fake-size", "128", "--image-size", "16", "--width", "8", "--nz", "8", "--recipe",
        "dcgan", "--batch-size", "16", "--epochs", "2", "--no-progress", "--eval-every", "0", "--save-every", "3"]

AUDIT = '''
import atexit, os, sys
rank = os.environ.get("RANK")
if rank is not None:
    written = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            mode, flags = args[1], args[2]
            if (mode is not None and any(c in mode for c in "wax+")) or \\
                    (mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                written.append(os.path.abspath(os.fsdecode(args[0])))
        elif event == "os.rename":
            written.append(os.path.abspath(os.fsdecode(args[1])))
    sys.addaudithook(hook)
    def dump():
        with open(os.path.join(os.environ["AUDIT_DIR"], f"rank{rank}-{os.getpid()}.json"), "w") as f:
            f.write(__import__("json").dumps(written))
    atexit.register(dump)
'''


def torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    audit = tmp_path / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(audit), str(src)]), "AUDIT_DIR": str(audit),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(TORCHRUN + ["-m", "gankit", "train", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


def writes(tmp_path: Path, out: Path) -> dict[int, list[str]]:
    """{rank: the paths under `out` that rank wrote, one entry per write, relative to out}."""
    found: dict[int, list[str]] = {}
    for f in (tmp_path / "audit").glob("rank*.json"):
        rank = int(f.name[4:].split("-")[0])
        paths = [Path(p) for p in json.loads(f.read_text())]
        found.setdefault(rank, []).extend(str(p.relative_to(out)) for p in paths if p.is_relative_to(out))
    return found


def load(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def test_two_ranks_train_the_same_weights_and_only_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    result = torchrun([*TINY, "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # One line per epoch from rank 0 alone: the log is not doubled.
    assert result.stderr.count("epoch 1:") == 1 and result.stderr.count("done: 16 steps") == 1

    state = load(out)
    assert state["step"] == 16          # 128 images / global batch 16 = 8 steps an epoch, 2 epochs
    # The ranks compared their weights at every checkpoint; the digest they agreed on is
    # the one of the weights rank 0 saved.
    assert state["weights_digest"] == weights_digest(_modules(state))
    # Each rank drew its own noise: their random states differ.
    ranks = state["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])
    # The epochs' metrics are the mean over both shards, written once per epoch.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]

    by_rank = writes(tmp_path, out.resolve())
    assert set(by_rank) == {0, 1}, "the audit hook did not run in both ranks"
    assert by_rank[1] == [], f"rank 1 wrote into the run folder: {by_rank[1][:5]}"
    assert ".lock" in by_rank[0]  # rank 0 alone holds the run folder's lock (it alone writes)
    once = [p for p in by_rank[0] if p.startswith("samples/") or p == "config.json"]
    assert sorted(once) == sorted(set(once)), "a file was written twice"
    assert {"samples/real.png", "samples/fake_epoch_001.png", "samples/fake_epoch_002.png",
            "config.json"} <= set(once)


def _modules(state: dict) -> dict[str, nn.Module]:
    """Modules holding a checkpoint's weights, for weights_digest."""
    class Holder(nn.Module):
        def __init__(self, tensors):
            super().__init__()
            self.tensors = tensors

        def state_dict(self, *args, **kwargs):
            return self.tensors
    return {name: Holder(tensors) for name, tensors in state["modules"].items()}


def test_two_ranks_resume_exactly(tmp_path):
    """Stopped mid-epoch and resumed (also with labels: a conditional GAN) = straight through."""
    folder = make_class_folder(tmp_path / "classes", 4, per_class=32)
    args = [*TINY, "--dataset", "folder", "--data-dir", str(folder), "--channels", "1", "--conditional"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert torchrun([*args, "--out", str(straight)], tmp_path).returncode == 0
    first = torchrun([*args, "--out", str(halves), "--max-steps", "11"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert load(halves)["step"] == 11
    second = torchrun(["--resume", str(halves), "--max-steps", "16", "--no-progress"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = load(straight), load(halves)
    assert b["step"] == 16
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), f"{name}.{key} differs after resume"
    losses = [[{k: v for k, v in json.loads(line).items() if k.startswith("loss")}
               for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, halves)]
    assert losses[0] == losses[1]


def test_two_ranks_train_a_vae_which_one_process_then_goes_on_with(tmp_path, capsys):
    out = tmp_path / "vae"
    result = torchrun([*TINY, "--model", "vae", "--max-steps", "6", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load(out)
    assert state["step"] == 6 and state["weights_digest"] == weights_digest(_modules(state))
    # Another number of processes: rank 0's random state goes on, and the user is told.
    assert main(["train", "--resume", str(out), "--max-steps", "9"]) == 0
    assert "trained by 2 process(es) and goes on with 1" in capsys.readouterr().err
    assert load(out)["step"] == 9


def test_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch, capsys, tiny_args):
    monkeypatch.setenv("WORLD_SIZE", "3")   # as torchrun --nproc_per_node=3 would set it
    code = main(["train", *tiny_args, "--batch-size", "16", "--max-steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "does not split evenly over 3 processes; use a multiple of 3" in err[0]


def test_each_rank_takes_its_own_part_of_every_global_batch():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 4, 4).contiguous()
    labels = torch.arange(40)
    parts = [Batches(images, labels, batch_size=8, seed=3, image_size=4, device=torch.device("cpu"),
                     shard=Ranks(rank, 2).shard) for rank in range(2)]
    whole = Batches(images, labels, batch_size=8, seed=3, image_size=4, device=torch.device("cpu"))
    seen = [set(), set()]
    for epoch in range(2):
        for i in range(whole.steps_per_epoch):
            mine = [p.labels(epoch, i) for p in parts]
            assert [len(m) for m in mine] == [4, 4]
            assert torch.equal(torch.cat(mine), whole.labels(epoch, i))   # together: the global batch
            for rank in range(2):
                seen[rank] |= set(mine[rank].tolist()) if epoch == 0 else set()
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 40      # an epoch: disjoint shards


def _sync_bn_worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 3, 6, 6) * 3 + 1
        weight = torch.randn(8, 5, 4, 4)     # a fixed, uneven loss: sum(y * weight)
        reference = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))
        net = sync_batchnorm(__import__("copy").deepcopy(reference))
        assert isinstance(net[1], SyncBatchNorm2d)
        mine = slice(4 * rank, 4 * rank + 4)
        y = net(x[mine])
        (y * weight[mine]).sum().backward()
        for p in net.parameters():           # what DDP does: the gradient summed over the ranks
            dist.all_reduce(p.grad)
        y_ref = reference(x)                 # one process, the whole batch of 8
        (y_ref * weight).sum().backward()
        torch.testing.assert_close(y, y_ref[mine], atol=1e-5, rtol=1e-5)
        for p, q in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(net[1].running_mean, reference[1].running_mean)
        torch.testing.assert_close(net[1].running_var, reference[1].running_var)
        net.eval()                           # eval: the running statistics, no communication
        torch.testing.assert_close(net(x[mine]), reference.eval()(x)[mine], atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_over_two_ranks_is_batchnorm_over_the_global_batch():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sync_bn_worker, args=(port,), nprocs=2)


def test_one_process_is_rank_0_of_1():
    ranks = Ranks()
    indices = torch.arange(10)
    assert ranks.main and ranks.world == 1 and torch.equal(ranks.shard(indices), indices)
    assert ranks.max(3, 0) == (3, 0) and ranks.gather("x") == ["x"] and ranks.broadcast(5) == 5


def test_the_default_recipe_under_torchrun_says_how_to_go_without_r1(tmp_path):
    args = [a for a in TINY if a not in ("--recipe", "dcgan")]  # the default recipe: R1 on
    result = torchrun([*args, "--out", str(tmp_path / "run")], tmp_path)
    said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and said
    assert "--r1 does not run under torchrun yet" in said[0] and "--r1 0 or --recipe dcgan" in said[0]
