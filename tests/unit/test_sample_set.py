"""A sample set's identity (settings, directory name, set.json), its chunk files and the record
in samples.npz (`sampling/sample_set.py`, `sampling/chunks.py`); the drawing itself is
tests/e2e/test_sample.py's."""

import json
import re

import numpy as np
import pytest
from etils import epath

from sara_jax.io import files
from sara_jax.sampling import chunks, sample_set

DIT = {"model.family": "dit", "sample.method": "ddpm"}


def name_of(tiny_config, step=2, **overrides):
    return sample_set.set_name(sample_set.set_settings(tiny_config(**overrides), step))


def test_the_directory_name_changes_with_exactly_the_settings_that_change_samples(tiny_config):
    base = name_of(tiny_config)
    # configs/demo.py samples with 25 Euler steps at guidance 4, EMA weights.
    assert re.fullmatch(r"samples_2_euler25_cfg4_[0-9a-f]{8}", base), base
    assert name_of(tiny_config, step=3).startswith("samples_3_euler25_cfg4_")
    assert re.fullmatch(
        r"samples_2_euler25_cfg4_raw_[0-9a-f]{8}", name_of(tiny_config, **{"sample.use_ema": False})
    )
    same = {
        "sample.batch_size": 7,
        "sample.num_samples": 123,
        "sample.per_class": 3,
        "sample.num_classes_shown": 4,
        "model.remat": True,
        "model.class_dropout": 0.3,
        "eval.num_steps": 7,
    }
    for field, value in same.items():
        assert name_of(tiny_config, **{field: value}) == base, field
    other = {
        "sample.method": "heun",
        "sample.num_steps": 24,
        "sample.cfg_scale": 1.5,
        "sample.guidance_high": 0.7,
        "sample.seed": 1,
        "sample.labels": "balanced",
        "model.hidden_size": 64,
        "model.compute_dtype": "bfloat16",
    }
    names = {name_of(tiny_config, **{field: value}) for field, value in other.items()}
    assert len(names) == len(other) and base not in names
    # Without guidance its interval is never read.
    unguided = name_of(tiny_config, **{"sample.cfg_scale": 1.0})
    assert (
        name_of(tiny_config, **{"sample.cfg_scale": 1.0, "sample.guidance_high": 0.7}) == unguided
    )


def test_a_dit_set_is_named_by_its_ddpm_settings(tiny_config):
    settings = sample_set.set_settings(tiny_config(**DIT, **{"sample.cfg_scale": 1.5}), 2)
    assert settings["sample.ddpm_cfg_channels"] == 3 and "sample.guidance_low" not in settings
    assert settings["diffusion.num_timesteps"] == 1000
    assert sample_set.set_name(settings).startswith("samples_2_ddpm25_cfg1.5_")
    fewer = name_of(tiny_config, **DIT, **{"sample.cfg_scale": 1.5, "sample.ddpm_cfg_channels": 2})
    assert fewer != sample_set.set_name(settings)


def test_set_json_is_written_then_checked_and_an_edited_one_refused(tiny_config, tmp_path):
    settings = sample_set.set_settings(tiny_config(), 2)
    out = epath.Path(tmp_path) / sample_set.set_name(settings)
    assert sample_set.open_set(out, settings) is False
    assert json.loads((out / "set.json").read_text()) == {"set": out.name, "settings": settings}
    assert sample_set.open_set(out, settings) is True

    (out / "set.json").write_text(json.dumps({"settings": {**settings, "sample.cfg_scale": 1.0}}))
    with pytest.raises(ValueError) as err:
        sample_set.open_set(out, settings)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{out}: ")
    assert "sample.cfg_scale=1.0" in message and "sample.cfg_scale=4.0" in message


