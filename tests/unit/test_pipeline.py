"""Tests for sara_jax.data.pipeline: sharded, shuffled, checkpointable batches."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from sara_jax.data.pipeline import make_source, make_train_iterator
from sara_jax.data.shapes import ShapesSource


class IndexedSource:
    """Wraps a source and adds each record's source index, to trace where batch rows come from."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {**self._source[index], "index": np.int64(index)}


def _source(num_examples: int = 50) -> IndexedSource:
    return IndexedSource(ShapesSource(num_examples, image_size=8, num_classes=10, seed=0))


def _take(iterator, num_batches: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(num_batches)]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_batch_format():
    iterator = make_train_iterator(_source(), global_batch_size=8, seed=0)
    batch = next(iterator)
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (8, 8, 8, 3)
    assert batch["image"].dtype == np.uint8
    assert batch["label"].shape == (8,)
    assert batch["label"].dtype == np.int32
    for b in _take(iterator, 20):
        assert b["image"].shape == (8, 8, 8, 3)


def test_each_epoch_is_a_fresh_permutation_without_its_tail():
    # 50 examples, batch 8: 6 full batches (48 examples) per epoch; the other 2 are dropped.
    iterator = make_train_iterator(_source(50), global_batch_size=8, seed=0)
    epochs = [np.concatenate([b["index"] for b in _take(iterator, 6)]) for _ in range(3)]
    for epoch in epochs:
        assert len(np.unique(epoch)) == 48
        assert set(epoch.tolist()) <= set(range(50))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(np.sort(epochs[0]), epochs[0])


def test_epoch_covers_the_source_when_it_divides():
    iterator = make_train_iterator(_source(48), global_batch_size=12, seed=5)
    indices = np.concatenate([b["index"] for b in _take(iterator, 4)])
    np.testing.assert_array_equal(np.sort(indices), np.arange(48))


def test_labels_follow_their_records():
    source = _source()
    batch = next(make_train_iterator(source, global_batch_size=8, seed=0))
    for index, label, image in zip(batch["index"], batch["label"], batch["image"], strict=True):
        assert label == source[int(index)]["label"]
        np.testing.assert_array_equal(image, source[int(index)]["image"])


def test_seed_changes_the_order():
    first = next(make_train_iterator(_source(), global_batch_size=8, seed=0))["index"]
    again = next(make_train_iterator(_source(), global_batch_size=8, seed=0))["index"]
    other = next(make_train_iterator(_source(), global_batch_size=8, seed=1))["index"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batch_does_not_depend_on_process_count(process_count):
    num_steps = 15  # crosses two epoch boundaries
    single = _take(make_train_iterator(_source(), global_batch_size=8, seed=2), num_steps)
    shards = [
        _take(
            make_train_iterator(
                _source(),
                global_batch_size=8,
                seed=2,
                process_index=p,
                process_count=process_count,
            ),
            num_steps,
        )
        for p in range(process_count)
    ]
    for step in range(num_steps):
        assert shards[0][step]["image"].shape[0] == 8 // process_count
        joined = {
            key: np.concatenate([shard[step][key] for shard in shards]) for key in single[step]
        }
        _assert_batches_equal([joined], [single[step]])


def test_get_state_set_state_resumes_exactly():
    iterator = make_train_iterator(_source(), global_batch_size=8, seed=0)
    _take(iterator, 5)
    state = iterator.get_state()
    expected = _take(iterator, 4)

    fresh = make_train_iterator(_source(), global_batch_size=8, seed=0)
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 4), expected)
    # The original can also rewind.
    iterator.set_state(state)
    _assert_batches_equal(_take(iterator, 4), expected)


def test_orbax_checkpoint_roundtrip(tmp_path):
    iterator = make_train_iterator(_source(), global_batch_size=8, seed=0)
    _take(iterator, 3)
    train_state = {"step": np.array(3, np.int32), "w": np.arange(4, dtype=np.float32)}
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(
            3,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(train_state),
                data=grain.checkpoint.CheckpointSave(iterator),
            ),
        )
        manager.wait_until_finished()
    expected = _take(iterator, 3)

    fresh = make_train_iterator(_source(), global_batch_size=8, seed=0)
    with ocp.CheckpointManager(tmp_path) as manager:
        assert manager.latest_step() == 3
        restored = manager.restore(
            3,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(train_state),
                data=grain.checkpoint.CheckpointRestore(fresh),
            ),
        )
    assert restored.data is fresh
    np.testing.assert_array_equal(restored.state["w"], train_state["w"])
    _assert_batches_equal(_take(fresh, 3), expected)


def test_worker_processes_give_the_same_stream_and_resume():
    # grain 0.2.18 reads an absl flag in mp_prefetch; outside absl.app nothing has parsed them.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    source = ShapesSource(50, image_size=8, seed=0)
    expected = _take(make_train_iterator(source, global_batch_size=8, seed=0), 6)
    iterator = make_train_iterator(source, global_batch_size=8, seed=0, num_workers=1)
    try:
        _assert_batches_equal(_take(iterator, 3), expected[:3])
        state = iterator.get_state()
        _assert_batches_equal(_take(iterator, 3), expected[3:])
        iterator.set_state(state)
        _assert_batches_equal(_take(iterator, 3), expected[3:])
    finally:
        iterator.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"global_batch_size": 6, "process_count": 4}, "global_batch_size"),
        ({"global_batch_size": 51}, "global_batch_size"),
        ({"global_batch_size": 0}, "global_batch_size"),
        ({"global_batch_size": 8, "process_count": 0}, "process_count"),
        ({"global_batch_size": 8, "process_count": 2, "process_index": 2}, "process_index"),
        ({"global_batch_size": 8, "num_workers": -1}, "num_workers"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_train_iterator(_source(50), seed=0, **kwargs)


# A 40-example, 5-class shapes source of 16-pixel images.
SHAPES = {
    "data.num_examples": 40,
    "data.image_size": 16,
    "encoder.image_size": 16,
    "data.num_classes": 5,
    "data.seed": 7,
}


def test_make_source_builds_shapes(tiny_config):
    source = make_source(tiny_config(SHAPES).data)
    assert isinstance(source, ShapesSource)
    assert len(source) == 40
    assert source[0]["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(
        source[3]["image"], ShapesSource(40, image_size=16, num_classes=5, seed=7)[3]["image"]
    )
    assert {int(source[i]["label"]) for i in range(40)} == set(range(5))


def test_make_source_rejects_unknown_sources(tiny_config):
    data = tiny_config(SHAPES).data
    data.source = "imagenet"  # After validation, which would reject it first.
    with pytest.raises(ValueError, match=r"data\.source.*shapes"):
        make_source(data)
