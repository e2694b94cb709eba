"""The shape of the code that adding a model, a dataset or a loss relies on.

Names on the command line are turned into code by the tables in gankit.registry (and
gankit.training.losses); these tests fail when a module starts testing a model's or a
dataset's name itself, when a registered task misses part of the protocol, or when a
function grows past what a reader can hold."""

import ast
import inspect
from functools import partial
from pathlib import Path

import pytest
import torch

from gankit.config import TrainConfig
from gankit.registry import DATASETS, MODELS
from gankit.resolve import resolve
from gankit.training.losses import LOSSES
from gankit.training.task import Task

SRC = Path(__file__).resolve().parents[1] / "src" / "gankit"
NAMES = set(MODELS) | set(DATASETS)
MAX_LINES = 80
LONG_ALLOWED: set = set()  # none: build_parser was, until its flags came from TrainConfig


def own_module(entry) -> Path:
    """The source file of a registered task class or dataset loader."""
    func = entry.func if isinstance(entry, partial) else entry
    return Path(inspect.getsourcefile(func)).resolve()


def allowed_files() -> set[Path]:
    files = {SRC / "registry.py"}
    files |= {own_module(task) for task in MODELS.values()}
    files |= {own_module(spec.load) for spec in DATASETS.values()}
    return {f.resolve() for f in files}


