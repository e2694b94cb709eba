"""Every value is checked where it enters: seeds in the range the RNGs take, counts against
the memory they need, saved settings that were changed or damaged, and random JSON fed to
every reader of a saved file. Each bad value is one line and exit 2 (UserError in the
API), never a traceback, and nothing is written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import assert_one_line_error, run_cli

import gankit
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import folder_cache
from gankit.errors import UserError
from gankit.export import build_generator
from gankit.report import metric_lines
from gankit.runs import saved_config
from gankit.seeds import RUN_SEED_MAX, SAMPLE_SEED_MAX
from gankit.training.loop import trim_metrics

TINY = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8", "--nz", "8",
        "--batch-size", "16", "--no-progress", "--no-tensorboard", "--eval-every", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(out)]) == 0
    return out


# --- seeds -------------------------------------------------------------------------------------
def test_a_run_seed_is_taken_up_to_its_top_and_refused_past_it(tmp_path, capsys):
    top = tmp_path / "top"
    assert main(["train", *TINY, "--max-steps", "1", "--seed", str(RUN_SEED_MAX), "--out", str(top)]) == 0
    for seed in (RUN_SEED_MAX + 1, 2**64, -1):
        out = tmp_path / f"s{seed}"
        code, err = run_cli(["train", *TINY, "--seed", str(seed), "--out", str(out)], capsys)
        assert_one_line_error(code, err, "--seed must be a whole number from 0 to 4294967295")
        assert not out.exists()  # refused before anything is written
    with pytest.raises(UserError, match="--seed must be a whole number from 0 to 4294967295"):
        gankit.train(dataset="fake", fake_size=64, seed=2**64, out=str(tmp_path / "api"))
    assert not (tmp_path / "api").exists()


def test_a_sample_seed_is_what_a_generator_takes(run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "2", "--seed", str(SAMPLE_SEED_MAX), "--out", str(out)]) == 0
    for args in (["sample", str(run), "--seed", str(2**64)], ["sample", str(run), "--seed", "-1"],
                 ["eval", str(run), "--seed", str(2**63)], ["sample", str(run), "--interpolate", "--seed", str(2**63)]):
        code, err = run_cli(args, capsys)
        assert_one_line_error(code, err, "--seed", f"from 0 to {SAMPLE_SEED_MAX}")
    loaded = gankit.load(run)
    assert loaded.sample(2, seed=SAMPLE_SEED_MAX).shape == (2, 16, 16)
    for call in (lambda: loaded.sample(2, seed=2**64), lambda: loaded.grid(4, seed=-1),
                 lambda: loaded.walk(2, 3, seed=2**63), lambda: loaded.sample(2, seed=1.5)):
        with pytest.raises(UserError, match="--seed must be a whole number from 0"):
            call()


# --- counts against memory ---------------------------------------------------------------------
def test_a_count_that_cannot_fit_says_how_many_would(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GANKIT_MEMORY_LIMIT", "1M")  # 1 MiB: a 16x16 image and its z take 544 bytes
    per_image = 4 * 8 + 2 * 16 * 16
    fit = 2**20 // per_image
    out = tmp_path / "s.npz"
    code, err = run_cli(["sample", str(run), "--n", str(fit + 1), "--out", str(out)], capsys)
    assert_one_line_error(code, err, f"--n {fit + 1} needs", f"at most {fit} fit")
    assert not out.exists()
    assert main(["sample", str(run), "--n", str(fit), "--out", str(out)]) == 0
    with pytest.raises(UserError, match=f"at most {fit} fit"):
        gankit.load(run).sample(10**9)
    with pytest.raises(UserError, match="fit at once"):
        gankit.load(run).walk(fit, 8)


# --- what sample writes ------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [(["--out", "s.png"], "give --out s.npz"),
                                          (["--out", "s"], "give --out s.npz"),
                                          (["--grid", "g.npz"], "give --grid g.png")])
def test_sample_writes_only_under_its_format_s_name(run, tmp_path, capsys, args, needle):
    code, err = run_cli(["sample", str(run), "--n", "2", *args], capsys)
    assert_one_line_error(code, err, needle)
    assert list(tmp_path.glob("s*")) == [] and list(tmp_path.glob("g*")) == []


def test_sample_to_a_device_writes_in_place_and_leaves_the_device(run, capsys, monkeypatch):
    import stat

    real_replace = os.replace

    def guarded(src, dst, *args, **kwargs):  # tests run as root: a bug must not replace the real device
        if os.path.realpath(dst) == "/dev/null":
            raise AssertionError("tried to rename a file over /dev/null")
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", guarded)
    assert main(["sample", str(run), "--n", "2", "--out", "/dev/null"]) == 0
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)  # still the device, not a regular file


# --- settings saved in a checkpoint ------------------------------------------------------------
@pytest.mark.parametrize("change, needle", [
    ([1, 2], "is not a mapping of settings"),
    ({"image_size": 48}, "--image-size 48 is not supported"),
    ({"model": "vae"}, "holds 'dcgan' weights but its saved settings say --model 'vae'"),
    ({"nz": 10**9}, "--nz must be a positive whole number (at most 4096)"),
    ({"width": [[[]]]}, "--width must be a whole number or None"),
    ({"lr": float("nan")}, "--lr nan is far beyond"),
    ({"model": "gan"}, "say --model 'gan'"),
])
def test_a_damaged_saved_config_is_one_line_naming_the_file(run, tmp_path, capsys, change, needle):
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["config"] = change if isinstance(change, list) else {**state["config"], **change}
    checkpoint = tmp_path / "changed.pt"
    torch.save(state, checkpoint)
    for args in (["sample", str(checkpoint), "--n", "2", "--out", str(tmp_path / "x.npz")],
                 ["export", str(checkpoint), "--out", str(tmp_path / "g.safetensors")]):
        code, err = run_cli(args, capsys)
        assert_one_line_error(code, err, needle, str(checkpoint))
    assert list(tmp_path.glob("x.npz")) == [] and list(tmp_path.glob("g.*")) == []


# --- random JSON to every reader of a saved file -----------------------------------------------
NUMBERS = st.one_of(st.integers(), st.integers(min_value=-10**400, max_value=10**400), st.floats(), st.booleans())
JSON = st.recursive(st.none() | NUMBERS | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = [name for name in TrainConfig.__dataclass_fields__]
# A fixed draw in CI (derandomize); GANKIT_FUZZ_EXAMPLES=N draws N fresh examples a test, to hunt.
FUZZ = settings(max_examples=int(os.environ.get("GANKIT_FUZZ_EXAMPLES", 150)), deadline=None,
                derandomize="GANKIT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_config() -> dict:
    return TrainConfig(dataset="fake", image_size=16, width=8, nz=8).to_dict()


def accepts_or_refuses(call) -> None:
    """The reader's contract: it returns, or raises UserError with one line; nothing else."""
    try:
        call()
    except UserError as e:
        assert "\n" not in str(e) and str(e)


