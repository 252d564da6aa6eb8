"""pytorch-fid's FID Inception weights (`pt_inception-2015-12-05-6726825d.pth`, the TF
inception-2015-12-05 graph ported to torchvision's Inception3 naming) -> FIDInceptionV3.

sara_jax.models.inception names its submodules as torchvision does, so every Flax path is the
checkpoint's module path with "." -> "/":

  Conv2d_1a_3x3.conv.weight            -> params/Conv2d_1a_3x3/conv/kernel (OIHW -> HWIO)
  Mixed_6d.branch7x7_2.bn.weight/bias  -> params/Mixed_6d/branch7x7_2/bn/{scale,bias}
  Mixed_6d.branch7x7_2.bn.running_*    -> batch_stats/Mixed_6d/branch7x7_2/bn/{mean,var}
  fc.weight/bias (1008 classes)        -> params/fc/{kernel,bias} (kernel transposed)
"""

import jax
import jax.numpy as jnp
from flax import traverse_util

from sara_jax.converters import mapping
from sara_jax.converters.checkpoint import StateDict, load_state_dict
from sara_jax.converters.mapping import Converter, PyTree
from sara_jax.models.inception import INPUT_SIZE, FIDInceptionV3

# Flax leaf -> torch tensor name, per collection.
_TORCH_NAME = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def from_pytorch_fid(state_dict: StateDict, source: str, expected: PyTree) -> PyTree:
    """pytorch-fid FIDInceptionV3 state dict -> {'params': ..., 'batch_stats': ...}.

    Args:
      state_dict: pytorch-fid / torchvision naming (`Mixed_5b.branch1x1.conv.weight`, ...).
      source: where it came from, for error messages.
      expected: FIDInceptionV3's variables or their shapes (`jax.eval_shape` of `init`).
    Returns: float32 numpy trees; conv kernels HWIO, fc kernel (2048, 1008).
    Raises: KeyError naming a missing or unexpected checkpoint key; ValueError naming a key
      whose shape does not match.
    """
    # BatchNorm step counters (torch >= 0.4.1) carry no weights.
    cv = Converter(state_dict, source, ignore=[r".*\.num_batches_tracked"])
    for path in traverse_util.flatten_dict(expected):
        collection, *modules, leaf = path
        key = ".".join([*modules, _TORCH_NAME[collection, leaf]])
        value = cv.take(key)
        if leaf == "kernel" and modules[-1] == "conv":
            # mapping.conv would fail with a bare numpy error on a non-4D tensor.
            if value.ndim != 4:
                raise ValueError(
                    f"checkpoint {source} key {key!r} has shape {value.shape}, expected a 4D "
                    f"torch conv weight (O, I, kh, kw) for {'/'.join(path)}"
                )
            value = mapping.conv(value)
        elif leaf == "kernel":
            value = mapping.linear(value)
        cv.put("/".join(path), value, key)
    return cv.finish(expected)


def load_inception(source: str, field: str) -> tuple[FIDInceptionV3, PyTree]:
    """The FID InceptionV3 and its converted variables.

    Args:
      source: the path of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (from
        https://github.com/mseitzer/pytorch-fid/releases, tag fid_weights), read with torch.
      field: the config field that named `source`, for error messages.
    Returns: (FIDInceptionV3(), {'params', 'batch_stats'} of jnp float32 arrays); apply as
      `module.apply(variables, preprocess(images_uint8))`.
    """
    module = FIDInceptionV3()
    dummy = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    expected = jax.eval_shape(module.init, jax.random.key(0), dummy)
    converted = from_pytorch_fid(load_state_dict(source, field), source, expected)
    return module, jax.tree.map(jnp.asarray, converted)
