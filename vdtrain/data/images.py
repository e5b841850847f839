"""The one image loader of every vdtrain command: the pixels a model sees are the same in training, scoring,
generation and the figures, and the same as `transformers.image_utils.load_image` gives HF pipelines.

- EXIF orientation is applied (a phone's rotated JPEG is seen upright), as `load_image` does.
- 16-bit and float images are scaled to 8 bits (PIL's own `convert("RGB")` clips a 0..65535 gradient to white).
- Images larger than `max_image_pixels()` are refused per file, by name, before they are decoded; the limit is
  PIL's (twice `Image.MAX_IMAGE_PIXELS`, about 179 megapixels) unless `VDTRAIN_MAX_IMAGE_PIXELS` raises it
  (`0`: no limit).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from vdtrain.models.base import ConversationError

MAX_PIXELS_VARIABLE = "VDTRAIN_MAX_IMAGE_PIXELS"
_PIL_LIMIT = 2 * 89_478_485  # PIL raises DecompressionBombError above twice its MAX_IMAGE_PIXELS default
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def max_image_pixels() -> int | None:
    """The largest image (width x height) vdtrain decodes: `VDTRAIN_MAX_IMAGE_PIXELS`, else PIL's limit; None: any."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return _PIL_LIMIT
    try:
        limit = int(float(value))
    except ValueError:
        raise ConversationError(
            f"{MAX_PIXELS_VARIABLE}={value!r}: expected a number of pixels (0: no limit)"
        ) from None
    return None if limit <= 0 else limit


def _too_large(path: Path | str, size: tuple[int, int], limit: int) -> ConversationError:
    width, height = size
    return ConversationError(
        f"image {path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit of "
        f"{limit / 1e6:.0f} megapixels that guards against decompression bombs; if you trust the file, raise it "
        f"with {MAX_PIXELS_VARIABLE}={width * height} (0: no limit)"
    )


def open_image(path: str | os.PathLike | IO[bytes]) -> Image.Image:
    """Open an image file (or the bytes of an embedded one) lazily, header only, under vdtrain's pixel limit; the
    caller closes it.

    Raises:
        ConversationError: the image is larger than `max_image_pixels()` (named with the setting that raises it).
        OSError: the file is missing or not an image (PIL's `UnidentifiedImageError`).
    """
    name = Path(path) if isinstance(path, (str, os.PathLike)) else "(embedded image)"
    limit = max_image_pixels()
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # vdtrain checks the size itself, so the error names the file and the setting
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(name if isinstance(name, Path) else path)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if limit is not None and image.size[0] * image.size[1] > limit:
        image.close()
        raise _too_large(name, image.size, limit)
    return image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """`(width, height)` as the image is seen once its EXIF orientation is applied (5-8 swap the sides), read
    from the header: what `load_image` gives, without decoding the pixels."""
    width, height = image.size
    if "exif" not in image.info:  # no EXIF block in the header (a PNG's getexif would decode the pixels to look)
        return width, height
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):  # a broken EXIF block: PIL's exif_transpose ignores it too
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` upright (EXIF orientation applied) as 8-bit RGB; 16-bit and float pixels scaled, not clipped."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "I" and values.max(initial=0) <= 255 and values.min(initial=0) >= 0:
            scaled = values  # 8-bit values stored as 32-bit integers
        else:
            scaled = values / 257.0  # 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scaled = values * 255.0 if values.size and 0.0 <= values.min() and values.max() <= 1.0 else values
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, sample_id: str = "?") -> Image.Image:
    """An image file as upright 8-bit RGB, with an error that names the sample and the file."""
    path = Path(path)
    try:
        with open_image(path) as image:
            return to_rgb(image)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"sample {sample_id!r}: image {path} does not exist") from error
    except ConversationError as error:
        raise ConversationError(f"sample {sample_id!r}: {error}") from None
    except OSError as error:
        raise ConversationError(f"sample {sample_id!r}: cannot decode image {path}: {error}") from error


def image_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be loaded, from its header alone (about 0.1 ms): None when it opens."""
    try:
        with open_image(path):
            return None
    except ConversationError as error:
        return str(error).removeprefix(f"image {path} ")
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        return f"cannot be read as an image: {type(error).__name__}"