@FUZZ
@given(value=JSON)
def test_saved_config_takes_any_json_value(value):
    accepts_or_refuses(lambda: saved_config(value, "'fuzz'"))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_saved_config_takes_any_value_in_any_setting(field, value):
    # One setting at a time: a random dict is refused at its first key, a damaged field is
    # what reaches the checks behind it.
    accepts_or_refuses(lambda: saved_config({**valid_config(), field: value}, "'fuzz'"))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_an_export_s_metadata_takes_any_value(field, value):
    meta = {"config": {**valid_config(), field: value}, "image_size": 16, "channels": 1, "num_classes": 0}
    accepts_or_refuses(lambda: build_generator(meta))


LINES = st.one_of(JSON.map(json.dumps), st.just("NaN"), st.just('{"epoch": 1, "step": Infinity}'),
                  st.just("[" * 5000), st.text(max_size=30))


@FUZZ
@given(lines=st.lists(LINES, max_size=6), good=st.booleans())
def test_metrics_jsonl_readers_keep_only_gankit_records(tmp_path_factory, lines, good):
    path = tmp_path_factory.mktemp("metrics") / "metrics.jsonl"
    record = {"epoch": 1, "step": 3, "loss_d": 0.5}
    path.write_text("\n".join(([json.dumps(record)] if good else []) + lines) + "\n")
    found = [r for _, r in metric_lines(path.read_bytes())]
    assert all(isinstance(r, dict) and type(r["epoch"]) is int and type(r["step"]) is int for r in found)
    assert all(not isinstance(v, float) or math.isfinite(v) for r in found for v in r.values())
    assert (record in found) == good
    trim_metrics(path, 3)  # resume's trim reads by the same rule and never raises
    assert [r for _, r in metric_lines(path.read_bytes())] == [r for r in found if r["step"] <= 3]


@FUZZ
@given(manifest=st.one_of(JSON.map(json.dumps), st.just('{"version": Infinity}'), st.just("[" * 5000)),
       key=st.sampled_from(["files", "shape", "labels", "size", "channels", "crop", "checksum"]), value=JSON)
def test_a_folder_manifest_of_any_json_is_used_or_rebuilt(tmp_path_factory, manifest, key, value):
    folder = tmp_path_factory.mktemp("cache")
    expected = {"version": folder_cache.FORMAT_VERSION, "root": "/images", "size": 16, "channels": 1,
                "crop": "center", "files": [["a/0.png", 10, 1]]}
    (folder / folder_cache.MANIFEST).write_text(manifest)
    assert folder_cache.open_cache(folder, expected)[0] is None  # a damaged cache: rebuilt, never raised
    (folder / folder_cache.MANIFEST).write_text(json.dumps({**expected, "shape": [1, 1, 16, 16], "labels": [0],
                                                            "skipped": 0, "npy_bytes": 256, "checksum": "x",
                                                            key: value}))
    assert folder_cache.open_cache(folder, expected)[0] is None


# --- a feature network that is TorchScript but not Inception's calling convention --------------
class TakesOnlyImages(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1)


class RaisesInside(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        raise RuntimeError("a layer of this network is broken")


class GivesAnImage(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        return x.float()


@pytest.mark.parametrize("module, needle", [(TakesOnlyImages, "cannot be called as Inception-v3 is"),
                                            (RaisesInside, "a layer of this network is broken"),
                                            (GivesAnImage, "must give (N, D) floats")])
def test_feature_weights_of_another_calling_convention_are_one_line(run, tmp_path, capsys, module, needle):
    weights = tmp_path / "net.pt"
    torch.jit.script(module()).save(str(weights))
    code, err = run_cli(["eval", str(run), "--features", "inception", "--feature-weights", str(weights), "--n", "20",
                         "--no-progress"], capsys)
    assert_one_line_error(code, err, needle, "inception-2015-12-05.pt")


def test_a_value_with_a_line_break_is_quoted_on_one_line(tmp_path, capsys):
    code, err = run_cli(["train", "--dataset", "mni\nst", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "unknown --dataset 'mni\\nst'")
