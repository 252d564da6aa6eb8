"""A TrainState from a published PyTorch denoiser (REPA, iREPA, SiT or DiT), saved as an
ordinary step checkpoint of a new run: what `python -m sara_jax.convert --denoiser=...` does.

- `repa`: REPA's train.py checkpoint {"model", "ema", "opt", "args", "steps"} (its released
  SiT-XL/2 too): `model` -> params, `ema` -> EMA params (SiT and projector both), the AdamW
  state -> the optax state, `steps` -> the step.
- `irepa`: iREPA's ldm/train.py checkpoint, REPA's entries with iREPA's projector (a conv or
  an MLP: `config.projector.kind` and `kernel_size` must match the file's).
- `sit`: SiT's released bare EMA state dict (`SiT-XL-2-256x256.pt`), for a family "sit" config:
  params = EMA = those weights (time and sign turned into this package's convention, see
  converters/sit.py).
- `dit`: DiT's released bare state dict (`DiT-XL-2-256x256.pt`), for a family "dit" config.

Whatever the file lacks (the discriminator and its optimizer, the projector of SiT and DiT, a
fresh optimizer state) is initialised as a fresh run of the config initialises it. The model's
shape comes from the file and must match the config's (an error names the key, both shapes and
the field to change).
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from absl import logging

from sara_jax.converters import sit
from sara_jax.converters.checkpoint import read_torch_file, resolve
from sara_jax.encoders.registry import encoder_width
from sara_jax.io import files
from sara_jax.training import checkpoints
from sara_jax.training.loop import initial_disc
from sara_jax.training.state import TrainState, config_train_state

# The entries of REPA's train.py checkpoint.
REPA_ENTRIES = {"model", "ema", "opt", "args", "steps"}


def _split(contents: object, fmt: str, source: str) -> tuple[dict, dict, dict | None, int]:
    """(model, ema, AdamW state or None, step) of a loaded file in `fmt`."""
    is_dict = isinstance(contents, dict)
    if fmt not in sit.RUN_FORMATS:
        if not is_dict or "ema" in contents or "model" in contents:
            raise ValueError(
                f"{source}: --denoiser_format={fmt} takes the released bare state dict, this file "
                f"holds {sorted(contents) if is_dict else type(contents).__name__}"
            )
        return contents, contents, None, 0
    if not is_dict or "ema" not in contents:
        raise ValueError(
            f"{source}: not a {fmt} train.py checkpoint (a dict with 'ema' and optionally "
            "'model', 'opt', 'args', 'steps')"
        )
    unknown = sorted(set(contents) - REPA_ENTRIES)
    if unknown:
        raise ValueError(f"{source}: unexpected entries {unknown} beside {sorted(REPA_ENTRIES)}")
    if "opt" in contents and "model" not in contents:
        raise ValueError(f"{source}: 'opt' without 'model', whose params it updates")
    model = contents.get("model", contents["ema"])
    return model, contents["ema"], contents.get("opt"), int(contents.get("steps", 0))


def _check_repa_run(config: ml_collections.ConfigDict, contents: dict, source: str) -> None:
    """What REPA's `args` and AdamW hyperparameters say that the weights' shapes do not."""
    args = contents.get("args")
    if args is not None:
        logging.info(
            "REPA run: model %s, encoder %s, aligned after block %s, path %s",
            *(getattr(args, k, "?") for k in ("model", "enc_type", "encoder_depth", "path_type")),
        )
        depth = getattr(args, "encoder_depth", None)
        if depth is not None and depth != config.model.encoder_depth:
            raise ValueError(
                f"{source}: REPA aligned (and its projector reads) block {depth}, the config "
                f"block {config.model.encoder_depth}; set config.model.encoder_depth={depth}"
            )
        _check_irepa_args(config, args)
        if getattr(args, "path_type", "linear") != "linear":
            raise ValueError(
                f"{source}: REPA trained the {args.path_type!r} path; sara_jax's interpolant is "
                "linear"
            )
    o = config.optim
    for group in contents.get("opt", {}).get("param_groups", ()):
        theirs = (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"])
        ours = (o.lr, (o.b1, o.b2), o.eps, o.weight_decay)
        if theirs != ours:
            logging.warning(
                "REPA's AdamW (lr, betas, eps, weight_decay) = %s; training continues with the "
                "config's optim %s",
                theirs,
                ours,
            )


def _check_irepa_args(config: ml_collections.ConfigDict, args: object) -> None:
    """Warns where iREPA's target normalisation (`args.spnorm_method`, `zscore_alpha`) is not the
    config's: the weights do not hold it, training continues with the config's."""
    method = getattr(args, "spnorm_method", None)
    if method is None:  # REPA's args: no normalisation.
        return
    theirs = (method, getattr(args, "zscore_alpha", None) if method == "zscore" else None)
    loss = config.loss
    ours = (loss.encoder_norm, loss.zscore_alpha if loss.encoder_norm == "zscore" else None)
    if theirs != ours:
        logging.warning(
            "iREPA's target normalisation (spnorm_method, zscore_alpha) = %s; training "
            "continues with the config's (loss.encoder_norm, loss.zscore_alpha) %s",
            theirs,
            ours,
        )


def denoiser_state(
    config: ml_collections.ConfigDict, contents: object, fmt: str, source: str
) -> TrainState:
    """The TrainState a run of `config` continues from, given a loaded denoiser file.

    Args:
      contents: the file as `checkpoint.read_torch_file` returns it.
      fmt: one of `converters.sit.FORMATS`.
      source: names the file in errors.
    """
    family = "dit" if fmt == "dit" else "sit"
    if config.model.family != family:
        raise ValueError(
            f"--denoiser_format={fmt} converts a family {family!r} model, but "
            f"config.model.family={config.model.family!r}"
        )
    model_sd, ema_sd, opt, step = _split(contents, fmt, source)
    z_dim = encoder_width(config.encoder)
    for state_dict in (model_sd, ema_sd):
        sit.check_architecture(state_dict, config, z_dim, fmt, source)
    if fmt in sit.RUN_FORMATS:
        _check_repa_run(config, contents, source)

    # The key and the jit of the training loop: the parts the file lacks start as there.
    state = jax.jit(lambda key: config_train_state(config, key))(jax.random.key(config.seed))
    state = state.replace(disc=initial_disc(config, state.disc))
    expected = state.params if fmt in sit.RUN_FORMATS else {"sit": state.params["sit"]}
    params = {**state.params, **sit.convert(model_sd, expected, fmt, f"{source} model")}
    ema = {**state.ema_params, **sit.convert(ema_sd, expected, fmt, f"{source} ema")}
    opt_state = state.opt_state
    if opt is not None:
        exp_avg, exp_avg_sq, count = sit.adamw_moments(opt, list(model_sd), source)
        opt_state = optax.tree_utils.tree_set(
            opt_state,
            mu=sit.convert(exp_avg, expected, fmt, f"{source} opt exp_avg"),
            nu=sit.convert(exp_avg_sq, expected, fmt, f"{source} opt exp_avg_sq"),
            count=jnp.asarray(count, jnp.int32),
        )
    params, ema, opt_state = jax.device_put((params, ema, opt_state))
    return state.replace(
        step=jnp.asarray(step, jnp.int32), params=params, ema_params=ema, opt_state=opt_state
    )


def convert_denoiser(config: ml_collections.ConfigDict, path: str, fmt: str, workdir: str) -> int:
    """Converts the denoiser file `path` into `workdir`/checkpoints/<step>; returns the step."""
    directory = files.resolve(workdir) / "checkpoints"
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(
            f"--workdir={workdir!r} already holds checkpoints ({directory}); convert into a new "
            "workdir"
        )
    source = resolve(path, "--denoiser")
    logging.info("converting %s (%s) for config.model.family=%s", source, fmt, config.model.family)
    state = denoiser_state(config, read_torch_file(source), fmt, str(source))
    step = int(state.step)
    with ocp.CheckpointManager(directory) as manager:
        # The training loop's layout, without the data iterator's position.
        manager.save(step, args=checkpoints.save_args(state))
        manager.wait_until_finished()
    logging.info("saved step %d to %s", step, directory)
    return step
