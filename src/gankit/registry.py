"""The tables that turn a name on the command line into code: models and datasets, and
CHOICES, every name-valued setting with the table of its names.

Nothing else in gankit tests a model's or a dataset's name: the loop, sampling, export,
TensorBoard and the judge ask the entry for what they need. A new model is a task class
(gankit/training/, the protocol in gankit.training.task) and one line in MODELS; a new
dataset is a loader and one line in DATASETS. Losses, recipes, architectures and inits
have their tables beside the code that uses them (training/losses.py, training/gan.py);
CHOICES lists them for gankit.resolve (which checks a name) and the CLI (which shows them).
The judges' table, FEATURES, is gankit.metrics.judge's, beside the code that consumes it.

Imports point down (docs/architecture.md): this module imports the entries it lists and
the plain parts; the entries never ask it back. Code above it looks an entry up here and
passes the entry itself down.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from gankit.config import PRECISIONS, TrainConfig
from gankit.data import DatasetSpec, ImageData, load_fake
from gankit.data.folder import check_settings as check_folder_settings
from gankit.data.folder import load_folder_split
from gankit.data.mnist import load_idx_split
from gankit.data.stacked import load_stacked
from gankit.errors import UserError
from gankit.training.flow import SOLVERS, TIME_DISTRIBUTIONS, FlowTask
from gankit.training.gan import ARCHS, EDGES, INIT_FUNCTIONS, RECIPES, GanTask
from gankit.training.losses import LOSSES
from gankit.training.task import Task
from gankit.training.vae import MlpVaeTask, VaeTask

MODELS: dict[str, type[Task]] = {
    "dcgan": GanTask,       # the tutorial's DCGAN (training/gan.py, models/dcgan.py)
    "vae": VaeTask,         # a convolutional VAE of the DCGAN's blocks (training/vae.py, models/vae.py)
    "vae-mlp": MlpVaeTask,  # PyTorch's classic 784-400-20 VAE
    "flow": FlowTask,       # flow matching, the straight path (training/flow.py, models/unet.py)
}

# MNIST-like 28x28 data goes to 32x32 by padding 2 pixels of background on each side: the
# digits are centred in 20x20 boxes, so padding adds no blur and cropping gives back the
# exact 28x28 frame. Folders default to the DCGAN paper's 64x64.
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(partial(load_idx_split, "mnist"), 32, num_classes=10, evaluator="mnist"),
    "fashion-mnist": DatasetSpec(partial(load_idx_split, "fashion-mnist"), 32, num_classes=10,
                                 evaluator="fashion-mnist"),
    "stacked-mnist": DatasetSpec(load_stacked, 32, num_classes=1000, evaluator="mnist", channels=3),
    "folder": DatasetSpec(load_folder_split, 64, splits=("train",),
                          needs="--dataset folder needs --data-dir pointing at a folder of PNG/JPEG images",
                          settings=("crop", "cache_dir"), check=check_folder_settings),
    "fake": DatasetSpec(load_fake, 32, labelled=False),  # random pixels: every code path in seconds
}


# Every setting whose value is a name, and the table that holds the names: gankit.resolve
# refuses a name the table lacks, `gankit train --help` lists the table's names.
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": tuple(DATASETS), "model": tuple(MODELS), "recipe": tuple(RECIPES), "arch": tuple(ARCHS),
    "loss": tuple(LOSSES), "init": tuple(INIT_FUNCTIONS), "edge": EDGES, "precision": PRECISIONS,
    "solver": tuple(SOLVERS), "time_dist": tuple(TIME_DISTRIBUTIONS),
}


def flag(name: str) -> str:
    """A setting as the CLI spells it: batch_size -> --batch-size (messages name the flag)."""
    return "--" + name.replace("_", "-")


def task_class(model: str) -> type[Task]:
    try:
        return MODELS[model]
    except KeyError:
        raise UserError(f"unknown --model '{model}'; use one of: {', '.join(MODELS)}") from None


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown --dataset '{name}'; use one of: {', '.join(DATASETS)}") from None


def judged_datasets() -> tuple[str, ...]:
    """The datasets whose samples gankit's evaluator can judge."""
    return tuple(name for name, spec in DATASETS.items() if spec.evaluator)


def evaluator_datasets() -> tuple[str, ...]:
    """The datasets an evaluator is trained on (the others borrow one of these)."""
    return tuple(name for name, spec in DATASETS.items() if spec.evaluator == name)


def models_that(member: str) -> str:
    """The models whose task class has `member` set, as text: "the dcgan model" or "the dcgan
    and x models"."""
    return the_models([name for name, task in MODELS.items() if getattr(task, member)])


def the_models(names: list[str]) -> str:
    """["dcgan"] -> "the dcgan model"; ["dcgan", "flow"] -> "the dcgan and flow models"."""
    return f"the {' and '.join(names)} model{'s' if len(names) > 1 else ''}"


def conditional_needs_labels() -> str:
    labelled = [name for name, spec in DATASETS.items() if spec.labelled and not spec.needs]
    return f"--conditional needs labelled data ({', '.join(labelled)}, or a folder with one subfolder per class)"


def model_defaults(name: str) -> str:
    """A setting's default per model, as text ("dcgan 64, vae 32"): what `--help` says of a
    setting whose default is the model's."""
    found = [f"{model} {task.defaults[name]}" for model, task in MODELS.items()
             if task.defaults.get(name) is not None]
    return ", ".join(found)


def load_dataset(name: str, *, split: str = "train", log=None, **settings) -> ImageData:
    """One split of a dataset by name; `settings` are TrainConfig's data fields (data_dir,
    image_size, channels, seed, ...), with its defaults. UserError with a one-line fix when
    it cannot be loaded."""
    return load_data(TrainConfig(dataset=name, **settings), split, log)


def load_data(config: TrainConfig, split: str, log=None) -> ImageData:
    """One split of `config.dataset`, as the config's data settings ask for it."""
    spec = dataset_spec(config.dataset)
    if spec.needs and not config.data_dir:
        raise UserError(spec.needs)
    if split not in spec.splits:
        raise UserError(f"the {config.dataset} dataset has no {split} split (it has: {', '.join(spec.splits)})")
    sized = dataclasses.replace(config, image_size=config.image_size or spec.image_size)
    return dataclasses.replace(spec.load(split, sized, log), name=config.dataset)