def test_uncovered_is_what_no_chunk_holds():
    assert chunks.uncovered(0, 16, []) == [(0, 16)]
    assert chunks.uncovered(0, 16, [(0, 8)]) == [(8, 16)]
    assert chunks.uncovered(8, 20, [(0, 10), (12, 14), (16, 24)]) == [(10, 12), (14, 16)]
    assert chunks.uncovered(8, 16, [(0, 8), (16, 20)]) == [(8, 16)]
    assert chunks.uncovered(0, 8, [(0, 4), (2, 8)]) == []


def write_chunk(out, start, stop, batch_size=8):
    indices = np.arange(start, stop)
    images = np.broadcast_to(indices[:, None, None, None], (len(indices), 2, 2, 3)).astype(np.uint8)
    chunks.write(out, start, images, indices % 10, batch_size)


def test_chunks_of_different_batch_sizes_are_read_in_order_and_a_bad_one_named(tmp_path):
    out = epath.Path(tmp_path)
    write_chunk(out, 0, 8)
    write_chunk(out, 8, 12, batch_size=12)
    write_chunk(out, 12, 20, batch_size=12)
    assert sorted(p.name for p in out.iterdir()) == [
        "chunk_0000000-0000008.npz", "chunk_0000008-0000012.npz", "chunk_0000012-0000020.npz"
    ]  # fmt: skip
    samples, labels, used = chunks.read(out, 16)
    np.testing.assert_array_equal(samples[:, 0, 0, 0], np.arange(16))
    np.testing.assert_array_equal(labels, np.arange(16) % 10)
    assert [(u["start"], u["stop"], u["batch_size"]) for u in used] == [
        (0, 8, 8), (8, 12, 12), (12, 20, 12)
    ]  # fmt: skip
    assert used[0]["file"] == "chunk_0000000-0000008.npz"

    with pytest.raises(ValueError, match=r"no chunk holds index 20 \(of \[0, 24\)\)"):
        chunks.read(out, 24)
    write_chunk(out, 10, 12)  # Two chunks hold 10 and 11.
    with pytest.raises(ValueError, match="chunk_0000010-0000012.npz overlaps chunk_0000008"):
        chunks.read(out, 16)
    (out / "chunk_0000010-0000012.npz").unlink()
    # Written under a name that is not its range.
    (out / "chunk_0000012-0000020.npz").rename(out / "chunk_0000012-0000016.npz")
    with pytest.raises(ValueError, match="chunk_0000012-0000016.npz: holds 8 samples and 8"):
        chunks.read(out, 16)


def test_samples_npz_carries_its_record_and_an_incomplete_one_is_refused(tiny_config, tmp_path):
    settings = sample_set.set_settings(tiny_config(**{"sample.labels": "balanced"}), 2)
    out = epath.Path(tmp_path) / sample_set.set_name(settings)
    sample_set.open_set(out, settings)
    write_chunk(out, 0, 8)
    write_chunk(out, 8, 12, batch_size=12)
    path = sample_set.assemble(out, settings, 10, {"data": {"source": "shapes"}})
    arrays = files.read_npz(path)  # np.load without pickle.
    assert arrays["arr_0"].shape == (10, 2, 2, 3) and (out / "grid.png").is_file()
    record = sample_set.read_record(arrays, str(path))
    assert record["settings"] == settings and record["set"] == out.name
    assert record["num_samples"] == 10 and [c["stop"] for c in record["chunks"]] == [8, 12]
    assert json.loads((out / "set.json").read_text()) == record
    assert set(sample_set.RECORD_KEYS) <= set(record)

    def refusal(arrays):
        with pytest.raises(ValueError) as err:
            sample_set.read_record(arrays, "copy.npz")
        message = str(err.value)
        assert "\n" not in message and message.startswith("copy.npz: ")
        assert message.endswith("`python -m sara_jax.sample` writes complete records")
        return message

    assert "no record" in refusal({"arr_0": arrays["arr_0"], "arr_1": arrays["arr_1"]})
    del record["num_samples"], record["settings"]["sample.cfg_scale"]
    message = refusal({**arrays, "record": np.array(json.dumps(record))})
    assert "lacks num_samples, settings.sample.cfg_scale;" in message
