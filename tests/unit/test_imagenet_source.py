"""Tests for sara_jax.data.imagenet: raw ImageNet readers from an image folder and from TFDS."""

import io
import os
import pickle

import grain
import numpy as np
import PIL.Image
import pytest

from sara_jax.data.adm_crop import center_crop_arr, decode_and_crop
from sara_jax.data.imagenet import ImageFolderSource, TfdsSource, make_raw_source

SIZE = 32


def _encoded(width: int, height: int, fmt: str, mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    image = PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Image folder.

# Relative path -> (width, height, format, mode), created in an unsorted order.
_FOLDER_FILES = {
    "n003/n003_2.JPEG": (70, 45, "JPEG", "RGB"),
    "n003/n003_1.png": (33, 90, "PNG", "RGB"),
    "n001/n001_10.JPEG": (64, 64, "JPEG", "RGB"),
    "n001/n001_9.jpg": (100, 37, "JPEG", "L"),  # greyscale
    "n001/n001_1.JPEG": (41, 77, "JPEG", "RGB"),
    "n002/n002_5.jpeg": (50, 50, "JPEG", "RGB"),
    "n002/n002_3.PNG": (120, 61, "PNG", "RGB"),
}
# Sorted class dirs, then sorted file names.
_FOLDER_ORDER = [
    ("n001/n001_1.JPEG", 0),
    ("n001/n001_10.JPEG", 0),
    ("n001/n001_9.jpg", 0),
    ("n002/n002_3.PNG", 1),
    ("n002/n002_5.jpeg", 1),
    ("n003/n003_1.png", 2),
    ("n003/n003_2.JPEG", 2),
]


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "train"
    for i, (rel_path, (width, height, fmt, mode)) in enumerate(_FOLDER_FILES.items()):
        path = root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encoded(width, height, fmt, mode, seed=i))
    # Things the listing must skip.
    (root / "LOC_synset_mapping.txt").write_text("not a class\n")
    (root / "n001" / "readme.txt").write_text("not an image\n")
    (root / "n001" / "._n001_1.JPEG").write_bytes(b"AppleDouble junk")
    (root / ".hidden_class").mkdir()
    (root / ".hidden_class" / "x.JPEG").write_bytes(_encoded(40, 40, "JPEG"))
    return root


def test_folder_labels_ids_and_images(image_folder):
    source = ImageFolderSource(str(image_folder), SIZE)
    assert len(source) == len(_FOLDER_ORDER)
    assert source.num_classes == 3
    assert source.class_names == ("n001", "n002", "n003")
    for index, (rel_path, label) in enumerate(_FOLDER_ORDER):
        record = source[index]
        assert set(record) == {"image", "label", "id"}
        assert record["id"] == rel_path
        assert record["label"] == label and isinstance(record["label"], int)
        assert record["image"].shape == (SIZE, SIZE, 3)
        assert record["image"].dtype == np.uint8
        expected = decode_and_crop((image_folder / rel_path).read_bytes(), SIZE)
        np.testing.assert_array_equal(record["image"], expected)
    grey = source[2]["image"]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_folder_is_deterministic_and_picklable(image_folder):
    a = ImageFolderSource(image_folder, SIZE)  # a PathLike root works too
    b = pickle.loads(pickle.dumps(ImageFolderSource(str(image_folder), SIZE)))
    for index in range(len(a)):
        ra, rb = a[index], b[index]
        assert ra["id"] == rb["id"] and ra["label"] == rb["label"]
        np.testing.assert_array_equal(ra["image"], rb["image"])
    assert grain.MapDataset.source(a)[3]["id"] == "n002/n002_3.PNG"
    with pytest.raises(IndexError):
        a[len(a)]
    with pytest.raises(IndexError):
        a[-1]


def test_folder_allows_an_empty_class_dir(image_folder):
    (image_folder / "n000_empty").mkdir()
    source = ImageFolderSource(str(image_folder), SIZE)
    assert source.num_classes == 4
    assert source[0]["label"] == 1 and source[0]["id"] == "n001/n001_1.JPEG"


def test_folder_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageFolderSource(str(missing), SIZE)
    with pytest.raises(FileNotFoundError, match="no class sub-directories"):
        ImageFolderSource(str(tmp_path), SIZE)
    (tmp_path / "n001").mkdir()
    (tmp_path / "n002").mkdir()
    (tmp_path / "n002" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*no image files"):
        ImageFolderSource(str(tmp_path), SIZE)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderSource(str(tmp_path), 0)


def test_folder_names_the_file_that_fails_to_decode(image_folder):
    (image_folder / "n002" / "n002_4.JPEG").write_bytes(b"truncated")
    source = ImageFolderSource(str(image_folder), SIZE)
    with pytest.raises(OSError, match="n002_4.JPEG"):
        source[4]


def test_make_raw_source(image_folder):
    source = make_raw_source("folder", str(image_folder), SIZE)
    assert isinstance(source, ImageFolderSource) and len(source) == len(_FOLDER_ORDER)
    with pytest.raises(ValueError, match="folder, tfds.*'lmdb'"):
        make_raw_source("lmdb", str(image_folder), SIZE)


# ---------------------------------------------------------------------------------------------
# TFDS.

tfds = pytest.importorskip("tensorflow_datasets")

_TINY_NAME = "sara_tiny_images"
_TINY_CLASSES = ["n001", "n002", "n003"]


def _tiny_examples(split: str) -> list[dict]:
    """The tiny data set's examples, images as encoded bytes (stored by TFDS as they are)."""
    count = {"train": 5, "validation": 2}[split]
    examples = []
    for i in range(count):
        mode = "L" if i == 1 else "RGB"  # one greyscale JPEG, as ImageNet has
        data = _encoded(40 + 7 * i, 60 - 5 * i, "JPEG", mode, seed=100 * len(split) + i)
        label = (2 * i + 1) % 3
        examples.append(
            {"image": data, "label": label, "file_name": f"{_TINY_CLASSES[label]}_{split}{i}.JPEG"}
        )
    return examples


class SaraTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A small image-classification data set with ImageNet's features, built in tmp dirs."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=_TINY_CLASSES),
                    "file_name": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in ("train", "validation")}

    def _generate_examples(self, split):
        for example in _tiny_examples(split):
            yield example["file_name"], {**example, "image": io.BytesIO(example["image"])}


