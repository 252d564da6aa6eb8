"""Random-access sources of raw ImageNet examples, ADM-cropped, for the preprocessing job.

Two readers of the same records, `{"image": uint8 (S, S, 3), "label": int, "id": str}`:

- `ImageFolderSource`: the usual `root/<wnid>/<file>.JPEG` tree (e.g. `ILSVRC2012_img_train.tar`
  unpacked per class); class dirs sorted give labels 0..K-1, which for ImageNet's wnids is the
  standard label order (the one TFDS, torchvision and ADM use).
- `TfdsSource`: a TFDS image-classification data set (`imagenet2012` by default) prepared in the
  array_record format, read through `tfds.data_source` with the image left encoded and decoded
  here by PIL, so records come out the same as from the folder and TensorFlow does no work.

`id` is a stable example id for pairing images with latents: the path relative to the root for
folders, the `file_name` feature for TFDS. Both sources are picklable (grain workers).
"""

import os

import numpy as np
import PIL.Image

from sara_jax.data.adm_crop import center_crop_arr, decode_and_crop
from sara_jax.io.errors import InputError, MissingInput

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")
RAW_SOURCE_KINDS: tuple[str, ...] = ("folder", "tfds")
TFDS_DEFAULT_NAME = "imagenet2012"


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range [0, {length}).")
    return index


class ImageFolderSource:
    """Random-access source over `root/<class dir>/<image files>` (grain's source protocol).

    Class dirs (sorted by name, hidden ones skipped) get labels 0..K-1; in each, the files with an
    image extension (.JPEG/.jpg/.jpeg/.png, any case; hidden files skipped) are taken in sorted
    order, class after class. Sub-dirs of class dirs are not descended into. The tree is listed
    once here; files are read and decoded in `__getitem__`.

    Record `i`: `{"image": uint8 (S, S, 3), "label": int, "id": str}`, `id` being the file's
    path relative to `root` with `/` separators, e.g. `n01440764/n01440764_10026.JPEG`.
    """

    def __init__(self, root: str, image_size: int):
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}.")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise MissingInput(
                f"ImageNet folder {root!r} does not exist or is not a directory; expected "
                "root/<class dir>/<images>."
            )
        class_names = sorted(
            entry.name
            for entry in os.scandir(root)
            if entry.is_dir() and not entry.name.startswith(".")
        )
        if not class_names:
            raise MissingInput(
                f"ImageNet folder {root!r} has no class sub-directories; expected "
                "root/<class dir>/<images>."
            )
        files, labels = [], []
        for label, class_name in enumerate(class_names):
            names = sorted(
                entry.name
                for entry in os.scandir(os.path.join(root, class_name))
                if entry.is_file()
                and not entry.name.startswith(".")
                and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            )
            files.extend(f"{class_name}/{name}" for name in names)
            labels.extend([label] * len(names))
        if not files:
            raise MissingInput(
                f"ImageNet folder {root!r} has {len(class_names)} class directories but no image "
                f"files in them (extensions: {', '.join(IMAGE_EXTENSIONS)}, any case)."
            )
        self.root = root
        self.image_size = image_size
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.num_classes = len(class_names)
        self._files: tuple[str, ...] = tuple(files)
        self._labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._files)

    def __repr__(self) -> str:
        return (
            f"ImageFolderSource(root={self.root!r}, image_size={self.image_size}, "
            f"num_examples={len(self)}, num_classes={self.num_classes})"
        )

    def __getitem__(self, index: int) -> dict:
        """Reads, decodes and ADM-crops file `index`: image uint8 (S, S, 3), label, id."""
        index = _check_index(index, len(self))
        rel_path = self._files[index]
        path = os.path.join(self.root, rel_path)
        with open(path, "rb") as f:
            data = f.read()
        try:
            image = decode_and_crop(data, self.image_size)
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError.
            raise OSError(f"could not decode image {path!r}: {e}") from e
        return {"image": image, "label": int(self._labels[index]), "id": rel_path}


def _import_tfds():
    """The tensorflow_datasets module; an ImportError naming the install line if it is missing
    (it is the `preprocess` extra, not in the plain install)."""
    try:
        import tensorflow_datasets as tfds
    except ModuleNotFoundError as e:
        if e.name != "tensorflow_datasets":
            raise
        raise ImportError(
            "reading ImageNet from TFDS (preprocess.source='tfds') needs tensorflow-datasets, "
            "which the plain install leaves out: pip install -e '.[preprocess]' "
            "(docs/install.md)"
        ) from e
    return tfds


def _tfds_prepare_hint(name: str, data_dir: str) -> str:
    """How to prepare `name` under `data_dir` for random access."""
    if name.split("/")[0] == TFDS_DEFAULT_NAME:
        return (
            "To prepare ImageNet: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
            "(https://image-net.org/download-images) into a manual dir, then run\n"
            f"  tfds build {name} --data_dir={data_dir} --file_format=array_record "
            "--manual_dir=<manual dir>"
        )
    return (
        f"To prepare it: tfds build {name} --data_dir={data_dir} --file_format=array_record "
        "(add --manual_dir=<dir> for data sets that need a manual download)."
    )


def _listing(path: str, limit: int = 10) -> str:
    """The entries of directory `path`, for error messages."""
    if not os.path.isdir(path):
        return f"{path} does not exist"
    names = sorted(os.listdir(path))
    if not names:
        return f"{path} is empty"
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} entries)"
    return f"{path} holds: {shown}"


