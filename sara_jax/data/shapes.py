"""Procedurally generated class-conditional images: the demo's built-in data set.

Every record is rendered on demand as a pure function of `(seed, index)`, so nothing is stored,
nothing is downloaded, and any index reads back identically in any process. Each class pairs its
own shape with its own hue, which a small pixel-space diffusion model picks up in a few hundred
steps and a person recognises on a 32x32 sample grid. Within a class, examples vary in position,
size, orientation or phase, colour (a small jitter around the class hue) and background (a dark,
randomly tinted vertical gradient).
"""

from collections.abc import Callable

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "red circle",
    "orange square",
    "yellow triangle",
    "green ring",
    "cyan cross",
    "blue horizontal stripes",
    "purple diamond",
    "magenta checkerboard",
    "white star",
    "brown diagonal stripes",
)

_CLASS_COLORS = np.array(
    [
        (225, 40, 40),
        (245, 140, 20),
        (235, 215, 40),
        (40, 180, 60),
        (40, 205, 215),
        (50, 90, 235),
        (140, 60, 215),
        (230, 60, 180),
        (240, 240, 240),
        (170, 105, 40),
    ],
    dtype=np.float32,
)
_COLOR_JITTER = 20.0

# A mask function takes the pixel-centre grids yy, xx: (S, S) float32, the image size S and the
# example's generator, and returns the foreground: (S, S) bool.
_Mask = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def _centre(size: int, radius: float, rng: np.random.Generator) -> tuple[float, float]:
    """A random centre (cy, cx) that keeps a shape of this radius inside the image."""
    lo, hi = radius + 0.5, size - radius - 0.5
    cy, cx = rng.uniform(lo, hi, size=2)
    return float(cy), float(cx)


def _circle(yy, xx, size, rng):
    r = rng.uniform(0.18, 0.32) * size
    cy, cx = _centre(size, r, rng)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _square(yy, xx, size, rng):
    h = rng.uniform(0.15, 0.28) * size
    cy, cx = _centre(size, h, rng)
    return (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)


def _triangle(yy, xx, size, rng):
    # Upward isosceles triangle: apex at the top, base of width 2h at the bottom.
    h = rng.uniform(0.18, 0.32) * size
    cy, cx = _centre(size, h, rng)
    dy, dx = yy - cy, xx - cx
    return (np.abs(dy) <= h) & (np.abs(dx) <= (dy + h) / 2)


def _ring(yy, xx, size, rng):
    r = rng.uniform(0.22, 0.34) * size
    cy, cx = _centre(size, r, rng)
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


def _cross(yy, xx, size, rng):
    h = rng.uniform(0.22, 0.34) * size
    t = 0.3 * h
    cy, cx = _centre(size, h, rng)
    ady, adx = np.abs(yy - cy), np.abs(xx - cx)
    return ((ady <= h) & (adx <= t)) | ((adx <= h) & (ady <= t))


def _horizontal_stripes(yy, xx, size, rng):
    period = rng.uniform(0.16, 0.25) * size
    phase = rng.uniform(0, period)
    return np.mod(yy + phase, period) < period / 2


def _diamond(yy, xx, size, rng):
    h = rng.uniform(0.22, 0.36) * size
    cy, cx = _centre(size, h, rng)
    return np.abs(yy - cy) + np.abs(xx - cx) <= h


def _checkerboard(yy, xx, size, rng):
    cell = rng.uniform(0.12, 0.19) * size
    oy, ox = rng.uniform(0, 2 * cell, size=2)
    return (np.floor((yy + oy) / cell) + np.floor((xx + ox) / cell)) % 2 == 0


def _star(yy, xx, size, rng):
    # Five-pointed star in polar form: the radius swings between 0.4 R and R, one point upward.
    r = rng.uniform(0.26, 0.38) * size
    cy, cx = _centre(size, r, rng)
    theta = np.arctan2(yy - cy, xx - cx) + np.pi / 2 + rng.uniform(-0.2, 0.2)
    boundary = r * (0.4 + 0.6 * np.abs(np.cos(2.5 * theta)) ** 3)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= boundary**2


def _diagonal_stripes(yy, xx, size, rng):
    period = rng.uniform(0.22, 0.32) * size
    phase = rng.uniform(0, period)
    return np.mod(yy + xx + phase, period) < period / 2


_MASKS: tuple[_Mask, ...] = (
    _circle,
    _square,
    _triangle,
    _ring,
    _cross,
    _horizontal_stripes,
    _diamond,
    _checkerboard,
    _star,
    _diagonal_stripes,
)


class ShapesSource:
    """Random-access source of procedurally drawn shape images (grain's source protocol).

    Record `i`: `{"image": uint8 (S, S, 3), "label": int32 scalar}` with label `i % num_classes`,
    so classes are balanced to within one example; the pipeline's shuffle mixes them.
    """

    def __init__(
        self, num_examples: int, image_size: int = 32, num_classes: int = 10, seed: int = 0
    ):
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}.")
        if not 1 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(
                f"num_classes must be in [1, {len(CLASS_NAMES)}] (the classes ShapesSource "
                f"defines: {', '.join(CLASS_NAMES)}), got {num_classes}."
            )
        self.num_examples = num_examples
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed
        centres = np.arange(image_size, dtype=np.float32) + 0.5
        self._yy, self._xx = np.meshgrid(centres, centres, indexing="ij")

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (
            f"ShapesSource(num_examples={self.num_examples}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Renders record `index`: image uint8 (S, S, 3), label int32 scalar."""
        image, label, _ = self._render(index)
        return {"image": image, "label": np.int32(label)}

    def foreground(self, index: int) -> np.ndarray:
        """The pixels of record `index`'s shape: bool (S, S) (the spatial metrics' SRSS asks
        which tokens are object and which background)."""
        return self._render(index)[2]

    def _render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """(image uint8 (S, S, 3), label, shape mask bool (S, S)) of record `index`."""
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range [0, {self.num_examples}).")
        label = index % self.num_classes
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size

        # Dark background so every class hue, white included, stands out from it.
        base = rng.uniform(10.0, 50.0) + rng.uniform(-8.0, 8.0, size=3)
        gradient = rng.uniform(-16.0, 16.0) * (self._yy / size - 0.5)
        background = base + gradient[..., None]

        color = _CLASS_COLORS[label] + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, size=3)
        mask = _MASKS[label](self._yy, self._xx, size, rng)
        image = np.where(mask[..., None], color, background)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, mask
