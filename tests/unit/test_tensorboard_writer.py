"""sara_jax.io.tensorboard: what its event files hold, read back by TensorBoard's own reader,
its console lines, and that neither it nor the reader needs TensorFlow."""

import io
import json
import logging
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
from tensorboardX import record_writer

from sara_jax.io import tensorboard
from sara_jax.io.events import read_scalars


def loaded_values(workdir) -> list[tuple[int, object]]:
    """(step, Summary.Value) of every value in the event files of `workdir`."""
    out = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            out += [(event.step, value) for value in event.summary.value]
    return out


def test_scalars_read_back_as_the_scalars_plugin(tmp_path):
    writer = tensorboard.create_writer(tmp_path, just_logging=False)
    writer.write_scalars(100, {"loss": 0.5, "fid": np.float32(80.25)})
    writer.write_scalars(200, {"loss": np.array(0.125), "fid": 60})
    writer.write_scalars(300, {"loss": -1.5})
    writer.close()

    scalars = read_scalars(str(tmp_path))
    np.testing.assert_array_equal(scalars["loss"][0], [100, 200, 300])
    np.testing.assert_array_equal(scalars["loss"][1], [0.5, 0.125, -1.5])
    np.testing.assert_array_equal(scalars["fid"][0], [100, 200])
    np.testing.assert_array_equal(scalars["fid"][1], [80.25, 60.0])
    for _, value in loaded_values(tmp_path):
        if value.tag == "loss":
            assert value.metadata.plugin_data.plugin_name == "scalars"
            assert tensor_util.make_ndarray(value.tensor).dtype == np.float32


def test_an_image_reads_back_as_the_images_plugin_pixel_for_pixel(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (1, 6, 10, 3), dtype=np.uint8)
    writer = tensorboard.create_writer(tmp_path, just_logging=False)
    writer.write_images(7, {"samples": pixels})
    writer.write_images(8, {"pair": np.concatenate([pixels, 255 - pixels])})
    writer.close()

    images = {v.tag: (step, v) for step, v in loaded_values(tmp_path)}
    assert sorted(images) == ["pair/0", "pair/1", "samples"]
    step, value = images["samples"]
    assert step == 7 and value.metadata.plugin_data.plugin_name == "images"
    width, height, png = tensor_util.make_ndarray(value.tensor)
    assert (int(width), int(height)) == (10, 6)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels[0])
    png = tensor_util.make_ndarray(images["pair/1"][1].tensor)[2]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), 255 - pixels[0])
    assert "samples" not in read_scalars(str(tmp_path))  # Images are not scalars.


def test_hparams_are_a_flat_session_start_for_the_hparams_plugin(tmp_path):
    config = ml_collections.ConfigDict(
        {"model": {"depth": 4, "name": "SiT-B/2", "dropout": 0.1}, "ema": True}
    )
    config.sizes = (8, 16)
    config.cache = None
    writer = tensorboard.create_writer(tmp_path, just_logging=False)
    writer.write_hparams(config)
    writer.close()

    [(step, value)] = loaded_values(tmp_path)
    assert step == 0 and value.metadata.plugin_data.plugin_name == "hparams"
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    hparams = {k: v.WhichOneof("kind") for k, v in data.session_start_info.hparams.items()}
    assert hparams == {
        "model.depth": "number_value",
        "model.name": "string_value",
        "model.dropout": "number_value",
        "ema": "bool_value",
        "sizes.0": "number_value",
        "sizes.1": "number_value",
        "cache": "string_value",
    }
    values = data.session_start_info.hparams
    assert values["model.depth"].number_value == 4 and values["sizes.1"].number_value == 16
    assert values["model.name"].string_value == "SiT-B/2" and values["cache"].string_value == ""


def test_each_write_is_one_console_line(tmp_path, caplog):
    writer = tensorboard.create_writer(tmp_path, just_logging=True)
    with caplog.at_level(logging.INFO):
        writer.write_scalars(12, {"loss": 0.123456789, "step_count": 3, "fid": np.float32(2)})
        writer.write_images(12, {"samples": np.zeros((1, 4, 4, 3), np.uint8)})
    writer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "[12] fid=2, loss=0.123457, step_count=3",
        "[12] Got images: {'samples': (1, 4, 4, 3)}.",
    ]


def test_just_logging_writes_no_event_file(tmp_path):
    writer = tensorboard.create_writer(tmp_path / "run", just_logging=True)
    writer.write_hparams({"a": 1})
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_images(1, {"samples": np.zeros((1, 4, 4, 3), np.uint8)})
    writer.flush()
    writer.close()
    assert not (tmp_path / "run").exists()


def test_writers_started_in_one_second_keep_their_own_files(tmp_path):
    first = tensorboard.create_writer(tmp_path, just_logging=False)
    second = tensorboard.create_writer(tmp_path, just_logging=False)
    first.write_scalars(1, {"a": 1.0})
    second.write_scalars(1, {"b": 2.0})
    first.close()
    second.close()
    assert sorted(read_scalars(str(tmp_path))) == ["a", "b"]


def test_a_gs_workdir_without_google_cloud_storage_names_the_extra(monkeypatch):
    monkeypatch.setattr(record_writer, "GCS_ENABLED", False)
    with pytest.raises(ImportError, match=r"\.\[gcs\]"):
        tensorboard.create_writer("gs://bucket/run", just_logging=False)


def test_writing_and_reading_need_no_tensorflow(tmp_path):
    """The writer imports no TensorFlow (nor clu's writers, which do), whether or not it is
    installed; without it (simulated: its import fails) TensorBoard's reader, on its TF-less
    stub, still reads the files back."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from sara_jax.io import tensorboard
        writer = tensorboard.create_writer({str(tmp_path)!r}, just_logging=False)
        writer.write_scalars(5, {{"loss": 0.25}})
        writer.close()
        loaded = [m for m, module in sys.modules.items() if module and m.startswith("tensorflow")]
        loaded += [m for m in sys.modules if m.startswith("clu.metric_writers")]
        # The reader uses TensorFlow's gfile where TensorFlow is installed, the stub elsewhere.
        from sara_jax.io.events import read_scalars
        steps, values = read_scalars({str(tmp_path)!r})["loss"]
        print(json.dumps([steps.tolist(), values.tolist(), loaded]))
        """
    )
    for block_tf in (False, True):
        # A None entry in sys.modules makes `import tensorflow` raise ImportError.
        prefix = "import sys; sys.modules['tensorflow'] = None\n" if block_tf else ""
        result = subprocess.run(
            [sys.executable, "-c", prefix + script], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-3000:]
        steps, values, loaded = json.loads(result.stdout.strip().splitlines()[-1])
        assert (steps, values) == ([5], [0.25]), block_tf
        assert loaded == [], loaded