def _tfds_diagnosis(name: str, split: str, data_dir: str) -> Exception | None:
    """Why `tfds.data_source(name, data_dir=data_dir)` failed, as a clear error; None if unsure.

    TFDS's own messages mislead here (for a missing data set it reports the data as prepared in
    the tfrecord format, and an unknown name lists every registered data set), so this looks at
    what is on disk instead.
    """
    tfds = _import_tfds()

    hint = _tfds_prepare_hint(name, data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        return MissingInput(
            f"TFDS data set {name!r} is not prepared under {data_dir!r} and TFDS has no builder "
            f"of that name ({_listing(data_dir)}). {hint}"
        )
    if not builder.is_prepared():
        return MissingInput(
            f"TFDS data set {name!r} (version {builder.version}) is not prepared in {data_dir!r}: "
            f"expected it at {builder.data_dir}, but "
            f"{_listing(os.path.dirname(builder.data_dir))}. {hint}"
        )
    found = sorted(f.value for f in builder.info.available_file_formats())
    random_access = sorted(f.value for f in tfds.core.FileFormat.with_random_access())
    if not set(found) & set(random_access):
        return InputError(
            f"TFDS data set {name!r} at {builder.data_dir} is prepared as {', '.join(found)} "
            f"only; random access needs {' or '.join(random_access)}. Convert it in place with "
            "(needs apache-beam installed)\n"
            f"  tfds convert_format --dataset_version_dir={builder.data_dir} "
            "--out_file_format=array_record\n"
            f"or delete {builder.data_dir} and rebuild it. {hint}"
        )
    if split.split("[")[0] not in builder.info.splits:
        return InputError(
            f"TFDS data set {name!r} at {builder.data_dir} has no split {split!r}; it has "
            f"{', '.join(sorted(builder.info.splits))}."
        )
    return None


def _as_str(value) -> str:
    """A TFDS Text value (str, bytes or a 0-d object array) as str."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class TfdsSource:
    """Random-access source over a TFDS image-classification data set in array_record format.

    The data set needs `image`, `label` and `file_name` features (as `imagenet2012`). Images are
    read encoded (`tfds.decode.SkipDecoding`) and decoded by PIL in `__getitem__`.

    Record `i`: `{"image": uint8 (S, S, 3), "label": int, "id": str}`, `id` being the
    `file_name` feature (e.g. `n01440764_10026.JPEG`).
    """

    def __init__(self, name: str, split: str, data_dir: str, image_size: int):
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}.")
        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise MissingInput(
                f"TFDS data_dir {data_dir!r} does not exist. {_tfds_prepare_hint(name, data_dir)}"
            )
        tfds = _import_tfds()

        try:
            source = tfds.data_source(
                name,
                split=split,
                data_dir=data_dir,
                download=False,
                decoders={"image": tfds.decode.SkipDecoding()},
            )
        except Exception as e:  # TFDS raises many types here; explain what is on disk instead.
            diagnosis = _tfds_diagnosis(name, split, data_dir)
            if diagnosis is None:
                raise
            raise diagnosis from e
        features = source.dataset_info.features
        missing = [key for key in ("image", "label", "file_name") if key not in features]
        if missing:
            raise InputError(
                f"TFDS data set {name!r} lacks the features {', '.join(missing)}; TfdsSource "
                f"needs image, label and file_name (it has {', '.join(features)})."
            )
        self.name = name
        self.split = split
        self.data_dir = data_dir
        self.image_size = image_size
        self.class_names: tuple[str, ...] = tuple(features["label"].names)
        self.num_classes: int = features["label"].num_classes
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return (
            f"TfdsSource(name={self.name!r}, split={self.split!r}, data_dir={self.data_dir!r}, "
            f"image_size={self.image_size}, num_examples={len(self)})"
        )

    def __getitem__(self, index: int) -> dict:
        """Reads, decodes and ADM-crops example `index`: image uint8 (S, S, 3), label, id."""
        index = _check_index(index, len(self))
        example = self._source[index]
        image = example["image"]
        if isinstance(image, np.ndarray):  # Already decoded (e.g. under tfds.testing.mock_data).
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            image = center_crop_arr(PIL.Image.fromarray(image), self.image_size)
        else:
            image = decode_and_crop(image, self.image_size)
        return {
            "image": image,
            "label": int(example["label"]),
            "id": _as_str(example["file_name"]),
        }


def make_raw_source(
    kind: str, path: str, image_size: int, split: str = "train"
) -> ImageFolderSource | TfdsSource:
    """The raw ImageNet source of `kind`, reading from `path`.

    Args:
      kind: "folder" (an image-folder tree at `path`), "tfds" (TFDS `imagenet2012` with data_dir
        `path`) or "tfds:<name>" for another TFDS data set, e.g. "tfds:imagenette/full-size-v2".
      path: the folder's root (for a folder, the split's own tree, e.g. `.../train`) or the TFDS
        data_dir.
      image_size: S, the side of the ADM-cropped images.
      split: the TFDS split, slicing allowed ("validation", "train[:1000]"); ignored for folders.

    Returns:
      A random-access source of `{"image": uint8 (S, S, 3), "label": int, "id": str}`.
    """
    kind_name, _, tfds_name = kind.partition(":")
    if kind == "folder":
        return ImageFolderSource(path, image_size)
    if kind_name == "tfds":
        return TfdsSource(tfds_name or TFDS_DEFAULT_NAME, split, path, image_size)
    raise ValueError(
        f"raw source kind must be one of {', '.join(RAW_SOURCE_KINDS)} (or tfds:<name>), "
        f"got {kind!r}."
    )
