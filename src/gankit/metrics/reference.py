"""The one cache of reference statistics, for both judges.

What samples are compared with (the real images' features, their statistics and k-NN
radii, the floors: the figures of real images) costs more than judging the samples, and
depends only on a few things: the feature network (the evaluator's weights, or
Inception's TorchScript code and weights), the reference images (their bytes, or a key a
caller vouches for), the seed and how the reference is computed (``REFERENCE_VERSION``).
So it is computed once and kept in a file named by a hash of these::

    reference_path(folder, *parts)  -> folder / reference-<sha256 of REFERENCE_VERSION and parts>.pt
    read_reference(path, keys)      -> the dict written there, or None (compute it afresh)
    write_reference(path, ref)      -> stored atomically; a cache that cannot be written only costs time

A file that is missing, unreadable (torch.load with weights_only: tensors and plain
values only, never code), of another version or without the keys a judge needs is None:
the judge computes the reference again and rewrites it, never trusting a damaged file.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from gankit.files import write_atomic

__all__ = ["REFERENCE_VERSION", "reference_path", "read_reference", "write_reference", "digest_module",
           "digest_tensor"]

#: Bump when a cached reference is computed differently or holds other keys: every older
#: file then names another hash and is simply recomputed. 2: one cache for both judges
#: (before: one version each, and the evaluator's files had no version inside).
REFERENCE_VERSION = 2
_VERSION_KEY = "version"  # stored in the file beside the caller's keys, checked on reading


def digest_tensor(h, tensor: Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes to ``h`` (a hashlib object)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    h.update(f"\0tensor\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
    h.update(flat.view(torch.uint8).numpy())


def digest_module(h, module: nn.Module) -> None:
    """Feed a network's code (a TorchScript module's; else its class name) and every weight
    (name, dtype, shape, bytes) to ``h``: two networks that compute differently never share
    a reference."""
    h.update(f"\0module\0{getattr(module, 'code', type(module).__qualname__)}".encode())
    for name, tensor in module.state_dict().items():
        h.update(f"\0{name}".encode())
        digest_tensor(h, tensor)


def _digest(h, part) -> None:
    if isinstance(part, nn.Module):
        digest_module(h, part)
    elif isinstance(part, Tensor):
        digest_tensor(h, part)
    elif isinstance(part, (str, int)) and not isinstance(part, bool):
        # Typed and length-prefixed, so that ("ab", "c") and ("a", "bc"), or 1 and "1", differ.
        text = str(part)
        h.update(f"\0{type(part).__name__}\0{len(text)}\0{text}".encode())
    else:
        raise TypeError(f"a reference depends on strings, ints, tensors and networks, not {type(part).__name__}")


def reference_path(folder: str | os.PathLike, *parts: str | int | Tensor | nn.Module) -> Path:
    """``folder / reference-<hash>.pt``, the hash of REFERENCE_VERSION and ``parts`` (each
    a string, an int, a tensor or a network, in order): everything the reference depends on."""
    h = hashlib.sha256(f"reference\0{REFERENCE_VERSION}".encode())
    for part in parts:
        _digest(h, part)
    return Path(folder).expanduser() / f"reference-{h.hexdigest()[:24]}.pt"


def read_reference(path: Path, keys: Iterable[str]) -> dict | None:
    """The dict ``write_reference`` stored at ``path`` (without the version it adds), or
    None when the file is missing, unreadable, of another REFERENCE_VERSION or lacks one of
    ``keys``."""
    if not path.is_file():
        return None
    try:
        ref = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign: computed afresh and rewritten
        return None
    if not isinstance(ref, dict) or ref.get(_VERSION_KEY) != REFERENCE_VERSION or not set(keys) <= set(ref):
        return None
    return {k: v for k, v in ref.items() if k != _VERSION_KEY}


def write_reference(path: Path, ref: dict) -> None:
    """Store ``ref`` (tensors and plain values: what weights_only loads) at ``path``
    atomically, with REFERENCE_VERSION under "version"; a read-only cache only costs time."""
    buffer = io.BytesIO()
    torch.save({**ref, _VERSION_KEY: REFERENCE_VERSION}, buffer)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError:  # a read-only or full cache: the next judgement computes the reference again
        pass