def names_tested_in(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every model or dataset name the file tests: a string literal compared
    (`model == "vae"`, `name in ("mnist", ...)`) or looked up (`DATASETS["mnist"]`). A name
    that is only a value (a default, a file name that happens to be spelled like one) is not
    a test of which model or dataset runs."""
    tree = ast.parse(path.read_text())
    places = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                places += operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
        elif isinstance(node, ast.Subscript):
            places.append(node.slice)
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue):
            places.append(node.pattern.value)
    return [(c.lineno, c.value) for c in places
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in NAMES]


def test_only_the_registries_and_their_own_modules_name_models_and_datasets():
    allowed = allowed_files()
    hits = {str(p.relative_to(SRC)): names_tested_in(p) for p in sorted(SRC.rglob("*.py"))
            if p.resolve() not in allowed}
    assert {file: found for file, found in hits.items() if found} == {}


def test_the_default_settings_name_entries_of_the_tables():
    import dataclasses

    from gankit.registry import CHOICES

    for f in dataclasses.fields(TrainConfig):
        if f.name in CHOICES and f.default is not None:
            assert f.default in CHOICES[f.name], f.name


def test_the_explorer_page_takes_the_model_from_the_server():
    page = (SRC / "explorer.html").read_text()
    quoted = {name for name in NAMES for q in "\"'`" if f"{q}{name}{q}" in page}
    assert quoted == set() and "info.title" in page and "info.maker" in page


def test_the_name_check_can_see_a_name(tmp_path):
    # The check above would pass on a scanner that finds nothing; this one would not.
    sample = tmp_path / "sample.py"
    sample.write_text('if config.model == "vae" or name in ("mnist", "x"):\n    DATASETS["folder"]\n'
                      'default = "dcgan"\n')
    assert names_tested_in(sample) == [(1, "vae"), (1, "mnist"), (2, "folder")]


def function_lengths():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield str(path.relative_to(SRC)), node.name, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_a_reader_can_hold():
    lengths = list(function_lengths())
    assert len(lengths) > 100  # it reads the whole package
    too_long = [(f, n, k) for f, n, k in lengths if k > MAX_LINES and (f, n) not in LONG_ALLOWED]
    assert too_long == []


PROTOCOL = ("title", "maker", "defaults", "metric_names", "hparam_tags", "resolve", "check", "summary",
            "build_sampler", "modules", "optimizers", "noise", "step", "generate", "sampler", "pictures", "evaluate",
            "distribute")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_keeps_the_task_protocol(name):
    cls = MODELS[name]
    assert issubclass(cls, Task)
    overridden = {m for m in PROTOCOL if getattr(cls, m) is not getattr(Task, m, None)}
    # What the base class cannot know: the model's own step, sampler, pictures and metrics.
    assert {"title", "maker", "step", "generate", "sampler", "pictures", "build_sampler", "metric_names", "defaults",
            "modules", "optimizers", "distribute"} <= overridden
    own = {"latent_dim": 4} if "latent_dim" in cls.settings() else {}  # a setting other models refuse
    config = resolve(TrainConfig(model=name, dataset="fake", image_size=16, width=8, nz=8, **own))
    config.channels = 1
    task = cls(config, channels=1, device=torch.device("cpu"), native_size=16)
    sampler_only = cls(config, channels=1, device=torch.device("cpu"), native_size=16, optimizers=False)
    assert task.optimizers and sampler_only.optimizers == {}
    metrics = task.step(torch.rand(4, 1, 16, 16) * 2 - 1)
    assert set(metrics) == set(cls.metric_names) and all(v.ndim == 0 for v in metrics.values())
    images = task.generate(task.noise(3, rng=torch.Generator().manual_seed(0)))
    assert images.shape == (3, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    with torch.no_grad():
        assert torch.allclose(task.sampler().eval()(task.noise(2, rng=torch.Generator().manual_seed(1))),
                              task.generate(task.noise(2, rng=torch.Generator().manual_seed(1))))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_rewards_telling_real_from_fake(name):
    loss = LOSSES[name]
    confident = loss.d(torch.full((8,), 5.0), torch.full((8,), -5.0))
    fooled = loss.d(torch.full((8,), -5.0), torch.full((8,), 5.0))
    assert confident.ndim == 0 and confident < fooled
    assert loss.g(torch.full((8,), 5.0)) < loss.g(torch.full((8,), -5.0))  # G gains when D calls fakes real


# --- one source for every training flag ---------------------------------------------------------
def train_actions():
    from gankit.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    return train, [a for a in train._actions if a.dest not in ("help", "resume")]


def test_every_setting_has_exactly_one_train_flag_with_its_default_and_help():
    import dataclasses

    _, actions = train_actions()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert sorted(a.dest for a in actions) == sorted(fields)  # one flag a field, no flag without one
    for action in actions:
        f = fields[action.dest]
        assert f"--{f.name.replace('_', '-')}" in action.option_strings
        assert action.help.startswith(f.metadata["doc"]) and f"(default: {f.default}" in action.help


# Names that are also plain English, which a scan of prose cannot tell from a name; every
# other name of the tables below is looked for.
ORDINARY_WORDS = {"folder", "fake", "tutorial", "hinge", "normal", "auto"}


def test_train_help_names_only_what_the_tables_hold():
    import re

    from gankit.registry import CHOICES

    train, actions = train_actions()
    names = {name for table in ("model", "dataset", "loss", "recipe", "arch", "init") for name in CHOICES[table]}
    for action in actions:
        doc = TrainConfig.__dataclass_fields__[action.dest].metadata["doc"]
        words = set(re.findall(r"[a-z0-9][a-z0-9-]*[a-z0-9]", doc))
        assert words & (names - ORDINARY_WORDS) == set(), action.dest  # a name in prose goes stale
        if action.dest in CHOICES:  # the choices shown are the table's, whatever it holds today
            assert action.metavar == "{" + ",".join(CHOICES[action.dest]) + "}"
    text = train.format_help()
    for shown in re.findall(r"\{([^{}]+)\}", text):
        assert set(shown.split(",")) in [set(c) for c in CHOICES.values()], shown


def test_the_name_scan_sees_a_stale_name():
    import re

    stale = "GAN architecture: dcgan (the tutorial's) or resnet"
    assert set(re.findall(r"[a-z0-9][a-z0-9-]*[a-z0-9]", stale)) >= {"dcgan", "resnet"}


def test_the_default_recipe_is_the_one_the_results_name():
    import re

    text = (SRC.parents[1] / "docs" / "results.md").read_text()
    section = text.split("## The default\n", 1)[1].split("\n## ", 1)[0]
    named = re.search(r"`gankit train` with no flags trains the DCGAN with `--recipe ([\w-]+)`", section)
    assert named and named.group(1) == TrainConfig.recipe


def test_an_old_run_resolves_to_its_own_recipe():
    # A saved config names its recipe: a new default changes no run trained before it.
    from gankit.runs import saved_config

    saved = TrainConfig(recipe="dcgan", dataset="fake", image_size=16).to_dict()
    for name in ("r1", "batch_size", "ema"):
        saved[name] = None  # as a config saved before these settings existed
    config = saved_config(saved, "'old'")
    assert (config.recipe, config.r1, config.batch_size) == ("dcgan", 0.0, 128)
