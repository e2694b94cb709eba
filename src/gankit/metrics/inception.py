"""The field's Inception-v3 feature extractor: its weights file and its features.

Papers quote FID, KID, Inception Score and precision/recall on the pool features of
Inception-v3 as computed by StyleGAN2-ADA, clean-fid, torch-fidelity and pytorch-fid.
gankit uses the same network without torchvision: the TorchScript file
``inception-2015-12-05.pt`` that StyleGAN2-ADA's ``metrics/metric_utils.py`` loads with
``torch.jit.load`` and clean-fid's ``cleanfid/inception_torchscript.py`` wraps. TorchScript,
unlike the ``.pkl`` that StyleGAN3 and EDM load with ``pickle.load``, cannot run arbitrary
Python when it is loaded.

Calling convention (StyleGAN2-ADA metrics/metric_utils.py, frechet_inception_distance.py,
inception_score.py; StyleGAN3 metrics/metric_utils.py for grayscale)::

    net(images, return_features=True)  -> (N, 2048) float32 pool features
    net(images, no_output_bias=True)   -> (N, 1008) softmax probabilities, the
                                          classifier's bias left out, as the original
                                          Inception Score code did

``images`` are uint8 tensors (N, 3, H, W) in [0, 255] of any size, passed as uint8: the
network casts them to float, resizes to 299 x 299 bilinearly (emulating TensorFlow's
resize) and scales to [-1, 1) itself. Grayscale images are repeated to 3 channels before,
as StyleGAN3 does. The network's second output is already a softmax (the forward ends in
``softmax(logits)``; StyleGAN2-ADA takes ``np.log`` of it directly), so it is not
softmaxed again here.

Pipeline::

    weights file --inception_weights--> path --load_feature_network--> net
    uint8 images --network_outputs-->   features (N, 2048), probabilities (N, 1008)

Nothing here knows of runs, figures or caches of statistics: the figures on these
features, their floor and the cached reference are gankit.metrics.judge_inception's.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gankit.errors import UserError, one_line
from gankit.files import fetch_url, write_atomic
from gankit.paths import default_data_root

__all__ = [
    "WEIGHTS_NAME",
    "WEIGHTS_URLS",
    "WEIGHTS_URL",
    "OFFLINE_ENV",
    "BATCH_SIZE",
    "default_cache_dir",
    "inception_weights",
    "download_weights",
    "load_feature_network",
    "check_images",
    "network_outputs",
]

#: The file StyleGAN2-ADA and clean-fid load (a TorchScript translation of TensorFlow's
#: http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz).
WEIGHTS_NAME = "inception-2015-12-05.pt"
#: Where it is published, tried in order. The first is the address in StyleGAN2-ADA's and
#: clean-fid's code; the second NVIDIA's model registry, where StyleGAN3's metrics live. No
#: checksum is published, so a download is checked by loading it and running it once
#: (``_check_network_bytes``).
WEIGHTS_URLS = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + WEIGHTS_NAME,
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/" + WEIGHTS_NAME,
)
WEIGHTS_URL = WEIGHTS_URLS[0]  # the one error messages name
#: Set to 1 (or true, yes) to never download the weights (tests, air-gapped machines).
OFFLINE_ENV = "GANKIT_OFFLINE"
#: The real file is about 92 MB; a wrong URL must not fill the disk.
MAX_WEIGHTS_BYTES = 256 << 20
#: Per connect and per read (urllib's timeout), not for the whole download.
DOWNLOAD_TIMEOUT_S = 30.0
#: Images per network call; StyleGAN2-ADA uses 64, clean-fid 32 to 128; only memory cares.
BATCH_SIZE = 200

Log = Callable[[str], None]


def _reason(err: BaseException) -> str:
    """A failed fetch in a few words: a URLError's reason ("[Errno -2] Name or service not
    known") without its "<urlopen error ...>" wrapping; an HTTP error as "HTTP Error 404: ..."."""
    reason = getattr(err, "reason", None)
    if reason is not None and not hasattr(err, "code"):  # URLError, not its HTTPError subclass
        err = reason if isinstance(reason, BaseException) else OSError(str(reason))
    return one_line(err)[:120]