def _build_tiny(data_dir, file_format: str) -> str:
    SaraTinyImages(data_dir=str(data_dir), file_format=file_format).download_and_prepare()
    return str(data_dir)


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    return _build_tiny(tmp_path_factory.mktemp("tfds_array_record"), "array_record")


@pytest.mark.parametrize("split", ["train", "validation"])
def test_tfds_records(tiny_tfds_dir, split):
    source = TfdsSource(_TINY_NAME, split, tiny_tfds_dir, SIZE)
    assert source.num_classes == 3
    assert source.class_names == tuple(_TINY_CLASSES)
    expected = {e["file_name"]: e for e in _tiny_examples(split)}
    records = [source[i] for i in range(len(source))]
    assert sorted(r["id"] for r in records) == sorted(expected)
    for record in records:
        example = expected[record["id"]]
        assert record["label"] == example["label"] and isinstance(record["label"], int)
        assert record["image"].shape == (SIZE, SIZE, 3) and record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["image"], decode_and_crop(example["image"], SIZE))


def test_tfds_is_deterministic_sliceable_and_picklable(tiny_tfds_dir):
    source = make_raw_source("tfds:" + _TINY_NAME, tiny_tfds_dir, SIZE, split="train")
    assert isinstance(source, TfdsSource) and len(source) == 5
    again = pickle.loads(pickle.dumps(source))
    for index in range(len(source)):
        a, b = source[index], again[index]
        assert a["id"] == b["id"] and a["label"] == b["label"]
        np.testing.assert_array_equal(a["image"], b["image"])
    head = TfdsSource(_TINY_NAME, "train[:2]", tiny_tfds_dir, SIZE)
    assert [head[i]["id"] for i in range(2)] == [source[i]["id"] for i in range(2)]
    with pytest.raises(IndexError):
        head[2]


def test_tfds_accepts_images_already_decoded(tiny_tfds_dir):
    # Some TFDS decoders (and mock_data without SkipDecoding) hand back uint8 arrays, labels as
    # numpy ints and file names as bytes or 0-d object arrays.
    source = TfdsSource(_TINY_NAME, "train", tiny_tfds_dir, SIZE)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (50, 41, 1), dtype=np.uint8)
    source._source = [
        {"image": rgb, "label": np.int64(2), "file_name": np.array("a.JPEG", dtype=object)},
        {"image": grey, "label": 1, "file_name": b"b.JPEG"},
    ]
    first, second = source[0], source[1]
    assert (first["label"], first["id"]) == (2, "a.JPEG")
    assert (second["label"], second["id"]) == (1, "b.JPEG")
    np.testing.assert_array_equal(first["image"], center_crop_arr(PIL.Image.fromarray(rgb), SIZE))
    expected = center_crop_arr(PIL.Image.fromarray(grey[..., 0]), SIZE)
    np.testing.assert_array_equal(second["image"], expected)


def test_tfds_unknown_split(tiny_tfds_dir):
    with pytest.raises(ValueError, match="test"):
        TfdsSource(_TINY_NAME, "test", tiny_tfds_dir, SIZE)


def test_tfds_tfrecord_only_is_a_clear_error(tmp_path):
    data_dir = _build_tiny(tmp_path, "tfrecord")
    with pytest.raises(ValueError, match="tfrecord only.*array_record") as info:
        TfdsSource(_TINY_NAME, "train", data_dir, SIZE)
    assert os.path.join(data_dir, _TINY_NAME, "1.0.0") in str(info.value)
    assert "tfds convert_format" in str(info.value)


def test_tfds_missing_data_dir_and_unprepared_imagenet(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*does not exist"):
        make_raw_source("tfds", str(missing), SIZE)
    with pytest.raises(FileNotFoundError) as info:
        make_raw_source("tfds", str(tmp_path), SIZE, split="validation")
    message = str(info.value)
    assert "imagenet2012" in message and str(tmp_path) in message
    assert "--file_format=array_record" in message and "--manual_dir=" in message
    with pytest.raises(FileNotFoundError, match="no builder of that name"):
        TfdsSource("no_such_data_set", "train", str(tmp_path), SIZE)


def test_tfds_imagenet2012_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        source = make_raw_source("tfds", str(tmp_path), SIZE)
        assert len(source) == 4 and source.num_classes == 1000
        record = source[3]
    assert record["image"].shape == (SIZE, SIZE, 3) and record["image"].dtype == np.uint8
    assert 0 <= record["label"] < 1000 and isinstance(record["id"], str)
