"""The job a SLURM array task runs: one run config (or N packed on one GPU) through pcl.tracking, checkpointable.

On SLURM's pre-timeout signal (USR2, submitit's) or a preemption/cancel (TERM), the tracking layer stops the run at
the next step, keeps the last epoch's checkpoint, records the attempt PREEMPTED and hands the signal on; submitit's
USR2 handler then calls `RunJob.checkpoint` and requeues the job, and the requeued job resumes from the checkpoint
(same run_key -> same checkpoint folder). A TERM (scancel, `scontrol requeue`, a preemption by SLURM) ends the job;
SLURM requeues it or the next launch resubmits it. The MongoDB URL is read from $PCL_MONGO_URL in the job's
environment (sbatch passes the submitter's environment on): it is never pickled and never on a command line.

`python -m slurm.jobs` (a JSON job spec on stdin) is the worker process of `--runs-per-gpu N`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import submitit

ROOT = Path(__file__).resolve().parents[1]

LEDGER_DIR = "slurm"  # under results_dir: <run_key>.json = the run's latest job id and log paths
TEACHER_POLL_S = 10.0


REFUSED = "REFUSED"  # the ledger state of a run its job refused before it started (bad data, ...): not resubmitted


def refused_config(cfg: Mapping[str, Any]) -> str:
    """What a refusal applies to: the whole run config (infra keys such as data_root and device included), so a
    launch with other values is not held back by an older refusal."""
    from pcl.schema import canonical_json

    return canonical_json({k: v for k, v in cfg.items() if k not in ("label", "experiment")})


class RunFailed(RuntimeError):
    """A run ended FAILED (its record says why), or cannot start (teacher missing, too many failed attempts)."""


class RunPreempted(RuntimeError):
    """The job was stopped by a signal after its runs were recorded PREEMPTED (no requeue handler took over)."""


def ledger_path(results_dir: str | os.PathLike, run_key: str) -> Path:
    """Where the launcher and the job note a run_key's latest job (id, log paths)."""
    return Path(results_dir) / LEDGER_DIR / f"{run_key}.json"


def write_ledger(results_dir: str | os.PathLike, run_key: str, **entry: Any) -> None:
    """Update the run_key's ledger entry (atomic replace); fields: job_id, stdout, stderr, host, state, ..."""
    path = ledger_path(results_dir, run_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = read_ledger(results_dir, run_key)  # checked: a damaged entry is named and replaced
    old.update({k: v for k, v in entry.items() if v is not None}, run_key=run_key,
               updated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(old, sort_keys=True, indent=1))
    os.replace(tmp, path)


#: the fields of a ledger entry that commands read, and their types (pcl.results reads the file: no links, no FIFO)
_LEDGER_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str, int), "state": (str,), "error": (str,), "executor": (str,), "stdout": (str,), "stderr": (str,),
    "host": (str,), "updated": (str,), "run_key": (str,)}


def read_ledger(results_dir: str | os.PathLike, run_key: str) -> dict[str, Any]:
    """The run_key's ledger entry ({} when the launcher never submitted it). A ledger file is read from outside
    (a results folder may be shared): one that is not a JSON mapping, or a field of another type, is named once
    on stderr and left out."""
    from pcl import results

    path = ledger_path(results_dir, run_key)
    try:
        data = results.read_file(path.parent, path.name, limit=1 << 20)
        entry = {} if data is None else json.loads(data)
    except (results.RecordError, OSError, ValueError, RecursionError) as err:
        results.skip_record(path, err, what="ledger entry")
        return {}
    if not isinstance(entry, dict):
        results.skip_record(path, f"holds {type(entry).__name__}, not a mapping", what="ledger entry")
        return {}
    for key, types in _LEDGER_TYPES.items():
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            results.skip_record(f"{path} field {key}", f"is {type(value).__name__}", what="ledger entry")
            entry.pop(key)
    return entry


