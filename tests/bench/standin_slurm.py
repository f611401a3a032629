"""A stand-in Slurm that answers at once: `sbatch`, `squeue`, `scontrol`, `scancel` and `sinfo` as shell scripts
over one directory (a file per job, holding its squeue line), so a benchmark measures the agent and not a
controller. Jobs run from submission until cancelled; they never finish. Only the options Corral's Slurm
executor passes are understood (evals/executors/slurm.py)."""

import os
from pathlib import Path

SCRIPTS = {
    "sbatch": r"""
name= comment=
for argument in "$@"; do
  case "$argument" in
    --job-name=*) name=${argument#--job-name=} ;;
    --comment=*) comment=${argument#--comment=} ;;
  esac
done
id=$(( $(cat "$STANDIN_SLURM/next") + 1 ))
echo "$id" > "$STANDIN_SLURM/next"
echo "$id|$name|RUNNING|None|$comment|" > "$STANDIN_SLURM/jobs/$id"
echo "$id"
""",
    "squeue": r"""
name=
previous=
for argument in "$@"; do
  [ "$previous" = "--name" ] && name=$argument
  previous=$argument
done
if [ -n "$name" ]; then  # -O JobID:|,State:|,Reason:|
  cat "$STANDIN_SLURM/jobs"/* 2>/dev/null | awk -F'|' -v name="$name" '$2 == name {print $1 "|" $3 "|" $4 "|"}'
else  # -O JobID:|,Name:|,State:|,Reason:|,Comment:|
  cat "$STANDIN_SLURM/jobs"/* 2>/dev/null
fi
exit 0
""",
    "scontrol": r"""
id=${@: -1}
[ -e "$STANDIN_SLURM/jobs/$id" ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
IFS='|' read -r job name state reason comment < "$STANDIN_SLURM/jobs/$id"
echo "JobId=$job JobName=$name JobState=$state Reason=$reason"
""",
    "scancel": r"""
for id in "$@"; do rm -f "$STANDIN_SLURM/jobs/$id"; done
""",
    "sinfo": r"""
for node in $(seq 1 "$STANDIN_NODES"); do echo "node$node|gpu:fake:$STANDIN_GPUS|gpu:fake:0|idle|"; done
""",
}


def install(root: Path, *, nodes: int, gpus_per_node: int) -> dict[str, str]:
    """Writes the commands under `root`; returns the environment that puts them first on PATH."""
    bin_dir = root / "bin"
    (root / "jobs").mkdir(parents=True)
    bin_dir.mkdir()
    (root / "next").write_text("1000\n")
    for name, body in SCRIPTS.items():
        script = bin_dir / name
        script.write_text("#!/bin/bash\nset -u\n" + body.lstrip())
        script.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_SLURM": str(root),
        "STANDIN_NODES": str(nodes),
        "STANDIN_GPUS": str(gpus_per_node),
    }


def jobs(root: Path) -> int:
    """How many jobs the stand-in holds."""
    return sum(1 for _ in (root / "jobs").iterdir())
