"""What the SLURM cluster says: its partitions and nodes (sinfo), the launcher's jobs in the queue (squeue), and
whether a request fits before anything is submitted.

The launcher marks its jobs by their comment: `pcl:` followed by the run_keys of each array task, tasks separated by
`,`, runs packed in one task (--runs-per-gpu) joined by `+` (e.g. `pcl:1f..,9a..+c3..`). squeue lists every array
task with its task id, so every queued or running run_key is known without any file of the launcher's own.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

COMMENT_PREFIX = "pcl:"
#: squeue states of a job that will still run or runs now
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                         "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})
QUERY_TIMEOUT_S = 30
#: what to do when the controller does not answer (appended to a failed or silent sinfo / squeue)
CONTROLLER_HINT = ("is a SLURM controller reachable? `scontrol ping` says; on this machine start the local cluster "
                   "with `bash slurm/local_cluster.sh start`, or run without SLURM with --executor local")


class ClusterError(RuntimeError):
    """The cluster cannot be used, or refuses a request; the message names the value and what the cluster allows."""


@dataclass
class Partition:
    """One partition: its largest node (CPUs, memory in MB, GPUs from GRES) and its time limit."""

    name: str
    default: bool = False
    max_cpus: int = 0
    max_mem_mb: int = 0
    max_gpus: int = 0
    time_limit: str = "infinite"
    nodes: int = 0


@dataclass
class QueuedJob:
    """A run_key's job in the queue: SLURM job id (`123_4` for array task 4), state, and the run_keys of the task."""

    job_id: str
    state: str
    run_keys: list[str] = field(default_factory=list)


def _run(args: list[str]) -> str:
    """The stdout of a SLURM client command; ClusterError (with what to do) when it is missing, silent or fails."""
    return _Query(args).output()


class _Query:
    """A SLURM client command started now and read later, so that the controller's answer (or its silence, up to
    QUERY_TIMEOUT_S) overlaps other work: status.py and launch_all.py start squeue before reading the records."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.started = time.monotonic()
        try:
            self.proc: subprocess.Popen[str] | None = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        except FileNotFoundError:
            self.proc = None

    def output(self) -> str:
        args = self.args
        if self.proc is None:
            raise ClusterError(f"{args[0]} is not on PATH: this machine is no SLURM client (install SLURM, or use "
                               "--executor local)")
        try:
            stdout, stderr = self.proc.communicate(
                timeout=max(0.0, QUERY_TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise ClusterError(f"{' '.join(args)} did not answer within {QUERY_TIMEOUT_S} s: {CONTROLLER_HINT}") \
                from None
        if self.proc.returncode != 0:
            detail = (stderr or stdout).strip().splitlines()
            raise ClusterError(f"{' '.join(args[:2])} failed: {detail[-1] if detail else f'exit {self.proc.returncode}'} "
                               f"({CONTROLLER_HINT})")
        return stdout


def require_sbatch() -> str:
    """The path of sbatch; ClusterError when SLURM's client commands are missing."""
    path = shutil.which("sbatch")
    if path is None:
        raise ClusterError("sbatch is not on PATH: this machine cannot submit to SLURM (run on the cluster's login "
                           "node, start the local cluster with `bash slurm/local_cluster.sh start`, or use "
                           "--executor local)")
    return path


def _gpus(gres: str) -> int:
    """GPUs in a GRES string such as `gpu:4`, `gpu:a100:8(S:0-1)`, `(null)`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isascii() and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def partitions() -> dict[str, Partition]:
    """Every partition of the cluster with its largest node (sinfo, one line per node and partition)."""
    out: dict[str, Partition] = {}
    for line in _run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l"]).splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, mem, gres, limit = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        part = out.setdefault(name, Partition(name, default=default, time_limit=limit))
        part.nodes += 1
        part.max_cpus = max(part.max_cpus, int(cpus.rstrip("+") or 0))
        part.max_mem_mb = max(part.max_mem_mb, int(mem.rstrip("+") or 0))
        part.max_gpus = max(part.max_gpus, _gpus(gres))
    return out


def mem_mb(value: str) -> int:
    """SLURM memory ("16G", "4000M", "4000" = MB) in MB."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    if value[-1].upper() in units:
        return int(float(value[:-1]) * units[value[-1].upper()])
    return int(value)


