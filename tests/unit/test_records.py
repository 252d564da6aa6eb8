"""The records format, its source, certificates, and what two processes read."""

import concurrent.futures
import json
import re

import numpy as np
import pytest
import tqdm
from absl import flags

from sara_jax.data import records
from sara_jax.data.pipeline import make_train_iterator
from sara_jax.data.records import RecordsSource, decode_example, encode_example
from sara_jax.data.shard_writer import shard_is_complete, write_shard
from sara_jax.io.files import write_json

SIZE, NUM = 16, 24


def raw_example(i: int) -> dict:
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    return {"image": image, "label": i % 3, "id": f"class{i % 3}/img{i:03d}.JPEG"}


def fake_vae(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stand-in posterior: block means of the image, and their spread."""
    x = images.astype(np.float32).reshape(len(images), SIZE // 8, 8, SIZE // 8, 8, 3)
    mean = x.mean(axis=(2, 4))
    return np.concatenate([mean, mean[..., :1]], -1) / 255, np.full(
        (len(images), SIZE // 8, SIZE // 8, 4), 0.1, np.float32
    )


def write_dataset(out, num_shards: int = 4, codec: str = "png") -> list[str]:
    """A finished records directory of NUM examples, as preprocess writes it."""
    source = [raw_example(i) for i in range(NUM)]
    names, certs = [], []
    with concurrent.futures.ThreadPoolExecutor(3) as pool, tqdm.tqdm(disable=True) as bar:
        for k in range(num_shards):
            name = records.shard_name("train", k, num_shards)
            indices = records.shard_range(k, num_shards, NUM)
            cert = write_shard(out / name, indices, source, fake_vae, 4, pool, codec, bar)
            write_json(out / f"{name}.done.json", cert)
            names.append(name)
            certs.append(cert)
    info = {"num_examples": NUM, "num_classes": 3, "image_size": SIZE, "shards": certs}
    write_json(out / records.INFO_FILE, info)
    return names


@pytest.mark.parametrize("codec", ["png", "raw"])
def test_records_round_trip(tmp_path, codec):
    write_dataset(tmp_path, codec=codec)
    source = RecordsSource(str(tmp_path), fields=records.FIELDS)
    assert len(source) == NUM
    for i in (0, 7, NUM - 1):
        example = source[i]
        raw = raw_example(i)
        np.testing.assert_array_equal(example["image"], raw["image"])
        assert example["label"] == raw["label"] and example["id"] == raw["id"]
        mean, std = fake_vae(raw["image"][None])
        assert example["latent_mean"].dtype == np.float16
        np.testing.assert_allclose(example["latent_mean"], mean[0], rtol=1e-3)
        np.testing.assert_allclose(example["latent_std"], std[0], rtol=1e-3)
    assert set(RecordsSource(str(tmp_path))[0]) == set(records.TRAIN_FIELDS)


def test_record_missing_a_field_is_named():
    record = encode_example({**raw_example(0), "latent_mean": 0, "latent_std": 0}, "raw")
    with pytest.raises(ValueError, match=r"record lacks fields \['height'\]"):
        decode_example(record, ("image", "height"))


def test_bad_directories_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="config.data.dir is empty"):
        RecordsSource("")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        RecordsSource(str(tmp_path / "nowhere"))
    (tmp_path / "train-00000-of-00004.array_record").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"has no dataset.json .*train-00000"):
        RecordsSource(str(tmp_path))


def test_certificates_catch_truncated_and_corrupt_shards(tmp_path):
    names = write_dataset(tmp_path)
    assert all(shard_is_complete(tmp_path, n, NUM // 4) for n in names)
    assert not shard_is_complete(tmp_path, names[0], NUM // 4 + 1)
    data = (tmp_path / names[1]).read_bytes()
    (tmp_path / names[1]).write_bytes(data[: len(data) // 2])
    assert not shard_is_complete(tmp_path, names[1], NUM // 4)
    corrupt = bytearray((tmp_path / names[2]).read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (tmp_path / names[2]).write_bytes(bytes(corrupt))
    assert not shard_is_complete(tmp_path, names[2], NUM // 4)
    (tmp_path / f"{names[3]}.done.json").unlink()
    assert not shard_is_complete(tmp_path, names[3], NUM // 4)


def test_two_processes_read_disjoint_examples_covering_each_epoch(tmp_path):
    write_dataset(tmp_path)
    source = RecordsSource(str(tmp_path), fields=("id", "label"))
    steps_per_epoch = NUM // 8
    seen = []
    for process in (0, 1):
        iterator = make_train_iterator(
            source, global_batch_size=8, seed=3, process_index=process, process_count=2
        )
        ids = [list(next(iterator)["id"]) for _ in range(2 * steps_per_epoch)]
        seen.append(ids)
    for epoch in range(2):
        steps = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        first = [i for batch in seen[0][steps] for i in batch]
        second = [i for batch in seen[1][steps] for i in batch]
        assert not set(first) & set(second)
        assert sorted(first + second) == sorted(raw_example(i)["id"] for i in range(NUM))
    # A new permutation each epoch.
    assert seen[0][:steps_per_epoch] != seen[0][steps_per_epoch:]


def test_dataset_json_lists_every_shard(tmp_path):
    names = write_dataset(tmp_path)
    info = json.loads((tmp_path / records.INFO_FILE).read_text())
    assert [s["file"] for s in info["shards"]] == names
    assert sum(s["num_records"] for s in info["shards"]) == NUM


def damage(path, how: str) -> None:
    """Truncates the file at `path` to half its size, or flips every bit of one byte (the size
    unchanged): at its middle, which in these small shards is the footer's block header, or
    inside its first record's chunk."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    data[len(data) // 2 if how == "flip middle" else 1000] ^= 0xFF
    path.write_bytes(bytes(data))


def named_with_the_fix(path) -> str:
    return rf"record shard {re.escape(str(path))} .*python -m sara_jax\.preprocess` with the same"


@pytest.mark.parametrize("how", ["truncate", "flip middle"])
def test_a_damaged_footer_is_named_when_the_source_opens(tmp_path, how):
    names = write_dataset(tmp_path)
    damage(tmp_path / names[1], how)
    with pytest.raises(ValueError, match=named_with_the_fix(tmp_path / names[1])) as raised:
        RecordsSource(str(tmp_path))
    assert "cannot be opened: it is truncated or corrupt" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_changed_byte_in_a_record_is_named_when_the_record_is_read(tmp_path):
    names = write_dataset(tmp_path)
    damage(tmp_path / names[2], "flip record")
    source = RecordsSource(str(tmp_path))  # Footers intact: opening succeeds.
    first = NUM // 4 * 2  # Shard 2's first record.
    assert source[first - 1]["label"] == raw_example(first - 1)["label"]
    with pytest.raises(ValueError, match=named_with_the_fix(tmp_path / names[2])) as raised:
        source[first]
    assert "is corrupt at record 0 (Corrupted Riegeli/records file" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_shard_disagreeing_with_dataset_json_is_named(tmp_path):
    write_dataset(tmp_path)
    info = json.loads((tmp_path / records.INFO_FILE).read_text())
    info["shards"][3]["num_records"] += 1
    write_json(tmp_path / records.INFO_FILE, info)
    with pytest.raises(ValueError, match=r"00003-of-00004\.array_record holds 6 records, dataset"):
        RecordsSource(str(tmp_path))


def test_a_damaged_shard_read_in_a_worker_process_is_named(tmp_path):
    # grain 0.2.18 reads an absl flag in mp_prefetch; outside absl.app nothing has parsed them.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    names = write_dataset(tmp_path)
    damage(tmp_path / names[0], "flip record")
    source = RecordsSource(str(tmp_path), fields=("label",))
    iterator = make_train_iterator(source, global_batch_size=NUM, seed=0, num_workers=1)
    try:
        with pytest.raises(ValueError, match=named_with_the_fix(tmp_path / names[0])):
            next(iterator)
    finally:
        iterator.close()
