"""Slurm through its own commands (`sbatch`, `squeue`, `scontrol`, `scancel`, `sinfo`), read as text: Slurm 22.05's
JSON output ignores filters and misreports exit codes (`../shared/reference/clusters.md`)."""

import getpass
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

from corral_runner.executors.base import (
    JOB_PREFIX,
    EngineError,
    EngineJob,
    EngineUnreachable,
    Pace,
    Phase,
    Submission,
    job_name,
    shapes,
)
from corral_runner.executors.settings import SlurmExecutor
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import Accelerator

log = logging.getLogger("corral.runner.slurm")
COMMAND_SECONDS = 60
# squeue's %T (and scontrol's JobState) to Corral's view. Submitted with --no-requeue, so Slurm never runs a job
# twice: a preempted job is over for Slurm, and the agent hands it back to Corral's queue.
PHASES: dict[str, Phase] = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "preempted",
    "REQUEUE_HOLD": "preempted",
    "REQUEUE_FED": "preempted",
    "RESV_DEL_HOLD": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    "RESIZING": "running",
    "COMPLETED": "succeeded",
    "PREEMPTED": "preempted",
    "FAILED": "failed",
    "CANCELLED": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "SPECIAL_EXIT": "failed",
    "REVOKED": "failed",
}
UNAVAILABLE = re.compile(r"down|drain|drng|fail|inval|maint|unk|boot|resv|powered|npc|futr|\*")
GRES = re.compile(r"(\w+)(?::([\w.-]+))?:(\d+)")


# What Slurm's commands say when the controller itself does not answer (restarting, unreachable, overloaded).
UNREACHABLE = re.compile(
    r"unable to contact slurm controller|socket timed out|connection refused|zero bytes were transmitted|"
    r"slurm_load_(jobs|partitions|node)\w* error|slurmctld.*(down|not responding)|communication connection failure",
    re.IGNORECASE,
)


class SlurmError(EngineError):
    """A Slurm command refused what it was asked."""


class SlurmUnreachable(EngineUnreachable, SlurmError):
    """Slurm's controller did not answer, or its command did not return in time."""


