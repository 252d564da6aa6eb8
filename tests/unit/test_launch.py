"""The launchers: shell syntax, --dry-run output, the TPU watcher's decisions, and the remote
run/stop commands executed for real in a local shell."""

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))

spec = importlib.util.spec_from_file_location("tpu_pod", LAUNCH / "tpu_pod.py")
tpu_pod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tpu_pod)


def sh(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def lines(output: str) -> list[list[str]]:
    """The printed commands, each split as a shell would."""
    return [shlex.split(line) for line in output.splitlines() if line and line[0] != "#"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    result = sh("-n", str(script))
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_gpu_dry_run():
    result = sh("launch/gpu.sh", "--dry-run", "configs/sit_l.py", "/runs/l", "--config.seed=1")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        [
            "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9",
            *("python", "-m", "sara_jax.main", "--config=configs/sit_l.py"),
            *("--workdir=/runs/l", "--config.seed=1"),
        ]
    ]
    assert sh("launch/gpu.sh", "--dry-run").returncode != 0  # CONFIG and WORKDIR are required.


def slurm_dry_run(*args: str, **env: str) -> list[list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = sh("launch/slurm.sh", "--dry-run", *args, env={**clean, **env})
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def test_slurm_dry_run_submits_itself_and_runs_one_task_per_node():
    args = ["--nodes=4", "--gpus-per-node=8", "--partition=gpu", "--sbatch-arg=--qos=high"]
    sbatch, ids, fraction, srun = slurm_dry_run(*args, "configs/sit_xl.py", "/shared/xl", "--x=1")
    assert sbatch[0] == "sbatch"
    for option in ["--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--requeue"]:
        assert option in sbatch
    assert "--signal=TERM@120" in sbatch and "--partition=gpu" in sbatch and "--qos=high" in sbatch
    # The job runs this same script with the same arguments.
    script = sbatch.index("launch/slurm.sh")
    assert sbatch[script + 1 :] == ["--gpus-per-node=8", "configs/sit_xl.py", "/shared/xl", "--x=1"]
    assert ids == ["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]
    assert fraction == ["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9"]
    assert srun[:3] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert srun[3:] == [
        *("python", "-m", "sara_jax.main", "--config=configs/sit_xl.py"),
        *("--workdir=/shared/xl", "--distributed", "--x=1"),
    ]


def test_slurm_inside_an_allocation_runs_srun_with_the_nodes_gpus():
    commands = slurm_dry_run("configs/demo.py", "/w", SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="4")
    assert [c[0] for c in commands] == ["export", "export", "srun"]
    assert commands[0] == ["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3"]


def tpu(command: str, *args: str) -> list[list[str]]:
    """`launch/tpu_pod.py COMMAND --name=sara --zone=us-east5-a --dry-run ARGS`'s commands."""
    fixed = ["--name=sara", "--zone=us-east5-a", "--dry-run"]
    argv = [sys.executable, "launch/tpu_pod.py", command, *fixed, *args]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def remote(command: list[str]) -> str:
    """The shell command an `ssh --command=...` line runs on the workers."""
    (option,) = [w for w in command if w.startswith("--command=")]
    return option.removeprefix("--command=")


@pytest.mark.parametrize(
    "accelerator,version",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-32", "v2-alpha-tpuv5"),
        ("v6e-16", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_up_dry_run(accelerator, version):
    workdir = "gs://bucket/runs/xl"
    commands = tpu(
        "up", f"--accelerator={accelerator}", f"--workdir={workdir}", "--config=configs/sit_xl.py"
    )
    describe, create, pack, scp, install, start = commands
    assert describe[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sara"]
    assert f"--accelerator-type={accelerator}" in create and f"--version={version}" in create
    assert "--zone=us-east5-a" in create
    assert "git ls-files" in " ".join(pack) and "tar" in " ".join(pack)
    assert scp[4] == "scp" and "--worker=all" in scp and scp[6] == "sara:sara_jax.tar.gz"
    assert install[4] == "ssh" and "--worker=all" in install
    assert 'pip install --python ~/sara_venv/bin/python --upgrade "jax[tpu]" -e ~/sara_jax' in (
        remote(install)
    )
    assert "--worker=all" in start
    job = remote(start)
    assert "nohup setsid bash -c" in job
    python = shlex.split(shlex.split(job.split("bash -c ", 1)[1])[0])
    assert python[:7] == [
        "~/sara_venv/bin/python",
        *("-m", "sara_jax.main", "--config=configs/sit_xl.py"),
        f"--workdir={workdir}",
        "--distributed",
        "--config.train.state_sharding=fsdp;",  # The launcher's default layout.
    ]


def test_tpu_queued_spot_with_overrides_and_watch():
    commands = tpu(
        *("up", "--accelerator=v5p-32", "--queued", "--spot", "--watch"),
        *("--workdir=gs://b/r", "--data-disk=projects/p/zones/z/disks/d"),
        *("--", "--config.train.grad_accum_steps=2"),
    )
    create = commands[1]
    assert create[3:6] == ["queued-resources", "create", "sara"]
    for option in ["--node-id=sara", "--runtime-version=v2-alpha-tpuv5", "--spot"]:
        assert option in create
    assert "--data-disk=source=projects/p/zones/z/disks/d,mode=read-only" in create
    start = commands[5]
    assert (
        "--distributed --config.train.state_sharding=fsdp --config.train.grad_accum_steps=2;"
        in remote(start)
    )
    # --watch: after a preemption it deletes the queued resource and does it all again.
    delete, describe, create_again, *again = commands[6:]
    assert delete[3:6] == ["queued-resources", "delete", "sara"] and "--force" in delete
    assert create_again == create and again == commands[2:6]


@pytest.mark.parametrize(
    "flags, layout",
    [
        (("--state-sharding=weight_update",), "weight_update"),
        (("--", "--config.train.state_sharding=replicated"), "replicated"),  # Overrides win.
    ],
)
def test_tpu_state_sharding(flags, layout):
    start = tpu("run", "--workdir=gs://b/r", *flags)[-1]
    assert remote(start).count("--config.train.state_sharding=") == 1
    assert f"--config.train.state_sharding={layout}" in remote(start)


def test_tpu_other_commands_dry_run():
    (logs,) = tpu("logs")
    assert "--worker=0" in logs and remote(logs) == "tail -n 100 -F ~/sara_run/train.log"
    (stop,) = tpu("stop")
    assert "--worker=all" in stop and remote(stop) == "pkill -TERM -P $(cat ~/sara_run/pid)"
    (run,) = tpu("exec", "--", "df", "-h", "/")
    assert remote(run) == "df -h /"
    (delete,) = tpu("delete")
    assert delete[3:6] == ["tpu-vm", "delete", "sara"] and "--quiet" in delete


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--workdir=/local/dir"], "use a gs:// path"),
        (["create", "--accelerator=v3-8"], "pass --version"),
        (["create"], "needs --accelerator"),
        (["run"], "needs --workdir"),
    ],
)
def test_tpu_refuses(args, message):
    command = [sys.executable, "launch/tpu_pod.py", *args, "--name=n", "--zone=z", "--dry-run"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and message in result.stderr


def test_tpu_version_flag_overrides_the_default():
    create = tpu("create", "--accelerator=v3-8", "--version=tpu-vm-base")[1]
    assert "--version=tpu-vm-base" in create


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed")
def test_gcloud_knows_every_flag_used():
    """Each printed gcloud command's flags appear in that command's own --help."""
    commands = tpu("up", "--accelerator=v4-8", "--workdir=gs://b/r", "--watch", "--spot")
    commands += tpu("up", "--accelerator=v4-8", "--workdir=gs://b/r", "--watch", "--queued")
    commands += tpu("logs")
    seen = {}
    for command in commands:
        if command[0] != "gcloud":
            continue
        path = tuple(command[1:5])
        flags = {w.split("=")[0] for w in command if w.startswith("--")}
        seen.setdefault(path, set()).update(flags)
    assert len(seen) >= 6
    for path, flags in seen.items():
        help_text = subprocess.run(
            ["gcloud", *path, "--help"], capture_output=True, text=True
        ).stdout
        for flag in flags:
            assert flag in help_text, f"gcloud {' '.join(path)} has no {flag}"


class SimulatedPod(tpu_pod.Pod):
    """A Pod whose gcloud is a simulation: a TPU that can be preempted, a run that ends."""

    def __init__(self, states: list[str], exits: list[int | None], queued: bool = False):
        args = tpu_pod.parse(
            ["watch", "--name=n", "--zone=z", "--accelerator=v5p-8", "--workdir=gs://b/r"]
            + (["--queued"] if queued else [])
        )
        super().__init__(args)
        self.states, self.exits = states, exits  # What each poll sees, in order.
        self.log: list[str] = []
        self.sleep = lambda seconds: None

    def query(self, command):
        if "describe" in command:
            return self.states.pop(0) if self.states else "READY"
        code = self.exits.pop(0) if self.exits else None
        return None if code is None else str(code)

    def call(self, command):
        if command[4] == "ssh":
            self.log.append("install" if "pip install" in remote(command) else "start")
        else:
            self.log.append(command[4])

    def local(self, script):
        self.log.append("pack")


def test_watch_recreates_a_preempted_tpu_and_stops_when_the_run_ends():
    # Poll 1: running. Poll 2: preempted -> delete, create (MISSING, then READY), setup,
    # start. Poll 3: running. Poll 4: exited 0, and the TPU is still there a poll later.
    pod = SimulatedPod(
        states=["READY", "PREEMPTED", "PREEMPTED", "MISSING", "READY", "READY", "READY", "READY"],
        exits=[None, None, 0],
    )
    pod.watch()
    assert pod.log == ["delete", "create", "pack", "scp", "install", "start"]
    assert not pod.states and not pod.exits


def test_watch_treats_an_exit_followed_by_preemption_as_preemption():
    # The run saved and exited 0 on SIGTERM, then the TPU went: recover, not finish.
    pod = SimulatedPod(
        states=["READY", "PREEMPTED", "SUSPENDED", "SUSPENDED", "MISSING", "ACTIVE", "ACTIVE"],
        exits=[0, 0],
        queued=True,
    )
    pod.watch()
    assert pod.log == ["delete", "create", "pack", "scp", "install", "start"]


def test_watch_reports_a_failed_run():
    pod = SimulatedPod(states=["READY", "READY"], exits=[1])
    with pytest.raises(SystemExit, match="exited with status 1"):
        pod.watch()
    assert pod.log == []


def run_remote(command: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)


def test_remote_start_and_stop_really_work(tmp_path):
    """The start/stop command lines, run in a local shell whose $HOME stands in for a worker's,
    with a stand-in Python that records its arguments and waits for SIGTERM like training."""
    home = tmp_path
    (home / "sara_jax").mkdir()
    python = home / "sara_venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/usr/bin/env bash\n"
        'echo "args: $*"\n'
        "trap 'echo saved; exit 0' TERM\n"
        "while true; do sleep 0.1; done\n"
    )
    python.chmod(0o755)
    args = tpu_pod.parse(["run", "--name=n", "--zone=z", "--workdir=gs://b/r", "--", "--x=1"])
    recorded = []
    pod = tpu_pod.Pod(args)
    pod.call = recorded.append
    pod.start()
    pod.stop()
    start, stop = (remote(c) for c in recorded)

    assert run_remote(start, home).returncode == 0
    log = home / "sara_run" / "train.log"
    deadline = time.time() + 20
    while "args:" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.1)
    assert (
        "-m sara_jax.main --config=configs/sit_xl.py --workdir=gs://b/r --distributed "
        "--config.train.state_sharding=fsdp --x=1"
    ) in log.read_text()
    again = run_remote(start, home)  # A second start while training is refused.
    assert again.returncode == 1 and "stop it first" in again.stderr

    assert run_remote(stop, home).returncode == 0
    status = home / "sara_run" / "exit_status"
    while not status.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert status.read_text().strip() == "0"
    assert "saved" in log.read_text()
