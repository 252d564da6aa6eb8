"""`python -m sara_jax.analysis` (Fig. 2) on a tiny trained demo model."""

import json

import numpy as np
from helpers import solid
from PIL import Image
from test_main import run_main

from sara_jax import analysis


def test_cli_writes_fig2a_and_fig2b_for_a_trained_demo_model(tmp_path):
    result = run_main(tmp_path, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "fig2"
    result = run_main(
        tmp_path, f"--out={out}", "--num_images=3", "--top_k=4", module="sara_jax.analysis"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # 3 images x (encoder, model); 32x32 pixels / patch 4 = an 8x8 grid, 8 pixels per token.
    png = np.asarray(Image.open(out / "fig2a.png").convert("RGB"))
    assert png.shape == (3 * 66 + 2, 2 * 66 + 2, 3)
    for r in range(3):
        for c in range(2):
            y, x = 2 + r * 66 + 4 * 8, 2 + c * 66 + 4 * 8  # The centre patch (4, 4) = 36.
            np.testing.assert_array_equal(png[y : y + 8, x : x + 8], solid(analysis.POSITIVE, 8))

    fig2b = json.loads((out / "fig2b.json").read_text())
    assert fig2b["step"] == 2 and fig2b["num_images"] == 3 and fig2b["t"] == 0.5
    assert fig2b["centre_patch"] == 36
    # 3 images x 64 tokens; encoder width 16, SiT width 32, projected back to 16.
    for name, width in (("z_enc", 16), ("z_den", 32), ("h_den", 16)):
        assert fig2b[name]["shape"] == [3 * 64, width] and fig2b[name]["k"] == 4
        # The top-k share is at least the average k / width and at most everything.
        assert 4 / width - 1e-6 <= fig2b[name]["energy"] < 1.0

    # The spatial metrics of each (SRSS too: the shapes data marks its objects) and the gaps,
    # as the in-training evaluation logs them; the gap is L_struc's mean, in [0, 4].
    structure = json.loads((out / "spatial.json").read_text())
    for name in ("z_enc", "z_den", "h_den"):
        for metric in ("lds", "cds", "rmsc", "srss"):
            assert np.isfinite(structure[f"spatial/{name}/{metric}"]), (name, metric)
        assert 0 < structure[f"spatial/{name}/rmsc"] <= 1
    assert 0 < structure["struc_gap/z_den"] <= 4 and 0 < structure["struc_gap/h_den"] <= 4


def test_cli_names_a_missing_checkpoint(tmp_path):
    result = run_main(tmp_path, f"--out={tmp_path / 'fig2'}", module="sara_jax.analysis")
    assert result.returncode != 0
    assert "no checkpoint under" in result.stderr
