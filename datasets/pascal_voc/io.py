"""Read and write the image and mask files of the Pascal VOC layout.

Images are JPEGs (`JPEGImages/<id>.jpg`) read as RGB uint8 [H, W, 3]. Masks are PNGs read as label
ids uint8 [H, W]: palette ("P") PNGs in `SegmentationClass/` whose palette indices are the ids
(the colours are never looked at), or plain 8-bit ("L") PNGs in SBD's `SegmentationClassAug/`.
Every bad file raises a ValueError naming the file and the problem (missing, unreadable, wrong
mode, a label value outside 0..20 and 255); nothing is converted or dropped silently.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.pascal_voc.labels import IGNORE_INDEX, NUM_CLASSES, PALETTE, invalid_label_values

PathLike = str | os.PathLike

# Modes a photograph may come in; all are converted to RGB exactly as PIL defines it.
_IMAGE_MODES = ("RGB", "L", "CMYK", "YCbCr")
# Palette indices or 8-bit grey levels are the label ids themselves.
_MASK_MODES = ("P", "L")
# What PIL raises on a missing, truncated or non-image file.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(path: PathLike) -> np.ndarray:
    """Load an image file as RGB uint8 [H, W, 3] (greyscale and CMYK JPEGs converted to RGB)."""
    return _read(Path(path), "image", _IMAGE_MODES, convert_to="RGB")


def load_mask(path: PathLike) -> np.ndarray:
    """Load a label PNG as label ids uint8 [H, W]: 0..20 classes, 255 void (ignored).

    Accepts palette ("P") and 8-bit ("L") PNGs; an RGB colour mask or any value outside 0..20 and
    255 is an error.
    """
    path = Path(path)
    mask = _read(path, "mask", _MASK_MODES)
    check_label_values(mask, str(path))
    return mask


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image or mask file, read from its header without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except _READ_ERRORS as error:
        raise ValueError(f"{path}: unreadable image ({error})") from None
    return height, width


def check_label_values(mask: np.ndarray, where: str) -> None:
    """ValueError naming `where` if `mask` holds a value that is neither 0..20 nor 255."""
    bad_values = invalid_label_values(mask)
    if bad_values.size:
        count = int(np.isin(mask, bad_values).sum())
        raise ValueError(
            f"{where}: {count} pixels with values outside 0..{NUM_CLASSES - 1} and "
            f"{IGNORE_INDEX}: {bad_values[:10].tolist()}"
        )


def write_image(path: PathLike, image: np.ndarray, quality: int = 90) -> None:
    """Write RGB uint8 [H, W, 3] as a JPEG (quality 1..95; JPEG is lossy, as VOC's images are)."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def write_mask(path: PathLike, mask: np.ndarray, palette: bool = True) -> None:
    """Write label ids uint8 [H, W] (0..20, 255) as a PNG.

    With `palette`, a palette PNG coloured with the VOC palette (as `SegmentationClass/`); without,
    a plain 8-bit PNG (as SBD's `SegmentationClassAug/`). Both read back to the same ids.
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"{path}: mask must be uint8 [H, W], got {mask.dtype} {mask.shape}")
    check_label_values(mask, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
        image.putpalette(PALETTE.reshape(-1).tolist())
    else:
        image = Image.fromarray(mask)  # uint8 [H, W] is mode "L"
    image.save(path, format="PNG")


def _read(
    path: Path, what: str, modes: tuple[str, ...], convert_to: str | None = None
) -> np.ndarray:
    """The pixels of an image or mask file in one of `modes`: uint8 [H, W] or [H, W, channels]."""
    if not path.is_file():
        raise ValueError(f"{path}: {what} file does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            pixels = None
            if mode in modes:
                converted = image.convert(convert_to) if convert_to not in (None, mode) else image
                pixels = np.array(converted, dtype=np.uint8)
    except _READ_ERRORS as error:
        raise ValueError(f"{path}: unreadable {what} ({type(error).__name__}: {error})") from None
    if pixels is None:
        expected = "a palette ('P') or 8-bit ('L') PNG of label ids" if what == "mask" else modes
        raise ValueError(f"{path}: {what} has mode {mode!r}; expected {expected}")
    return pixels
