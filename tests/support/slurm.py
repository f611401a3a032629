"""A private Slurm cluster for the tests: its own munged, slurmctld and one slurmd per node, all on loopback,
with fake GPUs (character devices, as gres.conf demands), every daemon stopped by PID. Debian's packages
(`slurmctld slurmd slurm-client munge`, installed by scripts/test) and root (for mknod) are what it needs;
`../shared/reference/clusters.md` has the settings and why each is there."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")
START_SECONDS = 60

REQUIRE_SLURM = os.environ.get("CORRAL_REQUIRE_SLURM") == "1"
SKIP_REASON = "SLURM NOT AVAILABLE"


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    absent = [tool for tool in NEEDED if shutil.which(tool) is None]
    if absent:
        return (
            f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root (fake GPUs are character devices made with mknod)"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (the munge package makes it)"
    return None


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SlurmCluster:
    """`nodes` nodes of `gpus` fake GPUs each, named n1, n2, ...; `env` selects it for Slurm's commands."""

    def __init__(self, root: Path, *, nodes: int = 1, gpus: int = 2, cpus: int | None = None) -> None:
        self.root = root
        self.names = [f"n{index + 1}" for index in range(nodes)]
        self.gpus = gpus
        self.cpus = cpus or os.cpu_count() or 2
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.sock"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged wants every directory above its socket searchable
        self._start_munge()
        self._write_config()
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for name in self.names:
            self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-N", name, "-f", str(self.conf)])
        self.wait_for(lambda: self.idle_nodes() == set(self.names), "every node idle")

    def _start_munge(self) -> None:
        directory = self.munge_socket.parent
        directory.mkdir(mode=0o755, exist_ok=True)
        key = directory / "munge.key"
        shutil.copyfile("/etc/munge/munge.key", key)
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",  # root, and a socket directory munged would otherwise find too open
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={directory / 'munged.pid'}",
                f"--log-file={directory / 'munged.log'}",
                f"--seed-file={directory / 'munged.seed'}",
            ],
        )
        self.wait_for(self.munge_socket.exists, "munged's socket")

    def _write_config(self) -> None:
        devices = self.root / "dev"
        devices.mkdir(exist_ok=True)
        for index in range(self.gpus):
            device = devices / f"nvidia{index}"
            if not device.exists():
                os.mknod(
                    device, 0o666 | 0o020000, os.makedev(195, index)
                )  # S_IFCHR: a regular file makes the node INVAL
        memory = 4000 * self.cpus
        host = socket.gethostname()
        node_lines = [
            f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname={host} Port={_free_port()} CPUs={self.cpus} "
            f"RealMemory={memory} Gres=gpu:fake:{self.gpus} State=UNKNOWN"
            for name in self.names
        ]
        gpu_files = f"nvidia[0-{self.gpus - 1}]" if self.gpus > 1 else "nvidia0"
        (self.root / "gres.conf").write_text(
            "".join(f"NodeName={name} Name=gpu Type=fake File={devices}/{gpu_files}\n" for name in self.names)
        )
        state = self.root / "state"
        state.mkdir(exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName=corral{os.getpid()}",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={state}",
                    f"SlurmdSpoolDir={self.root}/spool-%n",
                    f"SlurmctldPidFile={self.root}/slurmctld.pid",
                    f"SlurmdPidFile={self.root}/slurmd-%n.pid",
                    f"SlurmctldLogFile={self.root}/slurmctld.log",
                    f"SlurmdLogFile={self.root}/slurmd-%n.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "DefMemPerCPU=1000",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    f"JobCompType=jobcomp/filetxt\nJobCompLoc={self.root}/jobcomp.txt",
                    "ReturnToService=2",
                    "GresTypes=gpu",
                    "SchedulerParameters=bf_interval=1",
                    "KillWait=3",  # a cancelled job's shell gets SIGKILL this long after SIGTERM
                    "MinJobAge=600",  # finished jobs stay known to scontrol for the length of a test
                    "MpiDefault=none",
                    "SlurmdTimeout=30",
                    *node_lines,
                    f"PartitionName=gpu Nodes={','.join(self.names)} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / f"{name}.out").open("ab")
        self.daemons[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def slurm(self, *arguments: str, check: bool = True) -> str:
        result = subprocess.run(arguments, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(arguments)}: {result.returncode} {result.stderr.strip()}")
        return result.stdout

    def idle_nodes(self) -> set[str]:
        output = self.slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return {line.split()[0] for line in output.splitlines() if line.split()[1:] == ["idle"]}

    def node_state(self, name: str) -> str:
        return self.slurm("sinfo", "-h", "-n", name, "-N", "-o", "%t").strip()

    def job_state(self, job_id: str) -> str:
        for field in self.slurm("scontrol", "-o", "show", "job", job_id).split():
            if field.startswith("JobState="):
                return field.removeprefix("JobState=")
        return ""

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, daemon in self.daemons.items():
                if daemon.poll() is not None:
                    log = (self.root / f"{name}.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited ({daemon.returncode}) waiting for {what}:\n{log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test Slurm cluster: no {what} after {timeout:.0f} s")
            time.sleep(0.2)

    def stop_controller(self) -> None:
        """slurmctld gone, as in a controller restart or failover; jobs on the nodes go on running."""
        daemon = self.daemons.pop("slurmctld")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)

    def start_controller(self) -> None:
        """slurmctld back from its saved state, answering again."""
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self.wait_for(lambda: self.slurm("scontrol", "ping", check=False).count("is UP") > 0, "slurmctld answering")

    def stop(self) -> None:
        """Cancel what is left, then stop every daemon by PID, slurmds first."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.slurm("scancel", "--full", "--user=root", check=False)
        for name in reversed(list(self.daemons)):
            daemon = self.daemons[name]
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self.daemons.clear()


@contextmanager
def running_cluster(root: Path, *, nodes: int = 1, gpus: int = 2) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(root, nodes=nodes, gpus=gpus)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