class Slurm:
    name = "Slurm"

    def __init__(self, settings: SlurmExecutor, owner: str = "") -> None:
        self.settings = settings
        self.owner = owner  # the runner's id, in every job's comment: another runner's jobs are not ours
        self.user = getpass.getuser()
        self.pace = Pace.of_cluster(settings)

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnreachable(f"{command[0]}: {exc}") from exc
        if check and done.returncode != 0:
            said = f"{command[0]} exited {done.returncode}: {done.stderr.strip()[-500:]}"
            raise (SlurmUnreachable if UNREACHABLE.search(done.stderr) else SlurmError)(said)
        return done

    def _nodes(self) -> list[list[str]]:
        partition = ["-p", self.settings.partition] if self.settings.partition else []
        output = self._run("sinfo", "-h", "-N", *partition, "-O", "NodeList:|,Gres:|,GresUsed:|,StateCompact:|").stdout
        seen: set[str] = set()
        rows = []
        for line in output.splitlines():
            fields = line.split("|")
            if len(fields) >= 4 and fields[0] not in seen:  # a node in two partitions is listed twice
                seen.add(fields[0])
                rows.append(fields)
        return rows

    def _devices(self, gres: str) -> tuple[str, int, int] | None:
        """(kind, memory, count) of a node's mapped GRES, or None when the site's name is not in gres_kinds."""
        for match in GRES.finditer(gres):
            name, gres_type, count = match.groups()
            for key in (f"{name}:{gres_type}" if gres_type else name, name):
                if key in self.settings.gres_kinds:
                    kind = self.settings.gres_kinds[key]
                    return kind.kind, kind.memory_bytes, int(count)
        return None

    def node_shapes(self) -> list[Accelerator]:
        per_node = []
        for node, gres, _used, _state in (row[:4] for row in self._nodes()):
            devices = self._devices(gres)
            if devices is None:
                log.warning("node %s: GRES %r is not in gres_kinds; it is not offered", node, gres)
                continue
            per_node.append(devices)
        return shapes(per_node)

    def free_now(self) -> list[Accelerator]:
        per_node = []
        for _node, gres, used, state in (row[:4] for row in self._nodes()):
            devices = self._devices(gres)
            if devices is None or UNAVAILABLE.search(state) or state in ("alloc", "comp"):
                continue
            taken = self._devices(used.split("(")[0])
            kind, memory, count = devices
            per_node.append((kind, memory, count - (taken[2] if taken else 0)))
        return shapes(per_node)

    def jobs(self) -> dict[str, EngineJob]:
        output = self._run(
            "squeue", "-h", "-t", "all", "-u", self.user, "-O", "JobID:|,Name:|,State:|,Reason:|,Comment:|"
        ).stdout
        found = {}
        for line in output.splitlines():
            fields = line.split("|")
            if len(fields) < 5 or not fields[1].startswith(JOB_PREFIX):
                continue
            job_id, name, state, reason, comment = fields[:5]
            if comment != self._comment():
                continue
            found[name] = self._job(name, job_id, state, reason)
        return found

    def _job(self, name: str, job_id: str, state: str, reason: str) -> EngineJob:
        phase = PHASES.get(state.split()[0].rstrip("+"), "failed")
        shown = "" if reason in ("None", "(null)") else reason
        if phase in ("failed", "succeeded", "preempted"):
            shown = state if not shown or shown == "NonZeroExitCode" else f"{state} ({shown})"
        return EngineJob(name=name, ref=f"slurm:{job_id}", phase=phase, reason=shown, owner=self.owner)

    def find(self, job: EngineJob, directory: JobDirectory) -> EngineJob:
        job_id = job.ref.removeprefix("slurm:")
        done = self._run("scontrol", "-o", "show", "job", job_id, check=False)
        if done.returncode != 0:  # past MinJobAge: Slurm has forgotten it
            return EngineJob(name=job.name, ref=job.ref, phase="gone", reason="no longer known to Slurm")
        fields = dict(field.split("=", 1) for field in done.stdout.split() if "=" in field)
        if fields.get("JobName") != job.name:
            return EngineJob(name=job.name, ref=job.ref, phase="gone", reason="no longer known to Slurm")
        return self._job(job.name, job_id, fields.get("JobState", ""), fields.get("Reason", ""))

    def _comment(self) -> str:
        return f"corral-runner:{self.owner}"

    def _existing(self, name: str) -> EngineJob | None:
        output = self._run("squeue", "-h", "-u", self.user, "--name", name, "-O", "JobID:|,State:|,Reason:|").stdout
        for line in output.splitlines():
            job_id, state, reason = line.split("|")[:3]
            job = self._job(name, job_id, state, reason)
            if job.phase in ("pending", "running"):
                return job
        return None

    def submit(self, job: Submission) -> EngineJob:
        name = job_name(job.attempt_id)
        existing = self._existing(name)
        if existing is not None:
            log.info("attempt %s already has Slurm job %s; adopting it", job.attempt_id, existing.ref)
            return existing
        script = self.batch_script(job)
        settings = self.settings
        nodes = job.placement.pipeline_parallel
        command = [
            "sbatch",
            "--parsable",
            f"--job-name={name}",
            f"--comment={self._comment()}",
            "--no-requeue",  # Corral owns retries: Slurm must never re-run lm-eval behind its back
            f"--time={settings.time_limit_minutes}",
            f"--nodes={nodes}",
            "--ntasks-per-node=1",
            f"--chdir={job.directory.path}",
            f"--output={job.directory.engine_log}",
            # These variables only (and Slurm's own SLURM_*), never the agent's whole environment: sbatch's default
            # (ALL) would hand the compute node whatever the shell that started the agent held.
            f"--export={','.join(sorted(job.env))}",
        ]
        if job.gpus_per_node:
            command.append(f"--gpus-per-node={job.gpus_per_node}")
        if nodes > 1:
            command.append("--exclusive")  # whole nodes: Ray and vLLM's pipeline stages own them
        for option, value in (("partition", settings.partition), ("account", settings.account), ("qos", settings.qos)):
            if value:
                command.append(f"--{option}={value}")
        command += [*settings.extra_args, str(script)]
        try:
            env = {name: value for name, value in os.environ.items() if name.startswith("SLURM_")} | job.env
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_SECONDS, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(f"sbatch: {exc}") from exc
        if done.returncode != 0:
            raise SlurmError(f"sbatch refused the job: {done.stderr.strip()[-1000:]}")
        job_id = done.stdout.strip().split(";")[0]  # "id;cluster" on a multi-cluster site
        return EngineJob(name=name, ref=f"slurm:{job_id}", phase="pending", reason="submitted", owner=self.owner)

    def batch_script(self, job: Submission) -> Path:
        """The job's batch script, beside its spec: the setup lines, then the one-job entry point."""
        settings = self.settings
        entry = [settings.python, "-m", "corral_runner.cluster_job", str(job.directory.spec)]
        if settings.container_image:
            mounts = f"{settings.work_dir}:{settings.work_dir}"
            entry = [
                "srun",
                "--ntasks=1",
                f"--container-image={settings.container_image}",
                f"--container-mounts={mounts}",
                *entry,
            ]
        lines = [
            "#!/bin/bash",
            f"# corral-runner: attempt {job.attempt_id}",
            "set -eo pipefail",
            *settings.setup,
            f"exec {shlex.join(entry)}",
            "",
        ]
        script = job.directory.script
        script.write_text("\n".join(lines))
        script.chmod(0o755)
        return script

    def cancel(self, job: EngineJob) -> None:
        self._run("scancel", job.ref.removeprefix("slurm:"), check=False)

    def last_words(self, job: EngineJob, directory: JobDirectory) -> str:
        """The batch script's own output (Ray, a setup line that failed): what ran before lm-eval's log began."""
        try:
            return directory.engine_log.read_bytes()[-2000:].decode("utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        return None  # the jobs run on in Slurm: a restarted agent adopts them
