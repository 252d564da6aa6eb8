"""Tests for sara_jax.convert.resnet: ResNet-18 weights -> the discriminator's bn1/layer1/layer2.

The reference is transformers' ResNetModel (random init, BatchNorm stats and affine params
randomised so no BatchNorm is the identity), saved with save_pretrained as a published
checkpoint would be. torchvision naming is built from the same weights by renaming.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from sara_jax.converters.resnet import from_hf, from_torchvision, pretrained_discriminator
from sara_jax.models.discriminator import BasicBlock, Discriminator

torch = pytest.importorskip("torch")

Z_DIM = 8
FIELD = "discriminator.pretrained"


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """(eval-mode ResNetModel with depths [2, 2], the directory save_pretrained wrote)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        layer_type="basic", depths=[2, 2], hidden_sizes=[64, 128], embedding_size=64
    )
    model = transformers.ResNetModel(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("hf_resnet")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def variables():
    """Discriminator variables from its own init, on a 4x4 token grid."""
    tokens = jnp.zeros((2, 16, Z_DIM))
    return Discriminator().init(jax.random.key(0), tokens, train=False)


@pytest.fixture(scope="module")
def converted(hf_model, variables):
    return pretrained_discriminator(variables, str(hf_model[1]), FIELD)


def hf_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def report(name: str, got: np.ndarray, want: np.ndarray) -> float:
    """Prints the max abs/rel difference (visible with -s) and returns the abs one."""
    abs_diff = np.abs(np.asarray(got) - want)
    rel = abs_diff.max() / np.abs(want).max()
    print(f"{name}: max abs diff {abs_diff.max():.3e}, max rel diff {rel:.3e} (of max |ref|)")
    return float(abs_diff.max())


def nhwc(x) -> jax.Array:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def test_trunk_matches_transformers(hf_model, converted):
    model, _ = hf_model
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_bn = model.embedder.embedder.normalization(x).numpy().transpose(0, 2, 3, 1)
        want = model.encoder.stages[1](model.encoder.stages[0](x)).numpy().transpose(0, 2, 3, 1)

    bn1 = {c: converted[c]["bn1"] for c in ("params", "batch_stats")}
    got_bn = nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(bn1, nhwc(x))
    assert report("bn1", got_bn, want_bn) <= 1e-4

    h = nhwc(x)
    for name, features, strides in (
        ("layer1_0", 64, 1),
        ("layer1_1", 64, 1),
        ("layer2_0", 128, 2),
        ("layer2_1", 128, 1),
    ):
        block_vars = {c: converted[c][name] for c in ("params", "batch_stats")}
        block = BasicBlock(features, strides, axis_name=None, dtype=jnp.float32)
        h = block.apply(block_vars, h, train=False)
    assert h.shape == want.shape == (2, 4, 4, 128)
    assert report("layer1 + layer2", h, want) <= 1e-4


@pytest.mark.parametrize("use_maxpool", [False, True])
def test_discriminator_matches_transformers_end_to_end(hf_model, variables, use_maxpool):
    """The whole D, with its own random conv1/fc applied around HF's modules in torch."""
    model, path = hf_model
    d = Discriminator(use_maxpool=use_maxpool)
    pretrained = pretrained_discriminator(variables, str(path), FIELD)
    tokens = jax.random.normal(jax.random.key(2), (2, 64, Z_DIM))
    got = d.apply(pretrained, tokens, train=False)

    params = variables["params"]
    x = torch.from_numpy(np.array(tokens).reshape(2, 8, 8, Z_DIM).transpose(0, 3, 1, 2))
    kernel = torch.from_numpy(np.array(params["conv1"]["kernel"])[0, 0])  # (D, 64)
    with torch.no_grad():
        h = torch.einsum("bdhw,de->behw", x, kernel)
        h = torch.relu(model.embedder.embedder.normalization(h))
        if use_maxpool:
            h = model.embedder.pooler(h)
        h = model.encoder.stages[1](model.encoder.stages[0](h)).mean(dim=(2, 3))
        fc = params["fc"]
        want = h.numpy() @ np.asarray(fc["kernel"])[:, 0] + np.asarray(fc["bias"])[0]
    assert report(f"D logits (maxpool={use_maxpool})", got, want) <= 1e-4


def torchvision_name(key: str) -> str:
    """transformers ResNet key -> torchvision resnet18 key, written out independently."""
    key = key.replace("embedder.embedder.convolution.", "conv1.")
    key = key.replace("embedder.embedder.normalization.", "bn1.")
    block = r"encoder\.stages\.(\d)\.layers\.(\d)\."

    def layer(m: re.Match) -> str:
        return f"layer{int(m[1]) + 1}.{m[2]}."

    key = re.sub(block + r"shortcut\.convolution\.", lambda m: layer(m) + "downsample.0.", key)
    key = re.sub(block + r"shortcut\.normalization\.", lambda m: layer(m) + "downsample.1.", key)
    key = re.sub(
        block + r"layer\.(\d)\.convolution\.", lambda m: f"{layer(m)}conv{int(m[3]) + 1}.", key
    )
    key = re.sub(
        block + r"layer\.(\d)\.normalization\.", lambda m: f"{layer(m)}bn{int(m[3]) + 1}.", key
    )
    assert not key.startswith(("encoder", "embedder")), key
    return key


def test_torchvision_naming_gives_the_same_tree(hf_model, variables, converted, tmp_path):
    model, _ = hf_model
    state = {torchvision_name(k): v for k, v in model.state_dict().items()}
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert "layer2.0.downsample.1.running_var" in state and "layer1.1.bn2.weight" in state
    # What a full resnet18 has beyond D's trunk: it must be ignored, not rejected.
    state |= {
        "layer3.0.conv1.weight": torch.zeros(256, 128, 3, 3),
        "layer3.0.bn1.num_batches_tracked": torch.tensor(0),
        "layer4.1.bn2.running_mean": torch.zeros(512),
        "fc.weight": torch.zeros(1000, 512),
        "fc.bias": torch.zeros(1000),
    }
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    got = pretrained_discriminator(variables, str(path), FIELD)
    assert jax.tree.structure(got) == jax.tree.structure(converted)
    jax.tree.map(np.testing.assert_array_equal, got, converted)


def test_prefixed_classification_naming_gives_the_same_tree(
    hf_model, variables, converted, tmp_path
):
    """ResNetForImageClassification checkpoints (microsoft/resnet-18): 'resnet.' + a head."""
    from safetensors.numpy import save_file

    state = {f"resnet.{k}": v for k, v in hf_state_dict(hf_model[0]).items()}
    state |= {
        "resnet.encoder.stages.2.layers.0.layer.0.convolution.weight": np.zeros((256, 128, 3, 3)),
        "resnet.encoder.stages.3.layers.1.shortcut.normalization.bias": np.zeros(512),
        "classifier.1.weight": np.zeros((1000, 512), np.float32),
        "classifier.1.bias": np.zeros(1000, np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    got = pretrained_discriminator(variables, str(path), FIELD)
    jax.tree.map(np.testing.assert_array_equal, got, converted)


def test_conv1_and_fc_keep_their_init_and_the_trunk_is_replaced(variables, converted):
    assert jax.tree.structure(converted) == jax.tree.structure(variables)
    for module in ("conv1", "fc"):
        jax.tree.map(
            np.testing.assert_array_equal, converted["params"][module], variables["params"][module]
        )
    flat_new = traverse_util.flatten_dict(converted)
    flat_old = traverse_util.flatten_dict(variables)
    replaced = [p for p in flat_old if p[1] not in ("conv1", "fc")]
    # 10 BatchNorms (bn1, 2 per block, downsample) x 4 leaves + 9 conv kernels.
    assert len(replaced) == 10 * 4 + 9
    for p in replaced:
        assert flat_new[p].shape == flat_old[p].shape and flat_new[p].dtype == jnp.float32
        assert not np.array_equal(flat_new[p], flat_old[p]), p


def test_expected_may_omit_conv1_and_fc(hf_model, variables):
    state = hf_state_dict(hf_model[0])
    trunk = {
        c: {k: v for k, v in t.items() if k not in ("conv1", "fc")} for c, t in variables.items()
    }
    full = from_hf(state, "src", variables)
    assert set(full["params"]) == set(trunk["params"])
    jax.tree.map(np.testing.assert_array_equal, from_hf(state, "src", trunk), full)


def test_missing_key_is_named(hf_model, variables):
    state = hf_state_dict(hf_model[0])
    key = "encoder.stages.1.layers.1.layer.0.normalization.running_var"
    del state[key]
    with pytest.raises(KeyError, match=re.escape(key)):
        from_hf(state, "src", variables)
    tv_state = {torchvision_name(k): v for k, v in hf_state_dict(hf_model[0]).items()}
    del tv_state["layer2.0.downsample.0.weight"]
    with pytest.raises(KeyError, match=re.escape("layer2.0.downsample.0.weight")):
        from_torchvision(tv_state, "src", variables)


@pytest.mark.parametrize(
    "key",
    [
        "encoder.stages.1.layers.2.layer.0.convolution.weight",  # ResNet-34's third block
        "pooler.weight",
        "layer2.2.conv1.weight",  # the same in torchvision naming
        "layer1.0.se.fc1.weight",
    ],
)
def test_unexpected_key_is_named(hf_model, variables, key):
    state = hf_state_dict(hf_model[0])
    convert = from_hf
    if key.startswith("layer"):
        state, convert = {torchvision_name(k): v for k, v in state.items()}, from_torchvision
    state[key] = np.zeros((128, 128, 3, 3), np.float32)
    with pytest.raises(KeyError, match=re.escape(key)):
        convert(state, "src", variables)


@pytest.mark.parametrize(
    "key, shape",
    [
        ("encoder.stages.0.layers.1.layer.1.convolution.weight", (64, 32, 3, 3)),
        ("encoder.stages.1.layers.0.shortcut.convolution.weight", (128, 64, 3, 3)),
        ("encoder.stages.1.layers.0.shortcut.convolution.weight", (128, 64)),
        ("embedder.embedder.normalization.running_mean", (32,)),
    ],
)
def test_shape_mismatch_is_named(hf_model, variables, key, shape):
    state = hf_state_dict(hf_model[0]) | {key: np.zeros(shape, np.float32)}
    with pytest.raises(ValueError, match=re.escape(key)):
        from_hf(state, "src", variables)


def test_unknown_naming_names_the_field(variables, tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "vit.safetensors"
    save_file({"blocks.0.attn.qkv.weight": np.zeros((3, 3), np.float32)}, str(path))
    with pytest.raises(ValueError, match=re.escape(FIELD)) as info:
        pretrained_discriminator(variables, str(path), FIELD)
    assert str(path) in str(info.value) and "layer1.0.conv1.weight" in str(info.value)
