"""The tables that turn a name on the command line into code: models, datasets and judges.

Nothing else in gankit tests a model's or a dataset's name: the loop, sampling, export,
TensorBoard and the judge ask the entry for what they need. A new model is a task class
(gankit/training/, the protocol in gankit.training.task) and one line in MODELS; a new
dataset is a loader and one line in DATASETS. Losses have their own table beside them,
gankit.training.losses.LOSSES.
"""

from __future__ import annotations

from functools import partial

from gankit.data import DatasetSpec, load_fake
from gankit.data.folder import check_settings as check_folder_settings
from gankit.data.folder import load_split as load_folder_split
from gankit.data.mnist import load_idx_split
from gankit.data.stacked import load_stacked
from gankit.errors import UserError
from gankit.metrics.inception import inception_footer, inception_header, judge_with_inception
from gankit.metrics.judge import EVALUATOR, Judge
from gankit.training.gan import GanTask
from gankit.training.task import Task
from gankit.training.vae import MlpVaeTask, VaeTask

MODELS: dict[str, type[Task]] = {
    "dcgan": GanTask,       # the tutorial's DCGAN (training/gan.py, models/dcgan.py)
    "vae": VaeTask,         # a convolutional VAE of the DCGAN's blocks (training/vae.py, models/vae.py)
    "vae-mlp": MlpVaeTask,  # PyTorch's classic 784-400-20 VAE
}
DEFAULT_MODEL = "dcgan"

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
DEFAULT_DATASET = "mnist"


# How `gankit eval --features NAME` judges samples: whose features FID, KID, precision and
# recall are computed on, and against which real images (docs/usage.md says when each fits).
FEATURES: dict[str, Judge] = {
    # gankit's own MNIST classifier (metrics/evaluator.py): offline, MNIST-like data; also
    # modes, KL to uniform and the classifier score.
    "evaluator": EVALUATOR,
    # Inception-v3 (metrics/inception.py): the figures papers quote, for any images; needs
    # the network's weights file.
    "inception": Judge(judge_with_inception, (
        ("FID", "fid", ".3f"), ("KID", "kid", ".5f"), ("Inception Score", "inception_score", ".3f"),
        ("precision", "precision", ".3f"), ("recall", "recall", ".3f")), inception_header, inception_footer),
}
DEFAULT_FEATURES = "evaluator"


def feature_judge(name: str) -> Judge:
    try:
        return FEATURES[name]
    except KeyError:
        raise UserError(f"unknown --features '{name}'; use one of: {', '.join(FEATURES)}") from None


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
    """The models whose task class has `member` set, as text: "dcgan" or "dcgan and x"."""
    return " and ".join(name for name, task in MODELS.items() if getattr(task, member))


def conditional_needs_labels() -> str:
    labelled = [name for name, spec in DATASETS.items() if spec.labelled and not spec.needs]
    return f"--conditional needs labelled data ({', '.join(labelled)}, or a folder with one subfolder per class)"
