"""ImageNet ResNet-18 weights -> the discriminator's bn1, layer1 and layer2.

SARA's discriminator (sara_jax.models.discriminator) is ResNet-18 cut after layer2, with its
7x7 RGB stem conv replaced by a 1x1 conv from the token width. So only bn1 and the first two
stages carry over from an ImageNet checkpoint; the 1x1 `conv1` and the 128 -> 1 `fc` keep
their random init. Two namings are read:

  torchvision:   bn1, layer1.0.conv1, layer1.0.bn1, ..., layer2.0.downsample.{0,1}
  transformers:  [resnet.]embedder.embedder.normalization,
                 [resnet.]encoder.stages.S.layers.L.layer.{0,1}.{convolution,normalization},
                 [resnet.]encoder.stages.1.layers.0.shortcut.{convolution,normalization}
                 ("resnet." in ResNetForImageClassification checkpoints, e.g. microsoft/resnet-18)
"""

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sara_jax.converters import mapping
from sara_jax.converters.checkpoint import StateDict, load_state_dict
from sara_jax.converters.mapping import Converter, PyTree

# Probes that tell the namings apart.
TORCHVISION_PROBE = "layer1.0.conv1.weight"
HF_PROBE = "encoder.stages.0.layers.0.layer.0.convolution.weight"
HF_PREFIX = "resnet."

# Discriminator submodules that stay randomly initialised: the checkpoint has nothing that fits.
RANDOM_INIT = ("conv1", "fc")


def _shared_modules() -> list[str]:
    """Flax paths of D's convs and BatchNorms that ResNet-18 also has."""
    paths = ["bn1"]
    for layer in (1, 2):
        for i in (0, 1):
            paths += [f"layer{layer}_{i}/{m}" for m in ("conv1", "bn1", "conv2", "bn2")]
    return [*paths, "layer2_0/downsample_conv", "layer2_0/downsample_bn"]


# D splits torchvision's `downsample` Sequential into two named modules.
_TORCHVISION_DOWNSAMPLE = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def _torchvision_name(path: str) -> str:
    """'layer2_0/downsample_conv' -> 'layer2.0.downsample.0' (D's names are torchvision's)."""
    if path == "bn1":
        return "bn1"
    block, module = path.split("/")
    return f"{block.replace('_', '.')}.{_TORCHVISION_DOWNSAMPLE.get(module, module)}"


def _hf_name(path: str) -> str:
    """'layer1_1/bn2' -> 'encoder.stages.0.layers.1.layer.1.normalization' (no prefix)."""
    if path == "bn1":
        return "embedder.embedder.normalization"
    block, module = path.split("/")
    layer, i = block.removeprefix("layer").split("_")
    kind = "convolution" if "conv" in module else "normalization"
    # transformers counts stages from 0 and the two conv-BN pairs of a block from 0.
    part = "shortcut" if module.startswith("downsample") else f"layer.{int(module[-1]) - 1}"
    return f"encoder.stages.{int(layer) - 1}.layers.{i}.{part}.{kind}"


def _trunk(expected: PyTree) -> PyTree:
    """`expected` ({'params', 'batch_stats'}) without the randomly initialised submodules."""
    return {
        collection: {k: v for k, v in tree.items() if k not in RANDOM_INIT}
        for collection, tree in expected.items()
    }


