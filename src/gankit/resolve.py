"""A run's settings, resolved and checked in one pass: `resolve(config) -> TrainConfig`.

The CLI, the Python API, resume and every reader of a saved run come through here, so a
value is refused with one message wherever it was given. In order:
1. types: each field's annotation (the API takes any object; the CLI's parser has already
   converted its text);
2. names: every name-valued setting against its table (gankit.registry.CHOICES);
3. defaults: every None the model's task class fills (a GAN's from its recipe first);
   explicit values always win;
4. values: ranges, other models' and other datasets' settings, then the model's and the
   dataset's own checks (Task.check, DatasetSpec.check).
TrainConfig itself holds plain values and looks nothing up; this module is the one that
asks the tables.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from gankit import seeds
from gankit.checks import whole_number
from gankit.config import TrainConfig, parse_save_every
from gankit.data import DatasetSpec
from gankit.errors import UserError
from gankit.models.dcgan import IMAGE_SIZES
from gankit.registry import CHOICES, DATASETS, MODELS, conditional_needs_labels, flag, models_that, the_models
from gankit.training.task import Task


def resolve(config: TrainConfig) -> TrainConfig:
    """A copy of `config` with every None a model default fills in, after checking every
    value (the module docstring); UserError, naming the flag, for the first that cannot work."""
    check_types(config)
    check_names(config)
    task = MODELS[config.model]
    defaults = task.resolve(config)
    config = dataclasses.replace(config, **{k: v for k, v in defaults.items() if getattr(config, k) is None})
    check_values(config, task, DATASETS[config.dataset])
    return config


# What each annotation of TrainConfig admits, and how a message names it. bool is an int in
# Python, so it is refused where a number is meant (epochs=True is a mistake, not 1 epoch).
TYPES = {"int": (numbers.Integral, "a whole number"), "float": (numbers.Real, "a number"),
         "str": (str, "text"), "bool": (bool, "True or False")}


def check_types(config: TrainConfig) -> None:
    """Refuse a setting of the wrong type."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        if not any(admits(k, value) for k in kinds if k != "None"):
            meaning = " or ".join(TYPES[k][1] if k != "None" else "None" for k in kinds)
            raise UserError(f"{flag(f.name)} must be {meaning}, got {value!r:.40}")


def admits(kind: str, value) -> bool:
    """Whether a field of annotation `kind` takes `value`. A whole number where a float is
    meant must be one (10**400 is not: every comparison with a float would overflow)."""
    if not isinstance(value, TYPES[kind][0]) or (kind != "bool" and isinstance(value, bool)):
        return False
    if kind == "float" and isinstance(value, numbers.Integral):
        return abs(value) <= 1e308
    return True


def check_names(config: TrainConfig) -> None:
    """Refuse a name that its table does not hold (`--model gan`), listing the ones it does."""
    for name, table in CHOICES.items():
        value = getattr(config, name)
        if value is not None and value not in table:
            raise UserError(f"unknown {flag(name)} '{value}'; use one of: {', '.join(table)}")


# The counts and sizes, each from 1 to its top: a value past the top is a typo or a damaged
# file, which would otherwise first show as an allocation failure deep inside PyTorch.
COUNTS = {"epochs": 10**6, "batch_size": 1 << 16, "max_steps": 10**12, "nz": 4096, "width": 1024,
          "latent_dim": 4096, "fake_size": 10**7, "stacked_size": 10**7, "num_classes": 10**5, "subset": 10**9,
          "r1_every": 10**6, "d_steps": 64, "pack": 64, "ode_steps": 10**4}
POSITIVE = ("lr", "lr_d", "lr_g")


def check_values(config: TrainConfig, task: type[Task], spec: DatasetSpec) -> None:
    """Refuse values that cannot work, each with a message that says what to use instead."""
    for name, top in COUNTS.items():
        if getattr(config, name) is not None:
            whole_number(getattr(config, name), flag(name), 1, top)
    for name in POSITIVE:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise UserError(f"{flag(name)} must be a positive number, got {value}")
    for name in ("lr", "lr_d", "lr_g"):
        value = getattr(config, name)
        if value is not None and not value <= 10:  # also refuses inf and nan
            raise UserError(f"{flag(name)} {value} is far beyond any learning rate that trains; use a value "
                            "like 2e-4")
    seeds.check(config.seed, seeds.RUN_SEED_MAX)
    foreign_settings(config, task)
    dataset_settings(config, spec)
    if config.image_size is not None and config.image_size not in IMAGE_SIZES:
        raise UserError(f"--image-size {config.image_size} is not supported: use a power of two from "
                        f"{IMAGE_SIZES[0]} to {IMAGE_SIZES[-1]} ({', '.join(map(str, IMAGE_SIZES))})")
    if config.channels is not None and config.channels not in (1, 3):
        raise UserError(f"--channels must be 1 (grayscale) or 3 (RGB), got {config.channels}")
    for name in ("beta1", "beta2", "ema"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
            extra = " (a decay like 0.999; 0 turns it off)" if name == "ema" else ""
            raise UserError(f"{flag(name)} must be in [0, 1){extra}, got {value}")
    check_model_fits(config, task, spec)
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got '{config.device}'")
    parse_save_every(config.save_every)


def check_model_fits(config: TrainConfig, task: type[Task], spec: DatasetSpec) -> None:
    """What the model takes (--ema, --conditional) and its own checks; labels for a conditional run."""
    if config.ema and not task.takes_ema:
        raise UserError(f"--ema applies to {models_that('takes_ema')} only, not --model {config.model}")
    if config.conditional and not task.takes_labels:
        raise UserError(f"--conditional applies to {models_that('takes_labels')} only, "
                        f"not --model {config.model}")
    task.check(config)
    if config.conditional and not spec.labelled:  # random labels: nothing to learn from them
        raise UserError(conditional_needs_labels())


def foreign_settings(config: TrainConfig, task: type[Task]) -> None:
    """Refuse a setting that belongs to another model (`--sn` for a VAE): it would be
    silently ignored. A model's own settings are its task's `settings()`."""
    foreign = set().union(*(other.settings() for other in MODELS.values())) - task.settings()
    for name in sorted(foreign):
        if getattr(config, name, None) not in (None, False, 0):
            owners = [model for model, other in MODELS.items() if name in other.settings()]
            raise UserError(f"{flag(name)} applies to {the_models(owners)} only, not --model {config.model}")


def dataset_settings(config: TrainConfig, spec: DatasetSpec) -> None:
    """Refuse a setting of another dataset (`--crop` for MNIST), and check the dataset's own:
    a DatasetSpec names its settings and checks their values (`check`)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name, other in DATASETS.items():
        for setting_name in sorted(set(other.settings) - set(spec.settings)):
            if getattr(config, setting_name) != defaults[setting_name]:
                raise UserError(f"{flag(setting_name)} applies to --dataset {name} only, not --dataset "
                                f"{config.dataset}")
    if spec.check:
        spec.check(config)
