"""The fast path's logic, on the CPU: batches from a resident tensor, one shared step,
precision, and optimizer state that moves between GPU and CPU runs. (The CUDA graph
itself needs a GPU: benchmarks/gpu_check.py checks it there.)"""

import pytest
import torch

from gankit.checkpoint import load_checkpoint, save_checkpoint
from gankit.cli import main
from gankit.training.runner import Batches, Stepper, resolve_precision, set_capturable


def numbered(n: int) -> torch.Tensor:
    """n 4x4 uint8 images, image k filled with the value k."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()


def batch_ids(batch: torch.Tensor) -> list[int]:
    return ((batch[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()  # to_model's [-1, 1] back to k


def test_batches_cover_every_image_once_per_epoch_in_a_seeded_order():
    n, bs = 103, 10
    batches = Batches(numbered(n), batch_size=bs, seed=3, image_size=4, device=torch.device("cpu"))
    assert batches.steps_per_epoch == 10 and not batches.streamed
    epochs = []
    for epoch in range(3):
        seen = []
        for i in range(batches.steps_per_epoch):
            batch = batches.batch(epoch, i)
            assert batch.shape == (bs, 1, 4, 4) and batch.dtype == torch.float32
            assert batch.min() >= -1 and batch.max() <= 1
            seen += batch_ids(batch)
        assert len(seen) == len(set(seen)) == 100  # no image twice; the last 3 (a partial batch) dropped
        epochs.append(seen)
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch
    again = Batches(numbered(n), batch_size=bs, seed=3, image_size=4, device=torch.device("cpu"))
    assert batch_ids(again.batch(1, 4)) == epochs[1][40:50]  # random access: what resume relies on
    other = Batches(numbered(n), batch_size=bs, seed=4, image_size=4, device=torch.device("cpu"))
    assert batch_ids(other.batch(0, 0)) != epochs[0][:10]


def test_batch_labels_belong_to_the_batchs_images():
    n, bs = 103, 10
    images = numbered(n)
    labels = torch.arange(n) * 7 % 10  # label of image k: 7k mod 10
    batches = Batches(images, labels, batch_size=bs, seed=3, image_size=4, device=torch.device("cpu"))
    for epoch, i in ((0, 0), (0, 9), (2, 4), (0, 3)):  # random access, as resume does
        ids = batch_ids(batches.batch(epoch, i))
        got = batches.labels(epoch, i)
        assert got.dtype == torch.long and got.tolist() == [k * 7 % 10 for k in ids]
    plain = Batches(images, batch_size=bs, seed=3, image_size=4, device=torch.device("cpu"))
    assert batch_ids(plain.batch(2, 4)) == batch_ids(batches.batch(2, 4))  # labels change no order
    with pytest.raises(ValueError):
        plain.labels(0, 0)


def test_stepper_passes_images_and_labels_to_the_step():
    seen = []

    class Task:
        optimizers = {}

        def step(self, real, labels=None, *, regularize=False):
            seen.append((real, labels))
            return {"loss": real.sum() + labels.sum()}

    stepper = Stepper(Task(), torch.device("cpu"), dtype=None, graph=False)
    real, labels = torch.ones(2, 1, 4, 4), torch.tensor([3, 4])
    assert stepper(real, labels)["loss"].item() == 39
    assert seen[0][0] is real and seen[0][1] is labels


class Recorder:
    """A task whose step records what it was called with, and under which autocast."""

    def __init__(self):
        self.calls = []
        self.optimizers = {}

    def step(self, real, labels=None, *, regularize=False):
        self.calls.append((real, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {"loss": real.sum()}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_stepper_runs_the_tasks_own_step_under_the_precision(dtype):
    task = Recorder()
    stepper = Stepper(task, torch.device("cpu"), dtype=dtype, graph=True)
    assert stepper.graph is False  # CUDA graphs are for CUDA only
    real = torch.ones(2, 1, 4, 4)
    out = stepper(real)
    assert out["loss"].item() == 32 and task.calls[0][0] is real
    assert task.calls[0][1] is (dtype is not None)
    if dtype is not None:
        assert task.calls[0][2] == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the step


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) in (None, torch.bfloat16)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_train_the_dcgan(tmp_path, tiny_args, precision):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--precision", precision, "--max-steps", "4", "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["modules"]["generator"].values() if v.is_floating_point())
    assert all(v.dtype != torch.bfloat16 for v in state["modules"]["generator"].values())  # fp32 master weights


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path, tiny_args):
    """A run trained with capturable Adam (the CUDA graph path) goes on on a CPU."""
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "2", "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    for opt in state["optimizers"].values():  # as saved by a graphed run
        for group in opt["param_groups"]:
            group["capturable"] = True
    save_checkpoint(state, run / "checkpoints")
    assert main(["train", "--resume", str(run), "--max-steps", "4", "--no-progress"]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(g["capturable"] is False for opt in state["optimizers"].values() for g in opt["param_groups"])


def test_set_capturable_flips_the_flag_and_keeps_step_counters_on_the_host():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    set_capturable([opt], False)
    assert opt.param_groups[0]["capturable"] is False
    assert opt.state[p]["step"].device.type == "cpu" and float(opt.state[p]["step"]) == 1.0
    p.grad = torch.ones(3)
    opt.step()  # still steps
    assert float(opt.state[p]["step"]) == 2.0


def test_bf16_steps_report_fp32_metrics():
    """Under bf16 autocast every metric of a step is fp32, so an epoch's mean is right: a
    bf16 running sum stops growing once it reaches 256."""
    from gankit.config import TrainConfig
    from gankit.resolve import resolve
    from gankit.training.gan import GanTask

    config = resolve(TrainConfig(image_size=16, channels=1, width=8, nz=8))
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    stepper = Stepper(task, torch.device("cpu"), dtype=torch.bfloat16, graph=False)
    out = stepper(torch.rand(4, 1, 16, 16) * 2 - 1)
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(task.metric_names, torch.float32)