def _convert(
    state_dict: StateDict,
    source: str,
    expected: PyTree,
    name: Callable[[str], str],
    ignore: list[str],
) -> PyTree:
    """Fills every shared module from the checkpoint module `name(flax_path)`."""
    cv = Converter(state_dict, source, ignore=[*ignore, r".*num_batches_tracked"])
    for flax_path in _shared_modules():
        ckpt = name(flax_path)
        if "conv" in flax_path.split("/")[-1]:
            key = f"{ckpt}.weight"
            weight = cv.take(key)
            # mapping.conv would fail with a bare numpy error on a non-4D tensor.
            if weight.ndim != 4:
                raise ValueError(
                    f"checkpoint {source} key {key!r} has shape {weight.shape}, expected a 4D "
                    f"torch conv weight (O, I, kh, kw) for {flax_path}/kernel"
                )
            cv.put(f"params/{flax_path}/kernel", mapping.conv(weight), key)
            continue
        for collection, flax_name, torch_name in (
            ("params", "scale", "weight"),
            ("params", "bias", "bias"),
            ("batch_stats", "mean", "running_mean"),
            ("batch_stats", "var", "running_var"),
        ):
            key = f"{ckpt}.{torch_name}"
            cv.put(f"{collection}/{flax_path}/{flax_name}", cv.take(key), key)
    return cv.finish(_trunk(expected))


def from_torchvision(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """torchvision resnet18 state dict -> {'params': ..., 'batch_stats': ...} of the trunk.

    Args:
      state_dict: torchvision naming (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, ...).
      source: where it came from, for error messages.
      expected: the discriminator's variables (full, or without conv1/fc); conv1 and fc are
        left out of the result either way.
    Returns: bn1 and layer{1,2}_{0,1} subtrees; conv kernels HWIO (3, 3, C_in, C_out), or
      (1, 1, 64, 128) for the downsample; BatchNorm vectors (C,). float32 numpy arrays.
    Raises: KeyError naming a missing or unexpected checkpoint key; ValueError naming a key
      whose shape does not match.
    """
    # The 7x7 RGB stem, layer3/layer4 and the 1000-class head have no counterpart in D.
    ignore = [r"conv1\.weight", r"layer[34]\..*", r"fc\..*"]
    return _convert(state_dict, source, expected, _torchvision_name, ignore)


def from_hf(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """transformers ResNetModel / ResNetForImageClassification state dict -> trunk variables.

    Accepts keys with or without the `resnet.` prefix of ResNetForImageClassification.
    Arguments, result and errors as from_torchvision.
    """
    prefix = HF_PREFIX if HF_PREFIX + HF_PROBE in state_dict else ""
    p = re.escape(prefix)
    # The 7x7 RGB stem, stages 2/3 (layer3/layer4) and the classifier have no counterpart in D.
    ignore = [
        rf"{p}embedder\.embedder\.convolution\.weight",
        rf"{p}encoder\.stages\.[23]\..*",
        r"classifier\..*",
    ]
    return _convert(state_dict, source, expected, lambda path: prefix + _hf_name(path), ignore)


def pretrained_discriminator(variables: PyTree, source: str, field: str) -> PyTree:
    """`variables` with bn1, layer1 and layer2 replaced by a ResNet-18 checkpoint's.

    Args:
      variables: {'params': ..., 'batch_stats': ...} from `Discriminator().init`.
      source: the checkpoint: a hub id, a directory, or a .safetensors / .pth file, in
        torchvision or transformers naming.
      field: the config field that named `source`, for error messages.
    Returns: a new variables tree; conv1 (1, 1, D, 64) and fc (128 -> 1) are `variables`'s own.
    """
    state_dict = load_state_dict(source, field)
    if TORCHVISION_PROBE in state_dict:
        converted = from_torchvision(state_dict, source, variables)
    elif HF_PROBE in state_dict or HF_PREFIX + HF_PROBE in state_dict:
        converted = from_hf(state_dict, source, variables)
    else:
        raise ValueError(
            f"{field}={source!r} is not a ResNet checkpoint in a known naming: expected "
            f"torchvision's ({TORCHVISION_PROBE!r}) or transformers' ({HF_PROBE!r}, optionally "
            f"prefixed {HF_PREFIX!r}); its first keys are {sorted(state_dict)[:5]}"
        )
    converted = jax.tree.map(jnp.asarray, converted)
    return {
        **variables,
        **{c: {**variables[c], **converted[c]} for c in ("params", "batch_stats")},
    }
