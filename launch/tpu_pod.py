#!/usr/bin/env python3
"""Train on a Cloud TPU VM or pod slice, driven from your own machine with gcloud.

    python launch/tpu_pod.py up --name=sara --zone=us-east5-a --accelerator=v6e-16 \\
        --workdir=gs://my-bucket/runs/sit_xl --config=configs/sit_xl.py [-- --config.x=y ...]

creates the TPU (or reuses it), copies this checkout to every worker, installs it with
`jax[tpu]` and its `gcs` extra, and starts `python -m sara_jax.main --distributed` on all
workers at once. The workdir must be a gs:// path: every worker writes checkpoints and logs
there, and a TPU that is preempted or deleted loses nothing; the same command later resumes from
the latest checkpoint.
`up --watch` stays on and does that by itself: when the TPU is preempted it recreates it,
reinstalls and restarts until the run finishes.

Commands: create, setup, run, up, watch, status, logs, stop, exec, delete (see --help). With
--dry-run every gcloud (and local) command is printed instead of run. Standard library only, so
it runs wherever gcloud does. docs/pods.md walks through it.
"""

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# TPU software versions for JAX, by accelerator family (from Google's "TPU software versions"
# page, https://cloud.google.com/tpu/docs/runtimes). v5e accelerator types are "v5litepod-N".
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}

# Where things live on every worker. The images ship Python 3.10; sara_jax and JAX need 3.11+,
# so setup makes a uv-managed Python 3.11 virtual environment.
CODE, VENV, RUN = "~/sara_jax", "~/sara_venv", "~/sara_run"
UV = "~/.local/bin/uv"
# Refuses to touch a worker whose run is still going (`stop` it first).
IDLE_CHECK = (
    f"if [ -f {RUN}/pid ] && kill -0 $(cat {RUN}/pid) 2>/dev/null;"
    ' then echo "sara_jax is training here: stop it first" >&2; exit 1; fi'
)

# Resource states, from `describe --format=value(state)` of a TPU VM and
# `--format=value(state.state)` of a queued resource. Anything else is on its way.
READY = {"READY", "ACTIVE"}
LOST = {"PREEMPTED", "TERMINATED", "STOPPED", "SUSPENDED", "FAILED"}


