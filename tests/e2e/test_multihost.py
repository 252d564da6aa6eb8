"""Two processes of 4 CPU devices each (jax.distributed over loopback) train like one process
of 8 devices: the mesh spans both hosts and each feeds its own rows of every global batch."""

import os
import re
import socket
import subprocess
import sys

import numpy as np
from test_main import SMALL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_metrics(log: str) -> dict[int, dict[str, float]]:
    out = {}
    for step, fields in re.findall(r"\] \[(\d+)\] (adv=.*)", log):
        out[int(step)] = {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.e]+)", fields)}
    return out


def test_two_hosts_train_like_one(tmp_path):
    flags = [
        *SMALL, "--config.train.num_steps=3", "--config.train.log_every=1",
        f"--config.encoder.pretrain.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    main = [sys.executable, "-m", "sara_jax.main"]
    single = subprocess.run(
        [*main, f"--workdir={tmp_path / 'single'}", *flags],
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )
    address = f"127.0.0.1:{free_port()}"
    hosts = [
        subprocess.Popen(
            [
                *main,
                f"--workdir={tmp_path / 'multi'}",
                *flags,
                "--distributed",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    logs = [host.communicate(timeout=600)[1] for host in hosts]
    for host, log in zip(hosts, logs, strict=True):
        assert host.returncode == 0, log[-3000:]
    assert "process 1 of 2, 4 local / 8 global devices" in logs[1]

    expected, got = logged_metrics(single.stderr), logged_metrics(logs[0])
    assert sorted(got) == sorted(expected) == [1, 2, 3]
    for step in expected:
        for name in ("loss", "velocity", "patch", "struc", "adv", "disc_loss", "grad_norm"):
            np.testing.assert_allclose(got[step][name], expected[step][name], rtol=1e-4)
    data = tmp_path / "multi" / "checkpoints" / "3" / "data"
    assert sorted(p.name for p in data.glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json"
    ]  # fmt: skip
