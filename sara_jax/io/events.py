"""The scalars a run logged: its TensorBoard event files, read back (local or gs://)."""

import numpy as np
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat import tf
from tensorboard.util import tensor_util

from sara_jax.io.errors import MissingInput

Scalars = dict[str, tuple[np.ndarray, np.ndarray]]
EVENT_FILES = "events.out.tfevents.*"  # TensorBoard's event file names, as a glob.


def read_scalars(workdir: str) -> Scalars:
    """Every scalar the event files of `workdir` (and of its direct subdirectories) hold.

    Returns:
      tag -> (steps, values), sorted by step. A step logged twice (a resumed run logs again
      the steps after its last checkpoint) keeps the value of the newer event file.

    Raises:
      FileNotFoundError: when `workdir` holds no event file.
    """
    root = workdir.rstrip("/")
    files = tf.io.gfile.glob(f"{root}/{EVENT_FILES}")
    files += tf.io.gfile.glob(f"{root}/*/{EVENT_FILES}")
    if not files:
        raise MissingInput(f"no TensorBoard event files in {workdir}")
    by_tag: dict[str, dict[int, float]] = {}
    # Event file names start with their creation time, so this reads older files first.
    for path in sorted(files, key=lambda p: p.rsplit("/", 1)[-1]):
        plugins: dict[str, str] = {}  # TF2 summaries may carry their metadata only once.
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag)
                plugins[value.tag] = plugin
                if plugin == "scalars":
                    number = float(tensor_util.make_ndarray(value.tensor))
                    by_tag.setdefault(value.tag, {})[event.step] = number
    return {
        tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
        for tag, points in by_tag.items()
    }