class Pod:
    """One TPU VM or queued resource named `args.name`, and the run on it."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry_run = args.dry_run
        self.sleep = time.sleep  # Replaced in tests.

    # -- the three ways of running something: change, query, local -------------------------

    def call(self, command: list[str]) -> None:
        """Runs a command that changes something (or prints it with --dry-run)."""
        print(shlex.join(command), flush=True)
        if not self.dry_run:
            subprocess.run(command, check=True)

    def query(self, command: list[str]) -> str | None:
        """A read-only command's stdout, or None if it failed (e.g. no such resource). With
        --dry-run it is printed and answers None."""
        if self.dry_run:
            print(shlex.join(command), flush=True)
            return None
        result = subprocess.run(command, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    def local(self, script: str) -> None:
        """A shell pipeline run in the repository root."""
        print(f"(cd {shlex.quote(str(ROOT))} && {script})", flush=True)
        if not self.dry_run:
            subprocess.run(["bash", "-c", script], cwd=ROOT, check=True)

    def note(self, message: str) -> None:
        """A progress line; `#` keeps --dry-run output a list of commands."""
        print(f"# {message}", flush=True)

    # -- gcloud command lines -------------------------------------------------------------

    def gcloud(self, *words: str) -> list[str]:
        """`gcloud compute tpus tpu-vm|queued-resources WORDS --zone=... [--project=...]`."""
        kind = ("queued-resources",) if self.args.queued else ("tpu-vm",)
        if words[0] in ("ssh", "scp"):  # A queued resource's node is a TPU VM of the same name.
            kind = ("tpu-vm",)
        project = [f"--project={self.args.project}"] if self.args.project else []
        return ["gcloud", "compute", "tpus", *kind, *words, f"--zone={self.args.zone}", *project]

    def ssh(self, remote: str, worker: str = "all") -> list[str]:
        """Runs the shell command `remote` on one worker, or on all of them at once."""
        return self.gcloud("ssh", self.args.name, f"--worker={worker}", f"--command={remote}")

    def state(self) -> str:
        """READY/ACTIVE, a LOST state, MISSING, or a transitional state."""
        field = "state.state" if self.args.queued else "state"
        answer = self.query(self.gcloud("describe", self.args.name, f"--format=value({field})"))
        return answer or "MISSING"

    def exit_status(self) -> int | None:
        """The training process's exit status on worker 0, or None while it runs."""
        answer = self.query(self.ssh(f"cat {RUN}/exit_status 2>/dev/null || true", worker="0"))
        last = answer.split()[-1] if answer else ""
        return int(last) if last.isdigit() else None

    # -- commands ---------------------------------------------------------------------------

    def create(self) -> None:
        """Creates the TPU unless it exists, then waits until it is ready."""
        a = self.args
        if self.state() != "MISSING":
            self.note(f"{a.name} exists: reusing it")
        else:
            version = a.version or runtime_version(a.accelerator)
            options = [f"--accelerator-type={a.accelerator}", *(["--spot"] if a.spot else [])]
            if a.data_disk:
                options.append(f"--data-disk=source={a.data_disk},mode=read-only")
            options += a.create_arg
            if a.queued:
                options += [f"--node-id={a.name}", f"--runtime-version={version}"]
            else:
                options.append(f"--version={version}")
            self.call(self.gcloud("create", a.name, *options))
        self.wait_ready()

    def wait_ready(self) -> None:
        """Polls until the TPU is READY (a queued resource ACTIVE); fails if it is lost."""
        if self.dry_run:
            self.note("then poll the state above until it is READY (ACTIVE for queued resources)")
            return
        while (state := self.state()) not in READY:
            if state in LOST:
                raise SystemExit(f"{self.args.name} is {state}; `delete` it and create again")
            self.note(f"{self.args.name} is {state}; waiting")
            self.sleep(self.args.poll)

    def setup(self) -> None:
        """Copies this checkout (tracked and untracked, not ignored, files) to every worker
        and installs it with jax[tpu] and the gcs extra into a Python 3.11 virtual environment
        there."""
        a = self.args
        archive = f"/tmp/sara_jax-{a.name}.tar.gz"
        self.local(
            f"git ls-files -z --cached --others --exclude-standard"
            f" | tar -czf {shlex.quote(archive)} --null -T -"
        )
        scp = self.gcloud("scp", archive, f"{a.name}:sara_jax.tar.gz", "--worker=all")
        self.call(scp)
        install = [
            f"rm -rf {CODE}",
            f"mkdir -p {CODE}",
            f"tar -xzf ~/sara_jax.tar.gz -C {CODE}",
            # Older pips ignore the variable; newer ones need it to install into --user.
            "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet --upgrade uv",
            f"{UV} venv --allow-existing --python 3.11 {VENV}",
            # The gs:// workdir needs the gcs extra (no TensorFlow to reach Cloud Storage).
            f'{UV} pip install --python {VENV}/bin/python --upgrade "jax[tpu]" -e {CODE}"[gcs]"',
        ]
        self.call(self.ssh(f"{IDLE_CHECK}; " + " && ".join(install)))

    def start(self) -> None:
        """Starts training on every worker, detached from the ssh session; worker 0's log is
        the one with the metrics (`logs`)."""
        a = self.args
        if not a.workdir.startswith("gs://"):
            raise SystemExit(
                f"--workdir={a.workdir}: use a gs:// path, which every worker shares and which "
                "outlives the TPU (a local directory would split the run across workers)"
            )
        main = ["-m", "sara_jax.main", f"--config={a.config}", f"--workdir={a.workdir}"]
        # The state's layout over the slice's chips (docs/pods.md, "Which layout"), unless
        # the overrides name one.
        layout = [f"--config.train.state_sharding={a.state_sharding}"]
        if any(arg.startswith("--config.train.state_sharding") for arg in a.rest):
            layout = []
        train = shlex.join([*main, "--distributed", *layout, *a.rest])
        job = f"{VENV}/bin/python {train}; echo $? > {RUN}/exit_status"
        # The bash wrapper records the exit status; setsid detaches it from the ssh session.
        launch = [
            f"mkdir -p {RUN}",
            f"rm -f {RUN}/exit_status",
            f"cd {CODE}",
            f"(nohup setsid bash -c {shlex.quote(job)} > {RUN}/train.log 2>&1 < /dev/null &"
            f" echo $! > {RUN}/pid)",
        ]
        self.call(self.ssh(f"{IDLE_CHECK}; " + " && ".join(launch)))

    def up(self) -> None:
        """create, setup, run, and with --watch, watch."""
        self.create()
        self.setup()
        self.start()
        if self.args.watch:
            self.watch()

    def watch(self) -> None:
        """Polls every --poll seconds. A preempted or vanished TPU is deleted, created again,
        set up and restarted (the run resumes from the workdir); a run that has exited ends
        the watch, with an error if it failed."""
        a = self.args
        if self.dry_run:
            self.note(f"every {a.poll} s: the state query above; if the TPU is lost:")
            self.recover()
            return
        while True:
            state = self.state()
            if state in LOST or state == "MISSING":
                self.note(f"{a.name} is {state}: recreating it; the run resumes from {a.workdir}")
                self.recover()
            elif state in READY and (status := self.exit_status()) is not None:
                # A preemption ends the run too (after a checkpoint); only a TPU that is still
                # there a poll later means the run itself ended.
                self.sleep(a.poll)
                if self.state() in READY:
                    if status != 0:
                        raise SystemExit(f"training exited with status {status}: see `logs`")
                    self.note("training finished")
                    return
                continue
            self.sleep(a.poll)

    def recover(self) -> None:
        """Deletes what is left of the TPU and does create, setup and run again."""
        if self.dry_run or self.state() != "MISSING":
            self.delete()
        self.create()
        self.setup()
        self.start()

    def status(self) -> None:
        """Prints the TPU's state and, if it is up, whether training runs or how it ended."""
        state, detail = self.state(), ""
        if state in READY:
            code = self.exit_status()
            detail = ", training" if code is None else f", training exited with status {code}"
        self.note(f"{self.args.name}: {state}{detail}")

    def logs(self) -> None:
        """Follows worker 0's training log (process 0 writes the metrics)."""
        self.call(self.ssh(f"tail -n 100 -F {RUN}/train.log", worker="0"))

    def stop(self) -> None:
        """SIGTERM to the run on every worker: it saves a checkpoint and exits."""
        # To the wrapper's child, the Python process: the wrapper lives on to record the status.
        self.call(self.ssh(f"pkill -TERM -P $(cat {RUN}/pid)"))

    def exec(self) -> None:
        """Runs the command given after `--` on every worker."""
        self.call(self.ssh(shlex.join(self.args.rest)))

    def delete(self) -> None:
        """Deletes the TPU VM, or the queued resource together with its node."""
        extra = ["--force"] if self.args.queued else []
        self.call(self.gcloud("delete", self.args.name, *extra, "--quiet"))


