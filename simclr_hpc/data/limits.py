"""What a data file a user hands us may claim, and how an image's pixels become uint8: the rules every reader follows
(``sources`` for source files, ``shard_writer`` when building shards, ``decode`` and ``shard_reader`` when training,
``index`` for index.json).

- **Size**: an image claiming more than ``MAX_PIXELS`` pixels (a PNG header saying 40000 x 40000 is a few hundred
  bytes that decode to 4.8 GB) is refused from its header, before anything is decoded; PIL's own bomb check is set to
  the same limit, and its ``DecompressionBombError`` is one of ``IMAGE_ERRORS``.
- **Depth**: 16-bit images (``I;16`` PNGs, ``I`` TIFFs) are scaled to 8 bits (``v >> 8``, not clipped at 255, which
  made them white); float images (``F`` TIFFs) in [0, 1] are scaled by 255, those already in [0, 255] are rounded, any
  other range is refused (there is no right guess). PIL's plain ``convert("RGB")`` saturates or blackens them.
- **Arrays**: an ``.npz`` may declare at most ``MAX_NPZ_BYTES`` (read from its arrays' headers before any is loaded:
  a few hundred compressed bytes can claim gigabytes), and labels at most ``MAX_CLASSES`` classes (labels up to 2^40
  would make a trillion class names).
- **Files**: an image or shard path must be a regular file (a FIFO would block the reader forever, a device would
  stream without end): :func:`not_regular` says why not.

Torch-free: ``sources`` (login nodes) imports it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 1 << 26
"""About 67 M pixels (8192 x 8192): far above any training image, far below a decompression bomb."""
Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # PIL raises DecompressionBombError above twice this: our limit
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
"""What reading a corrupt, truncated, hostile or oversized image raises (PIL's errors and ours)."""


MAX_NPZ_BYTES = 4 << 30
"""The most an ``.npz`` may inflate to. Larger data: an ImageFolder, read file by file."""
MAX_CLASSES = 1_000_000
"""The most classes labels may name (ImageNet-21k has 21,841)."""


class ImageTooLarge(ValueError):
    """An image header claims more pixels than MAX_PIXELS."""


def check_size(width: int, height: int) -> None:
    """ImageTooLarge when ``width x height`` is beyond MAX_PIXELS (or not positive)."""
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"its header claims {width}x{height} pixels, more than the {MAX_PIXELS:,} an image may "
            "have (a decompression bomb, or not a training image); resize or remove it"
        )


def opened(img: Image.Image) -> Image.Image:
    """``img`` (opened, not decoded) after :func:`check_size`."""
    check_size(img.width, img.height)
    return img


def to_uint8(img: Image.Image, grey: bool | None = None) -> np.ndarray:
    """The pixels of ``img`` as uint8 HW (grey) or HWC RGB; ``grey`` None keeps grey images grey. See the module
    docstring for 16-bit and float images."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = _scaled(np.asarray(img), mode)
        if grey is False:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return arr
    keep_grey = mode in ("1", "L", "LA") and grey is not False
    target = "L" if (keep_grey or grey) else "RGB"
    return np.asarray(img if mode == target else img.convert(target))


def _scaled(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or low < 0 or high > 255:
            raise ValueError(
                f"a float image with values in [{low:g}, {high:g}]: neither [0, 1] nor [0, 255]; convert "
                "it to 8-bit first"
            )
        return np.rint(arr * (255.0 if high <= 1.0 else 1.0)).astype(np.uint8)
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() > 65535:
        raise ValueError(
            f"an integer image with values in [{arr.min()}, {arr.max()}], beyond 16 bits; convert it to 8-bit first"
        )
    return (arr >> 8).astype(np.uint8)


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a data file (a FIFO, a device, a socket, a directory, missing), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return err.strerror or str(err)
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return "is " + next((kind for test, kind in kinds if test(mode)), "not a regular file") + ", not a regular file"


def npz_too_large(arrays) -> str | None:
    """Why the opened ``np.load`` npz ``arrays`` must not be loaded (its arrays declare more than MAX_NPZ_BYTES, or
    one is unreadable), from the headers alone; None when it may."""
    total = 0
    for name in arrays.files:
        try:
            with arrays.zip.open(f"{name}.npy") as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(member)
        except (OSError, ValueError, KeyError) as exc:
            return f"array {name!r} is not readable ({exc})"
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    if total > MAX_NPZ_BYTES:
        return (
            f"its arrays inflate to {total / 2**30:.1f} GiB, more than the {MAX_NPZ_BYTES / 2**30:.0f} GiB an .npz "
            "source may hold; use an imagefolder: source instead"
        )
    return None
