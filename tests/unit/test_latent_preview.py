"""Latent-space samples as images: the training run's preview grid and the sample sets decode
the sampler's latents with the SD-VAE decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from sara_jax.converters.vae import load_vae  # noqa: E402
from sara_jax.io import files  # noqa: E402
from sara_jax.sampling import denoiser  # noqa: E402
from sara_jax.sampling.sample_set import make_chunk_sampler  # noqa: E402
from sara_jax.training.loop import make_sampler  # noqa: E402
from sara_jax.training.state import build_models, config_train_state  # noqa: E402


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A small random-init diffusers AutoencoderKL (2x upsampling decoder), saved."""
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("vae")
    model.save_pretrained(path)
    return path


@pytest.fixture
def latent_config(tiny_config, vae_dir):
    return tiny_config(
        **{
            "data.space": "latent",
            "data.image_size": 64,
            "encoder.image_size": 64,
            "encoder.arch.patch_size": 16,
            "model.in_channels": 4,
            "model.input_size": 8,
            "model.patch_size": 2,
            "vae.decode_checkpoint": str(vae_dir),
            "sample.num_steps": 2,
            "sample.per_class": 2,
            "sample.num_classes_shown": 3,
        }
    )


def decoded(vae_dir, latents: jax.Array) -> np.ndarray:
    """uint8 images of `latents`, decoded by the saved VAE after undoing latent_scale."""
    vae, vae_params = load_vae(str(vae_dir), "test")
    images = vae.apply({"params": vae_params}, latents / 0.18215, method=vae.decode)
    return files.to_uint8(np.asarray(images))


def test_latent_preview_grid_is_the_decoded_sample(latent_config, vae_dir):
    config = latent_config
    models = build_models(config, 16)
    params = config_train_state(config, jax.random.key(0)).ema_params["sit"]
    key = jax.random.key(3)

    grid = make_sampler(config, models.sit)(params, key)
    assert grid.shape == (3, 2, 16, 16, 3) and grid.dtype == np.uint8

    # The same latents drawn by hand, decoded by the loaded VAE after undoing latent_scale.
    labels = jnp.repeat(jnp.array([0, 4, 9]), 2)  # Three classes spread over ten.
    noise = jax.random.normal(key, (6, 8, 8, 4))
    latents = denoiser.make_denoiser(config, models.sit)(
        params, noise, labels, jax.random.fold_in(key, 1)
    )
    expected = decoded(vae_dir, latents).reshape(3, 2, 16, 16, 3)
    assert np.abs(grid.astype(int) - expected.astype(int)).max() <= 1


def test_sample_set_chunks_are_the_decoded_samples(latent_config, vae_dir):
    config = latent_config
    config.sample.batch_size = 8
    models = build_models(config, 16)
    params = config_train_state(config, jax.random.key(0)).ema_params["sit"]
    sampler = make_chunk_sampler(config)
    images, labels = sampler.draw(sampler.place(params), np.array([5, 6]))
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8

    # Sample i's noise and sampler noise are keyed by (sample.seed, i).
    denoise = denoiser.make_denoiser(config, models.sit)
    noise_key = jax.random.fold_in(jax.random.key(config.sample.seed), 1)
    latents = []
    for i, label in zip([5, 6], labels, strict=True):
        key = jax.random.fold_in(noise_key, i)
        noise = jax.random.normal(key, (1, 8, 8, 4))
        latents.append(denoise(params, noise, jnp.array([label]), jax.random.fold_in(key, 1)))
    expected = decoded(vae_dir, jnp.concatenate(latents))
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
