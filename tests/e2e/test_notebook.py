"""launch/colab_tpu.ipynb runs top to bottom on CPU, with its parameters shrunk for CI."""

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from test_main import SMALL

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "launch" / "colab_tpu.ipynb"


def parameters_cell(nb) -> int:
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    return index


def test_notebook_executes_end_to_end(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # As papermill does: a cell right after the parameters cell overrides them.
    overrides = [
        *SMALL[1:],  # SMALL starts with --config=configs/demo.py, the notebook's CONFIG.
        "--config.train.num_steps=4",
        f"--config.encoder.pretrain.cache_dir={tmp_path / 'cache'}",
    ]
    workdir = tmp_path / "run"
    injected = f"WORKDIR = {str(workdir)!r}\nOVERRIDES = {overrides!r}"
    nb.cells.insert(parameters_cell(nb) + 1, new_code_cell(injected))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    # One CPU device is the quickest here; the kernel's subprocesses inherit it.
    client.execute(env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "1 devices: [CpuDevice(id=0)]" in text
    assert "velocity=" in text  # The training cell prints the logged loss terms.
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # The sample grid and the loss curves.
    assert (workdir / "samples.png").exists() and (workdir / "plots" / "curves.png").exists()


def test_notebook_is_committed_clean():
    """No outputs or execution counts in the repository, and Colab opens it on a TPU."""
    nb = json.loads(NOTEBOOK.read_text())
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert nb["metadata"]["accelerator"] == "TPU"
    assert parameters_cell(nbformat.reads(NOTEBOOK.read_text(), as_version=4)) == 1
