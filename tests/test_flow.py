"""Flow matching (`--model flow`): the loss, the solvers, guidance, the U-Net, and every
promise a model keeps (resume, bf16, sample, export, serve, bad values), on tiny runs."""

import json

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_training import assert_resume_is_exact

from conftest import make_class_folder
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.models.unet import UNet
from gankit.resolve import resolve
from gankit.runs import load_run
from gankit.training.flow import FlowTask, euler, flow_loss, guided, heun

TINY = ["--model", "flow", "--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8",
        "--batch-size", "16", "--no-progress", "--no-tensorboard", "--eval-every", "0", "--ode-steps", "3"]


def train(tmp_path, *extra, name="run", steps=3):
    run = tmp_path / name
    assert main(["train", *TINY, *extra, "--max-steps", str(steps), "--out", str(run)]) == 0
    return run


@pytest.fixture
def cond_args(tmp_path):
    folder = make_class_folder(tmp_path / "classes", 3)
    return ["--dataset", "folder", "--data-dir", str(folder), "--channels", "1", "--conditional"]


# --- the arithmetic -----------------------------------------------------------------------------
def test_the_loss_is_the_mean_squared_error_to_the_straight_paths_velocity():
    x1 = torch.tensor([[[[1.0, -1.0]]], [[[0.5, 0.0]]]])     # (2, 1, 1, 2)
    x0 = torch.tensor([[[[0.0, 1.0]]], [[[-0.5, 2.0]]]])
    t = torch.tensor([0.25, 0.5])
    seen = {}

    def stub(xt, tt):  # v = 2 x_t, and x_t recorded
        seen["xt"] = xt
        return 2 * xt

    loss = flow_loss(stub, x1, x0, t)
    # x_t = (1 - t) x0 + t x1: [0.25, 0.5] and [0, 1]; target x1 - x0: [1, -2] and [1, -2].
    assert torch.allclose(seen["xt"].flatten(), torch.tensor([0.25, 0.5, 0.0, 1.0]))
    # v - target: [-0.5, 3], [-1, 4]; squares 0.25, 9, 1, 16; mean 26.25 / 4.
    assert loss.item() == pytest.approx(26.25 / 4)


def test_euler_reaches_the_exact_end_of_a_constant_field_and_heun_of_a_linear_one():
    x0 = torch.tensor([0.5, -2.0])
    assert torch.allclose(euler(lambda x, t: torch.full_like(x, 3.0), x0, 7), x0 + 3)
    for n in (1, 4, 10):
        # dx/dt = t: x(1) = x(0) + 1/2. Heun (the trapezoid rule) is exact; Euler is 1/(2N) short.
        assert torch.allclose(heun(lambda x, t: torch.full_like(x, t), x0, n), x0 + 0.5, atol=1e-6)
        assert torch.allclose(euler(lambda x, t: torch.full_like(x, t), x0, n), x0 + 0.5 - 1 / (2 * n), atol=1e-6)
    # Heun's method counts two evaluations a step.
    calls = []
    heun(lambda x, t: calls.append(t) or x, x0, 5)
    assert len(calls) == 10 and calls[0] == 0 and calls[-1] == pytest.approx(1.0)


def test_guidance_zero_is_the_conditional_model_and_runs_no_unconditional_pass():
    torch.manual_seed(0)
    net = UNet(image_size=16, channels=1, width=8, num_classes=3).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)  # a zero-initialized head says nothing
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    batches = []
    net.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    with torch.no_grad():
        cond = net(x, torch.full((4,), 0.3), labels)
        batches.clear()
        plain = guided(net, labels, 0.0, 3)(x, 0.3)
        assert batches == [4] and torch.equal(plain, cond)
        uncond = net(x, torch.full((4,), 0.3))            # no label: the "no label" token
        assert torch.equal(uncond, net(x, torch.full((4,), 0.3), torch.full((4,), 3)))
        strong = guided(net, labels, 2.0, 3)(x, 0.3)
        assert torch.allclose(strong, cond + 2.0 * (cond - uncond), atol=1e-5)
        assert not torch.allclose(strong, cond)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("classes", [0, 10])
def test_the_unet_keeps_the_images_shape_at_every_size(size, classes):
    net = UNet(image_size=size, channels=3, width=4, num_classes=classes, attention=size <= 64)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert net(x, torch.rand(2), torch.tensor([1, classes]) if classes else None).shape == x.shape


def test_the_default_unet_size():
    config = resolve(TrainConfig(model="flow", dataset="fake"))
    net = FlowTask.make_net(config, 32, 1, 0)
    assert config.width == 16 and 0.5e6 < sum(p.numel() for p in net.parameters()) < 1.5e6


def test_a_step_under_bf16_autocast_gives_a_finite_fp32_loss():
    config = resolve(TrainConfig(model="flow", dataset="mnist", image_size=16, width=8, num_classes=3,
                                 conditional=True, channels=1))
    task = FlowTask(config, channels=1, device=torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task.step(torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0]))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# --- runs ---------------------------------------------------------------------------------------
def test_a_flow_run_resumes_exactly(tmp_path):
    assert_resume_is_exact(tmp_path, TINY, total=6, first=3)  # across an epoch's end (4 steps)


def test_a_conditional_flow_resumes_exactly_and_draws_a_row_per_class(tmp_path, cond_args):
    straight, _ = assert_resume_is_exact(tmp_path, [*TINY, *cond_args], total=4, first=1)
    assert (straight / "samples" / "fake_epoch_002.png").is_file()  # 24 images: an epoch is 1 step
    from PIL import Image
    with Image.open(straight / "samples" / "fake_epoch_001.png") as grid:
        assert grid.size == (10 * 18 + 2, 3 * 18 + 2)  # 3 classes, 10 z's each