def runtime_version(accelerator: str) -> str:
    """The TPU software version for an accelerator type such as v5p-32 or v5litepod-16."""
    family = accelerator.rsplit("-", 1)[0]
    if family not in RUNTIME_VERSIONS:
        raise SystemExit(
            f"--accelerator={accelerator}: no default software version for {family!r} "
            f"(known: {', '.join(RUNTIME_VERSIONS)}); pass --version"
        )
    return RUNTIME_VERSIONS[family]


COMMANDS = {
    "create": "create the TPU (or reuse it) and wait until it is ready",
    "setup": "copy this checkout to every worker and install it with jax[tpu]",
    "run": "start training on all workers (detached; resumes from --workdir)",
    "up": "create + setup + run (+ watch with --watch)",
    "watch": "recreate, reinstall and restart after preemption until the run ends",
    "status": "the TPU's state and whether training runs",
    "logs": "follow worker 0's training log",
    "stop": "SIGTERM the run on all workers: it checkpoints and exits",
    "exec": "run the command after -- on all workers",
    "delete": "delete the TPU (and its queued resource)",
}


def parse(argv: list[str]) -> argparse.Namespace:
    epilog = "\n".join(f"  {name:8} {what}" for name, what in COMMANDS.items())
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s COMMAND --name=NAME --zone=ZONE [options] [-- overrides or command]",
        epilog="commands:\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--name", required=True, help="TPU (and queued resource) name")
    p.add_argument("--zone", required=True, help="e.g. us-east5-a; it must offer the TPU type")
    p.add_argument("--accelerator", help="e.g. v4-32, v5litepod-16, v5p-32, v6e-16")
    p.add_argument("--version", help="TPU software version (default: by accelerator family)")
    p.add_argument("--project", help="Google Cloud project (default: gcloud's)")
    p.add_argument("--queued", action="store_true", help="request through a queued resource")
    p.add_argument("--spot", action="store_true", help="Spot TPU: cheaper, may be preempted")
    p.add_argument("--data-disk", help="projects/P/zones/Z/disks/D, attached read-only")
    p.add_argument("--create-arg", action="append", default=[], help="extra create flag")
    p.add_argument("--workdir", help="gs://bucket/path for checkpoints and logs")
    p.add_argument("--config", default="configs/sit_xl.py", help="config file[:variant]")
    p.add_argument(
        "--state-sharding",
        default="fsdp",
        choices=("replicated", "weight_update", "fsdp"),
        help="train.state_sharding on the slice (default fsdp: docs/pods.md)",
    )
    p.add_argument("--watch", action="store_true", help="with up: watch afterwards")
    p.add_argument("--poll", type=int, default=120, help="seconds between state checks")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    # Everything after `--` is passed on: config overrides, or exec's command.
    rest = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    args = p.parse_args(argv)
    args.rest = rest
    if args.command in ("create", "up", "watch") and not args.accelerator:
        p.error(f"{args.command} needs --accelerator (e.g. v5p-32)")
    if args.command in ("run", "up", "watch") and not args.workdir:
        p.error(f"{args.command} needs --workdir=gs://...")
    if args.command == "exec" and not args.rest:
        p.error("exec needs a command after --")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    pod = Pod(args)
    method = "start" if args.command == "run" else args.command
    try:
        getattr(pod, method)()
    except subprocess.CalledProcessError as error:
        sys.exit(f"failed with status {error.returncode}: {shlex.join(error.cmd)}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