def check_request(resources: Iterable[Mapping[str, Any]], parts: Mapping[str, Partition]) -> None:
    """ClusterError for the first request no node of its partition can satisfy (before anything is submitted).

    Each request is a ClusterOptions.resources_for dict (partition, cpus_per_task, mem, gpus_per_task, tasks, ...);
    a data-parallel run's tasks share one node.
    """
    if not parts:
        raise ClusterError("the cluster has no partition (sinfo lists none)")
    default = next((p.name for p in parts.values() if p.default), None)
    for res in resources:
        name = res.get("partition") or default
        if name is None:
            raise ClusterError(f"no partition given and the cluster has no default; partitions: {', '.join(parts)}")
        if name not in parts:
            raise ClusterError(f"partition {name!r} does not exist on this cluster; partitions: "
                               f"{', '.join(parts)}")
        part = parts[name]
        tasks = res.get("tasks", 1)
        per_node = f" x {tasks} tasks (gpus={tasks})" if tasks > 1 else ""
        if res["cpus_per_task"] * tasks > part.max_cpus:
            raise ClusterError(f"cpus_per_task={res['cpus_per_task']}{per_node} is more than any node of partition "
                               f"{name!r} has (at most {part.max_cpus} CPUs per node)")
        if res.get("mem") and mem_mb(res["mem"]) > part.max_mem_mb:
            raise ClusterError(f"mem={res['mem']} is more than any node of partition {name!r} has (at most "
                               f"{part.max_mem_mb} MB per node)")
        if res["gpus_per_task"] * tasks > part.max_gpus:
            allowed = f"at most {part.max_gpus} GPUs per node" if part.max_gpus else "no GPUs (no gpu GRES)"
            raise ClusterError(f"gpus_per_task={res['gpus_per_task']}{per_node} is more than any node of partition "
                               f"{name!r} has ({allowed}); set gpus_per_task = 0 in the profile for CPU nodes")


def encode_comment(tasks: list[list[str]]) -> str:
    """The job comment for array tasks, each a list of run_keys (one, or several packed on one GPU)."""
    return COMMENT_PREFIX + ",".join("+".join(keys) for keys in tasks)


def decode_comment(comment: str, task_id: str | None) -> list[str]:
    """The run_keys of one array task (task_id None or "N/A": a job that is no array) from a job comment."""
    if not comment.startswith(COMMENT_PREFIX):
        return []
    tasks = comment[len(COMMENT_PREFIX):].split(",")
    if task_id in (None, "", "N/A"):
        return tasks[0].split("+") if len(tasks) == 1 else []
    try:
        return tasks[int(task_id)].split("+")
    except (ValueError, IndexError):
        return []


def queued_runs() -> dict[str, QueuedJob]:
    """run_key -> its job for every launcher job that is pending or running (squeue, array tasks one by one)."""
    return QueueSnapshot().result()[0]


class QueueSnapshot:
    """One squeue of the whole queue, started now and read with `result()`: (run_key -> its QueuedJob for every
    launcher job pending or running, the ids of every live job). One call answers both questions, and its wait
    overlaps reading the records."""

    def __init__(self) -> None:
        self._query = _Query(["squeue", "-h", "-r", "-o", "%i|%K|%T|%k"])

    def result(self) -> tuple[dict[str, QueuedJob], set[str]]:
        runs: dict[str, QueuedJob] = {}
        live: set[str] = set()
        for line in self._query.output().splitlines():
            fields = line.strip().split("|", 3)
            if len(fields) != 4 or fields[2] not in LIVE_STATES:
                continue
            job_id, task_id, state, comment = fields
            live.add(job_id)
            if comment.startswith(COMMENT_PREFIX):
                keys = decode_comment(comment, task_id)
                for key in keys:
                    runs[key] = QueuedJob(job_id, state, keys)
        return runs, live


def live_job_ids() -> set[str]:
    """Ids (`123` or `123_4`) of every job in the queue that is pending or running."""
    ids = set()
    for line in _run(["squeue", "-h", "-r", "-o", "%i|%T"]).splitlines():
        job_id, _, state = line.strip().partition("|")
        if state in LIVE_STATES:
            ids.add(job_id)
    return ids
