"""ADM's center crop: how REPA and SARA turn an ImageNet photo into a square uint8 image.

The crop of guided-diffusion's `image_datasets.py` (Dhariwal & Nichol, 2021), which REPA's
preprocessing and SARA reuse for ImageNet-256:

1. while the shorter side is >= 2 S, halve both sides (integer division) with BOX resampling;
2. BICUBIC-resize so that the shorter side is S, each side becoming `round(side * S / min side)`;
3. crop S x S at offsets `((H - S) // 2, (W - S) // 2)`.

The halving steps anti-alias the downscale cheaply; the bicubic step then moves by less than 2x.
Every step runs in PIL, so results are bit-identical to the reference pipeline for a given
Pillow version.
"""

import io

import numpy as np
import PIL.Image


def center_crop_arr(image: PIL.Image.Image, image_size: int) -> np.ndarray:
    """ADM center crop of `image` to S = `image_size`.

    Args:
      image: any PIL image; greyscale, CMYK, RGBA or palette images are converted to RGB first
        (alpha is dropped, not composited).
      image_size: S, the side of the square output.

    Returns:
      uint8 (S, S, 3), C-contiguous.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}.")
    image = image.convert("RGB")
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), PIL.Image.Resampling.BOX)
    scale = image_size / min(image.size)
    image = image.resize(
        tuple(round(side * scale) for side in image.size), PIL.Image.Resampling.BICUBIC
    )
    arr = np.asarray(image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return np.ascontiguousarray(arr[top : top + image_size, left : left + image_size])


def decode_and_crop(data: bytes, image_size: int) -> np.ndarray:
    """Decodes an encoded image (JPEG, PNG, or any format PIL reads) and ADM-crops it.

    Args:
      data: the encoded file's bytes.
      image_size: S, the side of the square output.

    Returns:
      uint8 (S, S, 3).
    """
    with PIL.Image.open(io.BytesIO(data)) as image:
        return center_crop_arr(image, image_size)
