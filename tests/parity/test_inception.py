"""Tests for the FID InceptionV3 (sara_jax.models.inception) and its converter, against
pytorch-fid's network restated in torch (tests/fid_inception_torch.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.converters.inception import from_pytorch_fid, load_inception
from sara_jax.models.inception import FIDInceptionV3, preprocess
from sara_jax.models.resize import bilinear_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fid_inception_torch import calibrated_reference, nchw  # noqa: E402

FIELD = "eval.inception"
REL_TOL = 1e-4


def report(name: str, got, want: np.ndarray) -> float:
    """Prints the max abs / relative difference (visible with -s); returns the relative one."""
    abs_diff = np.abs(np.asarray(got, np.float64) - want).max()
    rel = abs_diff / np.abs(want).max()
    print(f"{name}: max |ref| {np.abs(want).max():.3e}, max abs diff {abs_diff:.3e}, rel {rel:.3e}")
    return float(rel)


@pytest.fixture(scope="module")
def images() -> jax.Array:
    """Two preprocessed (smooth, upsampled) random images, (2, 299, 299, 3) in [-1, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    return preprocess(jnp.asarray(pixels), "pytorch_fid")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """(torch model with calibrated-then-randomised BatchNorms, its .pth path)."""
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    return calibrated_reference(images, path), path


def state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_matches_torch_reference(images, reference):
    model, path = reference
    module, variables = load_inception(str(path), FIELD, cache_dir=None)
    got = jax.jit(module.apply)(variables, images)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model(nchw(images)).items()}
    want["mixed_6_conv"] = want["mixed_6_conv"].transpose(0, 2, 3, 1)
    assert got["pool3"].shape == (2, 2048)
    assert got["logits"].shape == (2, 1008)
    assert got["mixed_6_conv"].shape == (2, 17, 17, 192)
    for name in ("pool3", "logits", "mixed_6_conv"):
        assert got[name].dtype == jnp.float32
        assert report(name, got[name], want[name]) <= REL_TOL, name


def test_pytorch_fid_preprocess_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    for height, width in ((256, 256), (64, 512), (299, 299), (320, 300)):
        pixels = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        got = preprocess(jnp.asarray(pixels), "pytorch_fid")
        x = nchw(pixels.astype(np.float32)) / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        want = (2 * x - 1).numpy().transpose(0, 2, 3, 1)
        assert got.shape == (2, 299, 299, 3)
        assert np.abs(np.asarray(got) - want).max() <= 1e-5, (height, width)
        report(f"preprocess {height}x{width}", got, want)


def test_adm_preprocess_matches_tf1_resize_bilinear():
    """ADM's evaluator: [0, 255] floats through the graph's ResizeBilinear (TF1 legacy), then
    (x - 128) / 128; TF's own op is the reference."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    for height, width in ((256, 256), (64, 512), (299, 299), (320, 300)):
        pixels = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        got = np.asarray(preprocess(jnp.asarray(pixels), "adm"))
        resized = tf.compat.v1.image.resize_bilinear(
            pixels.astype(np.float32), (299, 299), align_corners=False, half_pixel_centers=False
        )
        want = (resized.numpy() - 128.0) / 128.0
        assert got.shape == (2, 299, 299, 3)
        assert np.abs(got - want).max() <= 1e-5, (height, width)
        report(f"ADM preprocess {height}x{width}", got, want)
    # The two evaluators' inputs differ visibly at 256 px.
    pixels = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    gap = preprocess(jnp.asarray(pixels), "adm") - preprocess(jnp.asarray(pixels), "pytorch_fid")
    assert np.abs(np.asarray(gap)).max() > 0.05


def test_unknown_preprocessing_is_named():
    with pytest.raises(ValueError, match="'adm', 'pytorch_fid'.*'tf'"):
        preprocess(jnp.zeros((1, 8, 8, 3), jnp.uint8), "tf")


@pytest.mark.parametrize("size", [7, 37, 64, 256, 300, 320, 512, 1024])
def test_bilinear_weights_equal_torchs(size):
    """torch's weights, read off by resizing the identity (one impulse per column)."""
    impulses = torch.eye(size).reshape(size, 1, size, 1).expand(size, 1, size, 2)
    resized = F.interpolate(impulses, size=(299, 2), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(bilinear_weights(size, 299), resized[:, 0, :, 0].T.numpy())


@pytest.fixture(scope="module")
def expected():
    dummy = jnp.zeros((1, 299, 299, 3))
    return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), dummy)


def test_converter_names_missing_key(reference, expected):
    sd = state_dict(reference[0])
    del sd["Mixed_6d.branch7x7_2.bn.running_var"]
    with pytest.raises(KeyError, match=r"Mixed_6d\.branch7x7_2\.bn\.running_var"):
        from_pytorch_fid(sd, "ckpt.pth", expected)


def test_converter_names_unexpected_key(reference, expected):
    sd = state_dict(reference[0])
    sd["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
    sd["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.zeros((), np.int64)  # ignored
    with pytest.raises(KeyError, match=r"unexpected keys 'AuxLogits\.fc\.weight'"):
        from_pytorch_fid(sd, "ckpt.pth", expected)


def test_converter_names_misshapen_key(reference, expected):
    sd = state_dict(reference[0])
    sd["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048), np.float32)
    with pytest.raises(ValueError, match=r"Mixed_7c\.branch_pool\.conv\.weight"):
        from_pytorch_fid(sd, "ckpt.pth", expected)
    sd = state_dict(reference[0])
    sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
    with pytest.raises(ValueError, match=r"'fc\.weight' gives shape \(2048, 1000\)"):
        from_pytorch_fid(sd, "ckpt.pth", expected)