def default_cache_dir() -> Path:
    """Where the weights (and judge_inception's reference statistics) live unless the caller
    says otherwise: ``$GANKIT_DATA/inception`` (gankit's data folder, see ``default_data_root``)."""
    return default_data_root() / "inception"


# --------------------------------------------------------------------------- the weights file
def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def inception_weights(path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike,
                      download: bool = True, log: Log | None = None) -> Path:
    """The path of ``inception-2015-12-05.pt``: ``path`` when given (it must exist), else
    ``cache_dir / WEIGHTS_NAME`` when present, else that file downloaded from
    ``WEIGHTS_URLS`` (unless ``download`` is false or $GANKIT_OFFLINE is set). Raises
    UserError, one line naming the file, its URL and where to put it, when it cannot be had."""
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise UserError(f"feature weights {explicit} not found; pass --feature-weights with the path of "
                            f"{WEIGHTS_NAME} (from {WEIGHTS_URL})")
        return explicit
    cached = Path(cache_dir).expanduser() / WEIGHTS_NAME
    if cached.is_file():
        return cached
    if not download:
        reason = "downloading is turned off"
    elif _offline():
        reason = f"{OFFLINE_ENV} is set"
    else:
        try:
            download_weights(cached, log or (lambda message: None))
            return cached
        except OSError as err:
            reason = f"download failed: {one_line(err)}"
    raise UserError(f"the Inception-v3 feature network {WEIGHTS_NAME} is needed and missing ({reason}); "
                    f"download it from {WEIGHTS_URL} and put it at {cached}, or pass --feature-weights PATH")


def download_weights(dest: Path, log: Log) -> None:
    """Fetch the weights to ``dest`` from the first URL of ``WEIGHTS_URLS`` that answers with
    a working TorchScript network; stored atomically (a temporary file, then os.replace).
    Raises OSError, one line saying why each URL failed."""
    failures = []
    for url in WEIGHTS_URLS:
        log(f"downloading {url}")
        try:
            data = fetch_url(url, max_bytes=MAX_WEIGHTS_BYTES, timeout=DOWNLOAD_TIMEOUT_S)
        except Exception as err:  # URLError, HTTPError, timeouts, a body too large, a bad URL
            failures.append(f"{urlsplit(url).netloc}: {_reason(err)}")
            continue
        problem = _check_network_bytes(data)
        if problem:
            failures.append(f"{urlsplit(url).netloc}: {problem}")
            continue
        write_atomic(dest, data)
        log(f"saved {dest} (sha256 {hashlib.sha256(data).hexdigest()})")
        return
    raise OSError("; ".join(failures))


def _check_network_bytes(data: bytes) -> str | None:
    """Why ``data`` is not a feature network with the calling convention above, or None.
    Stands in for the checksum nobody publishes: the file must load as TorchScript and give
    one feature row for one small image."""
    try:
        net = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        with torch.no_grad():
            features = net(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), return_features=True)
    except Exception as err:  # anything that fails here means "not the network"
        return f"not a TorchScript feature network ({one_line(err)})"
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != 1:
        return "not a TorchScript feature network (return_features=True gave no (1, D) tensor)"
    return None