def test_sample_is_fixed_by_the_seed_and_the_settings_override_the_runs(tmp_path):
    run = train(tmp_path)
    for out, seed, steps in (("a", 1, 3), ("b", 1, 3), ("c", 2, 3), ("d", 1, 5)):
        assert main(["sample", str(run), "--n", "5", "--seed", str(seed), "--ode-steps", str(steps),
                     "--out", str(tmp_path / f"{out}.npz")]) == 0
    a, b, c, d = (np.load(tmp_path / f"{k}.npz")["images"] for k in "abcd")
    assert a.shape == (5, 16, 16) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert load_run(run, sampling={"ode_steps": 5, "solver": "euler"}).task.sampler().steps == 5
    import gankit
    assert np.array_equal(gankit.load(run, ode_steps=5).sample(5, seed=1), d)


@pytest.mark.parametrize("args,needles", [
    (["--ode-steps", "0"], ["--ode-steps", "positive"]),
    (["--guidance", "-1"], ["--guidance", "from 0"]),
    (["--solver", "nosuch"], ["unknown --solver 'nosuch'", "euler"]),
    (["--time-dist", "nosuch"], ["unknown --time-dist 'nosuch'", "logit-normal"]),
    (["--guidance", "1"], ["--guidance needs a conditional run"]),
])
def test_bad_values_are_one_line_and_exit_2(tmp_path, capsys, args, needles):
    assert_one_line_error(*run_cli(["train", *TINY, *args, "--out", str(tmp_path / "x")], capsys), *needles)


def test_sampling_settings_are_refused_where_they_do_not_apply(tmp_path, capsys, tiny_args):
    flow = train(tmp_path)
    assert_one_line_error(*run_cli(["sample", str(flow), "--ode-steps", "0"], capsys), "--ode-steps")
    assert_one_line_error(*run_cli(["eval", str(flow), "--solver", "nosuch"], capsys), "--solver")
    gan = tmp_path / "gan"
    assert main(["train", *tiny_args, "--max-steps", "1", "--eval-every", "0", "--out", str(gan)]) == 0
    for command in (["sample", str(gan)], ["eval", str(gan)], ["serve", str(gan), "--port", "0"]):
        assert_one_line_error(*run_cli([*command, "--ode-steps", "4"], capsys),
                              "--ode-steps applies to the flow model only, not --model dcgan")
    with pytest.raises(gankit_user_error()):
        __import__("gankit").load(gan, ode_steps=4)


def gankit_user_error():
    from gankit.errors import UserError
    return UserError


def test_eval_says_how_fast_a_run_samples(tmp_path, monkeypatch):
    import gankit.metrics.judge as judge

    run = train(tmp_path)
    monkeypatch.setattr(judge, "judge_with", lambda features, images, request: {"n": len(images)})
    result = judge.judge_run(load_run(run), n=6)
    assert result["n"] == 6 and result["sampling"]["images_per_second"] > 0
    assert result["sampling"]["how"] == "heun, 3 steps: 6 network evaluations an image"


# --- export and serve ---------------------------------------------------------------------------
def test_export_writes_the_velocity_network_and_onnx_matches_it(tmp_path, cond_args):
    import onnxruntime as ort

    from gankit.export import load_safetensors, read_metadata

    run = train(tmp_path, *cond_args, "--ode-steps", "4", "--solver", "euler", steps=2)
    assert main(["export", str(run), "--out", str(tmp_path / "v.safetensors")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "v.onnx")]) == 0
    task = load_run(run).task
    net, meta = load_safetensors(tmp_path / "v.safetensors")
    assert meta["inputs"] == ["x", "t", "labels"] and meta["num_classes"] == 3
    assert read_metadata(tmp_path / "v.onnx")["config"]["solver"] == "euler"
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([0.0, 0.5, 0.9]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        want = task.sampling_net()(x, t, y)
        assert torch.equal(net(x, t, y), want)
    session = ort.InferenceSession(str(tmp_path / "v.onnx"))
    got = session.run(None, {"x": x.numpy(), "t": t.numpy(), "labels": y.numpy()})[0]
    assert np.allclose(got, want.numpy(), atol=1e-4)
    # docs/usage.md's numpy sampler on the ONNX net gives the images of `gankit sample`.
    z = task.noise(2, rng=torch.Generator().manual_seed(0))
    images = usage_sampler(session, z.numpy().reshape(2, 1, 16, 16), np.array([1, 2]), steps=4)
    assert np.allclose(images, task.generate(z, torch.tensor([1, 2])).numpy(), atol=1e-4)


def usage_sampler(session, x, labels, steps):
    """The sampler of docs/usage.md ("Flow matching"), as written there."""
    block = USAGE.split("```python\n")[1].split("```")[0]
    scope = {"np": np, "session": session, "x": x.astype(np.float32), "labels": labels, "steps": steps}
    exec(block.split("# --- run\n", 1)[1], scope)
    return scope["images"]


USAGE = (__import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text() \
    .split("## Flow matching", 1)[1]


def test_the_explorer_serves_a_flow_run(tmp_path):
    from gankit.serve import create_app

    run = train(tmp_path)
    client = create_app(run, settings={"ode_steps": 2}).test_client()
    info = client.get("/api/info").get_json()
    assert info["model"] == "flow" and info["maker"] == "the velocity network" and info["nz"] == 256
    for url in ("/samples.png?seed=3&n=4", "/interpolate.png?a=1&b=2&t=0.5"):
        response = client.get(url)
        assert response.status_code == 200 and response.data[:4] == b"\x89PNG"
    assert json.loads((run / "config.json").read_text())["ode_steps"] == 3  # the run's own stays
