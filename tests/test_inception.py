"""Tests for the FID InceptionV3 (sara_jax.models.inception) and its converter.

torchvision (and so pytorch-fid) is not installable here, so the reference is a compact torch
re-statement of pytorch-fid's FIDInceptionV3 below: torchvision's Inception3 blocks with the
FID patches (count_include_pad=False average pools in A/C/E, a max pool in the last E), with
the same state-dict keys. Its BatchNorm affine parameters are random, its statistics the
batch statistics of the test images (so every layer's activations stay O(1) and each layer
matters), randomly perturbed.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sara_jax.converters.inception import from_pytorch_fid, load_inception
from sara_jax.models.inception import FIDInceptionV3, preprocess
from sara_jax.models.resize import bilinear_weights

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

FIELD = "eval.inception"
REL_TOL = 1e-4


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for i in range(2, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for i in range(2, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (max_pool=False) or FIDInceptionE_2 (max_pool=True)."""

    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
    """pytorch-fid's fid_inception_v3() (eval mode), returning the three features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"):
            x = getattr(self, name)(x)
        # TF's mixed_6/conv: Mixed_6d's 1x1 branch, taken from the module itself.
        mixed_6_conv = self.Mixed_6d.branch1x1(x)
        for name in ("Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        pool3 = x.mean(dim=(2, 3))
        return {"pool3": pool3, "logits": self.fc(pool3), "mixed_6_conv": mixed_6_conv}


def report(name: str, got, want: np.ndarray) -> float:
    """Prints the max abs / relative difference (visible with -s); returns the relative one."""
    abs_diff = np.abs(np.asarray(got, np.float64) - want).max()
    rel = abs_diff / np.abs(want).max()
    print(f"{name}: max |ref| {np.abs(want).max():.3e}, max abs diff {abs_diff:.3e}, rel {rel:.3e}")
    return float(rel)


def nchw(x) -> "torch.Tensor":
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


@pytest.fixture(scope="module")
def images() -> jax.Array:
    """Two preprocessed (smooth, upsampled) random images, (2, 299, 299, 3) in [-1, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    return preprocess(jnp.asarray(pixels), "pytorch_fid")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """(torch model with calibrated-then-randomised BatchNorms, its .pth path)."""
    torch.manual_seed(0)
    model = TorchFIDInception()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.momentum = 1.0
        # One train-mode pass with momentum 1: running stats := the batch's statistics.
        model.train()(nchw(images))
        model.eval()
        # Perturbations compound through the ~20 layers deep network: keep them mild.
        for bn in bns:
            shift = torch.empty_like(bn.running_mean).uniform_(-0.1, 0.1)
            bn.running_mean.add_(shift * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_matches_torch_reference(images, reference):
    model, path = reference
    module, variables = load_inception(str(path), FIELD)
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


def test_evaluate_command_end_to_end(reference, tmp_path):
    """`python -m sara_jax.evaluate` on a pytorch-fid-format .pth: prints and writes the metrics."""
    rng = np.random.default_rng(4)
    samples = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sara_jax.evaluate",
            f"--samples={tmp_path / 'samples.npz'}",
            f"--reference={tmp_path / 'ref.npz'}",
            f"--inception={reference[1]}",
            "--batch_size=12",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["num_samples"] == 12 and written["preprocessing"] == "adm"
    for name in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert np.isfinite(written[name]), name
        assert f"{name}: " in result.stdout
    assert written["fid"] > 0 and 0 <= written["precision"] <= 1
