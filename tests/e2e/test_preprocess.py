"""`python -m sara_jax.preprocess` end to end: an image folder and a tiny random VAE -> records;
killed and resumed it writes the same bytes; training runs from the records."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from configs import demo
from sara_jax.data.records import INFO_FILE, RecordsSource
from sara_jax.preprocess import preprocess

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CLASSES, PER_CLASS, SIZE, SHARDS = 3, 20, 32, 20


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 3-class x 20-image folder of varied sizes and modes, and a tiny 8x-downsampling VAE."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (root / "images" / f"n0{c}").mkdir(parents=True)
        for i in range(PER_CLASS):
            h, w = rng.integers(33, 97, size=2)
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert("L" if i == 3 else "RGB")
            image.save(root / "images" / f"n0{c}" / f"img{i}.{'png' if i % 2 else 'JPEG'}")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    vae.save_pretrained(root / "vae")
    return root


def preprocess_command(inputs, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sara_jax.preprocess",
        "--config=configs/demo.py",
        f"--config.data.dir={out}",
        f"--config.vae.checkpoint={inputs / 'vae'}",
        f"--config.preprocess.path={inputs / 'images'}",
        f"--config.preprocess.num_shards={SHARDS}",
        "--config.preprocess.batch_size=8",
        "--config.preprocess.num_threads=2",
    ]


def run(command, **kwargs):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """An uninterrupted run's output."""
    out = tmp_path_factory.mktemp("reference")
    result = run(preprocess_command(inputs, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_records_hold_cropped_images_posteriors_labels_and_ids(inputs, reference):
    source = RecordsSource(
        str(reference), fields=("image", "latent_mean", "latent_std", "label", "id")
    )
    assert len(source) == CLASSES * PER_CLASS
    assert source.info["num_classes"] == CLASSES and source.info["image_size"] == SIZE
    example = source[PER_CLASS + 5]
    assert example["image"].shape == (SIZE, SIZE, 3) and example["image"].dtype == np.uint8
    assert example["latent_mean"].shape == (SIZE // 8, SIZE // 8, 4)
    assert (example["latent_std"] > 0).all()
    assert example["label"] == 1 and example["id"].startswith("n01/")
    ids = [source[i]["id"] for i in range(len(source))]
    assert len(set(ids)) == len(ids)


def test_killed_run_resumes_to_identical_output(inputs, reference, tmp_path):
    out = tmp_path / "records"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    process = subprocess.Popen(
        preprocess_command(inputs, out),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    # Kill it as soon as its first shard is certified (20 shards: the rest are still to come).
    while not (out.exists() and list(out.glob("*.done.json"))):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / INFO_FILE).exists(), "the run finished before it could be killed"

    # Also the damage a crash on a flaky disk leaves: a truncated, certified shard.
    shard = sorted(out.glob("*.array_record"))[0]
    shard.write_bytes(shard.read_bytes()[:100])

    result = run(preprocess_command(inputs, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert files(out) == files(reference)


def test_training_runs_from_the_records(inputs, reference, tmp_path):
    result = run(
        [
            sys.executable,
            "-m",
            "sara_jax.main",
            "--config=configs/demo.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.data.source=records",
            f"--config.data.dir={reference}",
            "--config.data.space=latent",
            f"--config.vae.decode_checkpoint={inputs / 'vae'}",  # Previews decode the latents.
            "--config.eval.every=0",  # The demo's shapes evaluation needs the shapes data.
            f"--config.data.num_examples={CLASSES * PER_CLASS}",
            f"--config.data.num_classes={CLASSES}",
            f"--config.model.num_classes={CLASSES}",
            "--config.model.input_size=4",
            "--config.model.in_channels=4",
            "--config.model.patch_size=2",
            "--config.model.depth=2",
            "--config.model.hidden_size=32",
            "--config.model.num_heads=2",
            "--config.model.encoder_depth=1",
            "--config.projector.width=32",
            "--config.encoder.arch.patch_size=16",
            "--config.encoder.arch.embed_dim=16",
            "--config.encoder.arch.depth=1",
            "--config.encoder.arch.num_heads=2",
            "--config.encoder.pretrain.steps=2",
            "--config.encoder.pretrain.num_examples=16",
            "--config.encoder.pretrain.batch_size=8",
            f"--config.encoder.pretrain.cache_dir={tmp_path / 'cache'}",
            "--config.data.global_batch_size=8",
            "--config.train.num_steps=2",
            "--config.train.checkpoint_every=2",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "velocity=" in result.stderr
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_processes_write_their_own_shards_and_the_last_one_the_index(inputs, reference, tmp_path):
    config = demo.get_config()
    config.data.dir = str(tmp_path / "records")
    config.vae.checkpoint = str(inputs / "vae")
    config.preprocess.path = str(inputs / "images")
    config.preprocess.num_shards, config.preprocess.batch_size = SHARDS, 8

    preprocess(config, process_index=1, process_count=2)
    written = sorted(p.name for p in (tmp_path / "records").glob("*.array_record"))
    assert written == sorted(p.name for p in reference.glob("*.array_record"))[1::2]
    assert not (tmp_path / "records" / INFO_FILE).exists()

    preprocess(config, process_index=0, process_count=2)
    assert files(tmp_path / "records") == files(reference)
