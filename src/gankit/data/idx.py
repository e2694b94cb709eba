"""Reader and writer for the IDX format (the MNIST file format).

An IDX file is: two zero bytes, a type byte, a byte with the number of
dimensions, one big-endian uint32 per dimension, then the values in C order.
Only the unsigned-byte type (0x08) is supported, which is all MNIST and
Fashion-MNIST use.

Every problem with a file raises ``gankit.errors.UserError`` with a one-line
message; the header is checked against the real byte count before anything is
allocated, so a corrupt header cannot make us reserve gigabytes.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gankit.errors import UserError, one_line

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
MAX_DIMS = 4  # MNIST-like data has 1 (labels) or 3 (images); more is a corrupt header.

# Type bytes of the IDX spec, only to name an unsupported type in a message.
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def _header_size(ndim: int) -> int:
    return 4 + 4 * ndim


def read_idx(data: bytes) -> np.ndarray:
    """Parse the (uncompressed) bytes of an IDX file into a writable uint8 array.

    Raises UserError, without a file name, if the bytes are not a well-formed
    unsigned-byte IDX file: too short, wrong magic, unsupported type, a
    dimension count of 0 or above 4, or a payload whose size does not match
    the header exactly (truncated or with trailing bytes).
    """
    if len(data) < 4:
        raise UserError(f"not an IDX file: only {len(data)} bytes, shorter than the 4-byte header")
    zero1, zero2, dtype, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0:
        raise UserError(
            f"not an IDX file: it starts with bytes {data[:2].hex()}, expected 0000"
        )
    if dtype != UBYTE:
        name = _TYPE_NAMES.get(dtype, "unknown")
        raise UserError(
            f"IDX type 0x{dtype:02x} ({name}) is not supported; only 0x08 (unsigned byte) is"
        )
    if not 1 <= ndim <= MAX_DIMS:
        raise UserError(f"IDX header claims {ndim} dimensions; expected 1 to {MAX_DIMS}")
    header = _header_size(ndim)
    if len(data) < header:
        raise UserError(
            f"IDX file truncated inside its header: {len(data)} bytes, the header alone needs {header}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    # Python ints cannot overflow, so a header claiming 10**9 images is compared,
    # not allocated.
    expected = header + int(np.prod(shape, dtype=object))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise UserError(
            f"IDX file {what}: header says shape {tuple(shape)} ({expected} bytes in all), "
            f"the file has {len(data)} bytes"
        )
    # .copy(): frombuffer over bytes is read-only, and torch.from_numpy wants writable memory.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array with 1 to 4 dimensions as IDX bytes (inverse of read_idx)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx needs a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise ValueError(f"write_idx needs 1 to {MAX_DIMS} dimensions, got {array.ndim}")
    header = struct.pack(">BBBB", 0, 0, UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def gunzip_bytes(data: bytes, max_size: int | None = None) -> bytes:
    """Decompress gzip bytes (all members), refusing output above max_size.

    Raises UserError without a file name; callers add it. The limit keeps a
    corrupt or hostile file from expanding without bound in memory.
    """
    return _gunzip_stream(io.BytesIO(data), max_size)


def read_file_bytes(path: str | os.PathLike[str], max_size: int | None = None) -> bytes:
    """The uncompressed bytes of a file that is either gzip or raw (told apart by content).

    max_size, if given, is the most uncompressed bytes accepted. Raises
    UserError naming the file on an unreadable file, a corrupt or truncated
    gzip stream, or a size above max_size.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            is_gzip = handle.read(2) == GZIP_MAGIC
            handle.seek(0)
            if is_gzip:
                return _gunzip_stream(handle, max_size)
            return _read_limited(handle, max_size)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({one_line(err)})") from err


def _gunzip_stream(raw: BinaryIO, max_size: int | None) -> bytes:
    try:
        with gzip.GzipFile(fileobj=raw) as stream:
            return _read_limited(stream, max_size)
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; a truncated stream ends in EOFError.
        raise UserError(f"corrupt or truncated gzip data ({one_line(err)})") from err


def _read_limited(stream: BinaryIO, max_size: int | None) -> bytes:
    """Read a whole stream, raising UserError once it passes max_size bytes."""
    if max_size is None:
        return stream.read()
    data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise UserError(f"larger than expected: more than {max_size} bytes uncompressed")
    return data
