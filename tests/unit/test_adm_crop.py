"""Tests for sara_jax.data.adm_crop: ADM's center crop, checked against a step-by-step PIL run."""

import io

import numpy as np
import PIL.Image
import pytest

from sara_jax.data.adm_crop import center_crop_arr, decode_and_crop


def _reference_crop(image: PIL.Image.Image, size: int) -> np.ndarray:
    """ADM's crop written out step by step, independently of the module under test."""
    image = image.convert("RGB")
    width, height = image.size
    while min(width, height) >= 2 * size:
        width, height = width // 2, height // 2
        image = image.resize((width, height), resample=PIL.Image.BOX)
    short = min(width, height)
    new_width = round(width * size / short)
    new_height = round(height * size / short)
    image = image.resize((new_width, new_height), resample=PIL.Image.BICUBIC)
    pixels = np.array(image)
    y0 = (new_height - size) // 2
    x0 = (new_width - size) // 2
    return pixels[y0 : y0 + size, x0 : x0 + size, :]


def _random_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> PIL.Image.Image:
    """A noisy image with some large-scale structure, so resampling has something to do."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 127 + 100 * np.sin(xx / 17.0)[..., None] * np.cos(yy / 23.0)[..., None]
    noise = rng.normal(0, 30, size=(height, width, channels))
    pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    if mode == "L":
        pixels = pixels[..., 0]
    return PIL.Image.fromarray(pixels, mode=mode)


@pytest.mark.parametrize(
    "width, height, mode",
    [
        (513, 1031, "RGB"),
        (1031, 513, "RGB"),
        (300, 257, "RGB"),
        (1025, 777, "RGB"),
        (256, 256, "RGB"),
        (512, 700, "RGB"),  # shorter side exactly 2 S: one halving, then an identity-size resize
        (100, 180, "RGB"),  # smaller than S: upscaled
        (700, 401, "L"),
        (399, 600, "RGBA"),
        (640, 480, "CMYK"),
    ],
)
@pytest.mark.parametrize("size", [256, 64])
def test_matches_step_by_step_reference(width, height, mode, size):
    image = _random_image(width, height, mode, seed=width * height)
    crop = center_crop_arr(image, size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8
    assert crop.flags.c_contiguous
    np.testing.assert_array_equal(crop, _reference_crop(image, size))


def test_greyscale_gives_three_equal_channels():
    crop = center_crop_arr(_random_image(300, 500, "L"), 256)
    np.testing.assert_array_equal(crop[..., 0], crop[..., 1])
    np.testing.assert_array_equal(crop[..., 0], crop[..., 2])


def test_number_of_halvings_on_a_big_image(monkeypatch):
    calls = []
    original_resize = PIL.Image.Image.resize

    def recording_resize(self, size, resample=None, *args, **kwargs):
        calls.append((self.size, tuple(size), resample))
        return original_resize(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "resize", recording_resize)
    center_crop_arr(_random_image(2100, 1100), 256)
    # 1100 >= 512: halve to 550; 550 >= 512: halve to 275; 275 < 512: bicubic to short side 256.
    assert calls == [
        ((2100, 1100), (1050, 550), PIL.Image.Resampling.BOX),
        ((1050, 550), (525, 275), PIL.Image.Resampling.BOX),
        ((525, 275), (489, 256), PIL.Image.Resampling.BICUBIC),  # round(525 * 256 / 275) = 489
    ]


def test_center_offsets():
    # A 256 x 300 (H x W) image needs no resize; the crop takes columns [22, 278).
    pixels = np.zeros((256, 300, 3), np.uint8)
    pixels[:, :, 0] = (np.arange(300) % 256)[None, :]
    crop = center_crop_arr(PIL.Image.fromarray(pixels), 256)
    np.testing.assert_array_equal(crop, pixels[:, 22:278])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_and_crop_equals_cropping_the_decoded_image(fmt):
    buffer = io.BytesIO()
    _random_image(523, 389, seed=3).save(buffer, format=fmt, quality=90)
    data = buffer.getvalue()
    expected = center_crop_arr(PIL.Image.open(io.BytesIO(data)), 128)
    np.testing.assert_array_equal(decode_and_crop(data, 128), expected)


def test_bad_size_and_bad_bytes():
    with pytest.raises(ValueError, match="image_size"):
        center_crop_arr(_random_image(32, 32), 0)
    with pytest.raises(PIL.UnidentifiedImageError):
        decode_and_crop(b"not an image", 32)