def _job_facts() -> dict[str, Any]:
    """Job id and log paths of the submitit job this process runs in ({} outside one)."""
    try:
        env = submitit.JobEnvironment()
        paths = env.paths
        return {"job_id": env.job_id, "stdout": str(paths.stdout), "stderr": str(paths.stderr)}
    except Exception:  # noqa: BLE001 - not in a submitit job (worker process, tests)
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")
        return {"job_id": job_id} if job_id else {}


def _sources(results_dir: str | os.PathLike, db_name: str | None) -> list[Any]:
    from pcl.tracking import open_store

    store = open_store(results_dir, None, db_name)  # MongoDB only from $PCL_MONGO_URL
    return store.sources()


def failed_attempts(sources: Sequence[Any], run_key: str) -> list[dict[str, Any]]:
    """The FAILED records of run_key (one per attempt, across stores)."""
    from pcl import results

    records = results.unique_attempts(list(results.iter_records(sources, {"config.run_key": run_key})))
    return [r for r in records if r.get("status") == "FAILED"]


def _wait_for_teacher(sources: Sequence[Any], cfg: Mapping[str, Any], wait_s: float) -> None:
    from pcl import results
    from pcl.tracking import stop_on_signals, stop_requested

    teacher = cfg["teacher_run_key"]
    deadline = time.monotonic() + wait_s
    with stop_on_signals():
        while not results.has_completed(sources, teacher):
            if time.monotonic() >= deadline or stop_requested():
                raise RunFailed(f"run {cfg['run_key']} ({cfg['label']}): its teacher run {teacher} has no COMPLETED "
                                f"record after waiting {wait_s:.0f} s (teacher_wait_s); launch the teacher first")
            time.sleep(min(TEACHER_POLL_S, max(0.1, deadline - time.monotonic())))


def run_one(cfg: Mapping[str, Any], results_dir: str, db_name: str | None = None, *, max_attempts: int = 3,
            teacher_wait_s: float = 3600.0, worker: bool = False) -> dict[str, Any]:
    """Train one run config as one tracked run (pcl.tracking.run_grid); {run_key, status, result} when it is done.

    Raises RunFailed (FAILED record, teacher missing, `max_attempts` FAILED records already, or refused before
    it started: a ConfigError such as missing or corrupt data, kept in the ledger as REFUSED) or RunPreempted (a
    stop signal ended the run PREEMPTED and no requeue handler took the signal). In a worker process
    (`worker=True`) the signal is not handed on: the parent job requeues.
    """
    from pcl import tracking

    key = cfg["run_key"]
    write_ledger(results_dir, key, host=socket.gethostname(), state="STARTED", **_job_facts())
    sources = _sources(results_dir, db_name)
    from pcl import results as records
    try:
        failed = failed_attempts(sources, key)
        if not records.has_completed(sources, key) and len(failed) >= max_attempts:
            trace = (failed[-1].get("fail_trace") or [""])[-1].strip().splitlines()
            raise RunFailed(f"run {key} ({cfg['label']}) has {len(failed)} FAILED attempts (max_attempts="
                            f"{max_attempts}): not started again; last error: {trace[-1] if trace else 'unknown'}")
        if cfg.get("teacher_run_key"):
            _wait_for_teacher(sources, cfg, teacher_wait_s)
    except records.StoreError as err:  # the store failed while read (MongoDB gone): not started, nothing recorded
        raise RunFailed(f"run {key} ({cfg['label']}) was not started: {err}") from None
    try:
        report = tracking.run_grid([dict(cfg)], results_dir=results_dir, db_name=db_name,
                                   experiment_name=cfg["experiment"] or None)
    except tracking.ConfigError as err:  # refused before it started (data missing or corrupt, ...): no record
        line = tracking.redact(" ".join(str(err).split()))
        write_ledger(results_dir, key, state=REFUSED, error=line, refused_config=refused_config(cfg))
        raise RunFailed(f"run {key} ({cfg['label']}) was refused before it started, nothing was recorded: {line}. "
                        "Fix it, then launch again with --retry-refused") from None
    outcome = report.runs[0] if report.runs else None
    status = outcome.status if outcome else "NOT STARTED"
    write_ledger(results_dir, key, state=status)
    if report.stop_signal is not None:
        sig = report.stop_signal
        if not worker and callable(signal.getsignal(sig)):
            tracking.redeliver(sig)  # submitit's USR2 handler: checkpoint() + requeue + exit; TERM: logged only
        raise RunPreempted(f"run {key} ({cfg['label']}) stopped by {signal.Signals(sig).name} and recorded "
                           f"{status}; its checkpoint stays for the next attempt")
    if status in ("COMPLETED", "SKIPPED"):
        return {"run_key": key, "status": status, "result": dict(outcome.result)}
    detail = (outcome.error or "").splitlines()[0][:500] if outcome and outcome.error else report.stopped_reason
    raise RunFailed(f"run {key} ({cfg['label']}) ended {status}: {detail}")


class RunJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles for one array task: run configs (plain dicts) and where records go.

    Checkpointable: submitit's USR2 handler calls `checkpoint()` (inherited: resubmit this same object) and
    requeues; the runs themselves resume from their checkpoints, so nothing else has to be saved.
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]], results_dir: str, db_name: str | None = None,
                 max_attempts: int = 3, teacher_wait_s: float = 3600.0) -> None:
        self.configs = [dict(c) for c in configs]
        self.results_dir = str(results_dir)
        self.db_name = db_name
        self.max_attempts = max_attempts
        self.teacher_wait_s = teacher_wait_s

    def __call__(self) -> list[dict[str, Any]] | None:
        """The runs' outcomes. In a multi-task job (a run with gpus > 1) task 0 runs them and the other tasks
        train what it announces (pcl.tracking.lead_or_follow); those return None."""
        from pcl import tracking

        return tracking.lead_or_follow(self._call)

    def _call(self) -> list[dict[str, Any]]:
        if len(self.configs) == 1:
            return [run_one(self.configs[0], self.results_dir, self.db_name, max_attempts=self.max_attempts,
                            teacher_wait_s=self.teacher_wait_s)]
        return self._run_packed()

    def _spec(self, cfg: Mapping[str, Any]) -> str:
        return json.dumps({"config": cfg, "results_dir": self.results_dir, "db_name": self.db_name,
                           "max_attempts": self.max_attempts, "teacher_wait_s": self.teacher_wait_s})

    def _run_packed(self) -> list[dict[str, Any]]:
        """N runs as N worker processes on this job's GPU; a stop signal goes to all of them, then requeues."""
        from pcl import tracking

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        procs = []
        for cfg in self.configs:
            proc = subprocess.Popen([sys.executable, "-m", "slurm.jobs"], stdin=subprocess.PIPE, env=env, text=True)
            proc.stdin.write(self._spec(cfg))
            proc.stdin.close()
            procs.append(proc)
        received: list[int] = []

        def forward(signum: int, frame: Any) -> None:
            received.append(signum)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in tracking.STOP_SIGNALS}
        try:
            codes = [p.wait() for p in procs]
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if received:
            if callable(signal.getsignal(received[0])):
                tracking.redeliver(received[0])
            raise RunPreempted(f"{len(procs)} packed runs stopped by {signal.Signals(received[0]).name}; each is "
                               "recorded PREEMPTED with its checkpoint")
        done, failed = [], []
        for cfg, code in zip(self.configs, codes):
            state = read_ledger(self.results_dir, cfg["run_key"]).get("state", "?")
            (done if code == 0 else failed).append(f"{cfg['run_key']} ({cfg['label']}): {state}")
        if failed:
            raise RunFailed(f"{len(failed)} of {len(codes)} packed runs did not complete: {'; '.join(failed)}")
        return [{"run_key": c["run_key"], "status": "COMPLETED"} for c in self.configs]


def _worker_main() -> int:
    """One packed run (spec as JSON on stdin); exit 0 done, 1 failed, 128+N stopped by signal N."""
    spec = json.loads(sys.stdin.read())
    try:
        run_one(spec["config"], spec["results_dir"], spec["db_name"], max_attempts=spec["max_attempts"],
                teacher_wait_s=spec["teacher_wait_s"], worker=True)
    except RunPreempted as err:
        print(err, file=sys.stderr)
        return 128 + signal.SIGUSR2
    except RunFailed as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
