"""gankit: train, sample and judge image generative models, starting with the tutorial's DCGAN.

From Python (gankit.api has the details; `help(gankit.train)` lists every setting):

    run = gankit.train(epochs=10)     # or gankit.load("runs/dcgan-mnist")
    run.sample(16), run.grid(), run.evaluate(), run.resume(epochs=20), run.export("g.safetensors")
"""

from gankit.api import Run, load, load_data, show, train  # noqa: E402
from gankit.config import TrainConfig  # noqa: E402
from gankit.errors import Diverged, GankitError, Stopped, UserError  # noqa: E402
from gankit.training.gan import RECIPES  # noqa: E402
from gankit.version import __version__  # noqa: E402, F401

__all__ = ["__version__", "RECIPES", "Diverged", "GankitError", "Run", "Stopped", "TrainConfig", "UserError", "load",
           "load_data", "show", "train"]