def load_feature_network(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript network at ``path`` on ``device``, in eval mode. A file that is not a
    TorchScript module raises UserError (one line)."""
    try:
        net = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # RuntimeError (not a zip / no code), ValueError (no file), ...
        raise UserError(f"{path} is not a TorchScript module ({one_line(err)}); replace it with {WEIGHTS_NAME} "
                        f"from {WEIGHTS_URL}, or pass --feature-weights PATH") from err
    return net.eval()


# --------------------------------------------------------------------------- features
def check_images(images, what: str, min_count: int) -> None:
    """UserError (one line, naming ``what``) unless ``images`` are at least ``min_count``
    uint8 images (N, 1 or 3, H, W): what the network's calling convention takes."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] not in (1, 3):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise UserError(f"{what} must be uint8 images of shape (N, 1 or 3, H, W) in [0, 255]; got {got}")
    if len(images) < min_count:
        raise UserError(f"need at least {min_count} {what} images to judge with Inception features, "
                        f"got {len(images)}")


def _network_device(net) -> torch.device:
    """Where the network's weights are (the CPU for a network without any)."""
    for tensor in list(net.parameters()) + list(net.buffers()):
        return tensor.device
    return torch.device("cpu")


def call_network(net, batch: Tensor, **flag: bool) -> Tensor:
    """net(batch, return_features=True) or net(batch, no_output_bias=True), as StyleGAN2-ADA
    calls it: a tensor (N, D) back, or the one-line UserError. A file that is TorchScript but
    not this network (a forward of other arguments, one that raises inside, other outputs)
    fails here, whatever it raises: TorchScript's errors are RuntimeErrors of many lines."""
    name = next(iter(flag))
    try:
        out = net(batch, **flag)
    except Exception as e:  # noqa: BLE001 -- any failure inside a foreign network is the file's
        raise UserError(f"the feature network cannot be called as Inception-v3 is (net(images, {name}=True)): "
                        f"{network_error(e)}; use {WEIGHTS_NAME}") from None
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != len(batch) or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"the feature network does not follow StyleGAN2-ADA's calling convention ({name}=True "
                        f"must give (N, D) floats, it gave {shape}); use {WEIGHTS_NAME}")
    return out


def network_error(err: Exception) -> str:
    """What went wrong inside a network, in a few words: an error raised inside TorchScript
    comes wrapped in the interpreter's trace, whose last line is the error itself."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback of TorchScript" in str(err):
        return one_line(RuntimeError(lines[-1].split("Error: ", 1)[-1]), 160)
    return one_line(err, 160)


def _shortcut_weight(net, batch: Tensor, features: Tensor) -> Tensor | None:
    """``net.output.weight`` (the real network's classifier, (1008, 2048)) when
    softmax(features @ weight.T) gives what ``net(batch, no_output_bias=True)`` gives, else None.
    That is how the real network computes its probabilities, and doing it here from the
    features saves a second pass through the network per batch, which would double the cost;
    it is checked on the first batch, so another network falls back to calling itself."""
    weight = getattr(getattr(net, "output", None), "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        return None
    probs = torch.softmax(F.linear(features, weight), dim=1)
    expected = call_network(net, batch, no_output_bias=True)
    same = expected.shape == probs.shape \
        and torch.allclose(probs, expected, rtol=1e-4, atol=1e-6)
    return weight if same else None


def _probabilities(net, batch: Tensor, features: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return call_network(net, batch, no_output_bias=True)
    return torch.softmax(F.linear(features, weight), dim=1)


def network_outputs(net, images: Tensor, *, batch_size: int = BATCH_SIZE, device=None, progress: bool = False,
                    desc: str = "Inception features") -> tuple[Tensor, Tensor]:
    """(features, probabilities) of uint8 images (N, 1 or 3, H, W), as CPU tensors in the
    network's own dtype (float32 for the real one). Batches go to ``device`` (default: where
    the network is) as uint8, grayscale repeated to 3 channels (StyleGAN3 metric_utils.py)."""
    check_images(images, "input", 1)
    device = torch.device(device) if device is not None else _network_device(net)
    batch_size = max(1, int(batch_size))
    features, probs, weight = [], [], None
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress,
                          leave=False):
            batch = images[start:start + batch_size].to(device)
            if batch.shape[1] == 1:
                batch = batch.repeat(1, 3, 1, 1)
            f = call_network(net, batch, return_features=True)
            if start == 0:
                weight = _shortcut_weight(net, batch, f)
            features.append(f.cpu())
            probs.append(_probabilities(net, batch, f, weight).cpu())
    return torch.cat(features), torch.cat(probs)
