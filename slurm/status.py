"""`python slurm/status.py`: where the reproduction stands, per table, read from the records and the SLURM queue.

Per table: runs COMPLETED / RUNNING / PREEMPTED / FAILED / refused / dead / queued / missing. `refused`: its last
job refused it before it started (missing or corrupt data, a value wrong on that node), nothing was recorded, and
launch_all.py submits it again only with --retry-refused. A run is `dead` when its
latest record says RUNNING but its heartbeat is older than --stale-after or its SLURM job is gone (the next
`launch_all.py` resumes it from its checkpoint), or whose job began it and ended before it wrote any record. Each failure is listed with its log path and last error line.
Takes the same selection flags as launch_all.py (default: everything); `--json` prints the same as JSON.
Exit code 0, or 2 on bad input.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any, Mapping, Sequence


from pcl.flags import OneLineParser, parse_command_line
from slurm import cluster
from slurm.launch_all import add_selection_args, add_store_args, cluster_options, selection_from
from slurm.options import OptionsError

COLUMNS = ("COMPLETED", "RUNNING", "PREEMPTED", "FAILED", "refused", "dead", "queued", "missing")


def last_error_line(record: Mapping[str, Any] | None, log_path: str | None) -> str:
    """The last line of the record's traceback, else the last error-looking line of the job's log, else ''."""
    from pcl.results import one_line

    trace = (record or {}).get("fail_trace") or []
    trace = trace if isinstance(trace, list) else [trace]
    lines = [line for chunk in trace for line in str(chunk).splitlines() if line.strip()]
    if lines:
        return one_line(lines[-1].strip())  # text of a record: one line, no terminal escape codes
    for line in reversed(_log_tail(log_path).splitlines()):
        if "Error" in line or "error:" in line or "FAILED" in line:
            return one_line(line.strip())
    return ""


def _log_tail(log_path: Any, limit: int = 1 << 20) -> str:
    """The last `limit` bytes of a job's log named by its ledger entry: a regular file opened without following
    a link (a FIFO or a device named there would block or never end); '' otherwise."""
    if not isinstance(log_path, str) or not log_path:
        return ""
    import stat

    try:
        fd = os.open(log_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return ""
        f.seek(max(0, info.st_size - limit))
        return f.read(limit).decode("utf-8", errors="replace")


def run_status(run: Any, state: Any, queued: Mapping[str, Any], live: set[str] | None, ledger: Mapping[str, Any],
               stale_after_s: float, max_attempts: int, now: dt.datetime) -> tuple[str, str]:
    """(column, detail) of one planned run."""
    from pcl import results
    from slurm.plan import run_is_alive

    job = queued.get(run.run_key)
    latest = state.latest
    if state.completed:
        return "COMPLETED", ""
    if job is not None and job.state != "PENDING":
        return "RUNNING", f"job {job.job_id} {job.state}"
    if job is not None:
        return "queued", f"job {job.job_id} PENDING" + (f" after {latest.get('status')}" if latest else "")
    if ledger.get("state") == "REFUSED":  # its last job refused it before it started: nothing was recorded
        return "refused", f"{ledger.get('error') or '?'}; fix that, then launch_all.py --retry-refused"
    if latest is None:
        job_id = ledger.get("job_id")
        if ledger.get("state") == "STARTED" and job_id and live is not None and str(job_id) not in live:
            # the job began the run but ended before any record (MongoDB unreachable, killed at start): its log says
            return "dead", f"job {job_id} ended before the run wrote a record; the next launch submits it again"
        return "missing", ""
    status = latest.get("status")
    if status == "RUNNING":
        age = state.heartbeat_age_s(now)
        if run_is_alive(state, ledger, live, stale_after_s, now):
            return "RUNNING", f"heartbeat {age:.0f} s ago"
        gone = ledger.get("job_id") and live is not None and str(ledger["job_id"]) not in live
        why = f"job {ledger['job_id']} gone" if gone else f"heartbeat {age:.0f} s ago" if age is not None else "?"
        return "dead", why
    if status == "FAILED" or state.failures >= max_attempts:
        gave_up = " (gave up)" if state.failures >= max_attempts else ""
        return "FAILED", f"{state.failures} FAILED attempt(s){gave_up}"
    if status in results.RESUMABLE_STATUSES:
        return "PREEMPTED", f"{status}, {len(state.records)} attempt(s); resumes on the next launch"
    return "FAILED", f"record status {status}"


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Tables (counts per column) and runs (one dict each) for the selection."""
    from pcl import tracking
    from pcl.tracking.grid import check_database_name
    from slurm import plan
    from slurm.jobs import read_ledger

    options = cluster_options(args)
    check_database_name(None, args.db_name)  # the drivers' check (pymongo's would be a traceback), before any server
    selection = selection_from(args)
    # squeue first: its answer (or an unreachable controller's silence) overlaps planning and reading the records
    snapshot = cluster.QueueSnapshot() if options.executor == "slurm" else None
    planned = plan.build_plan(selection)
    store = tracking.open_store(args.results_dir, None, args.db_name)
    outside: dict[str, Any] = {}
    states = plan.record_states(store.sources(), [r.run_key for r in planned], outside)
    queued: dict[str, Any] = {}
    live: set[str] | None = None
    note = plan.store_note(planned, states, outside, store, selection)
    if snapshot is not None:
        try:
            queued, live = snapshot.result()
        except cluster.ClusterError as err:
            note = "\n".join(filter(None, (note, f"queue not checked: {err}")))
    now = dt.datetime.now(dt.timezone.utc)
    runs = []
    for run in planned:
        state = states.get(run.run_key, plan.RunState())
        entry = read_ledger(args.results_dir, run.run_key)
        column, detail = run_status(run, state, queued, live, entry, args.stale_after, options.max_attempts, now)
        log = entry.get("stderr")
        runs.append({"run_key": run.run_key, "tables": run.tables, "label": run.cfg["label"],
                     "dataset": run.cfg["dataset"], "seed": run.cfg["seed"], "status": column, "detail": detail,
                     "attempts": len(state.records), "job_id": entry.get("job_id"), "log": log,
                     "error": last_error_line(state.latest, log) if column in ("FAILED", "dead") else ""})
    tables = []
    for table in [*selection.tables, "total"]:
        rows = [r for r in runs if table == "total" or table in r["tables"]]
        if rows or table == "total":
            tables.append({"table": table, "runs": len(rows), **{c: sum(r["status"] == c for r in rows)
                                                                 for c in COLUMNS}})
    return {"tables": tables, "runs": runs, "note": note}


def render(report: Mapping[str, Any]) -> str:
    """The tables and the list of failed, refused, dead and preempted runs as text."""
    import pandas as pd

    from pcl.results import one_line
    from slurm.plan import shared_runs_line

    lines = [pd.DataFrame(report["tables"]).to_string(index=False)]
    shared = shared_runs_line([r.get("tables", ()) for r in report["runs"]])
    if shared:
        lines.append(shared)
    problems = [r for r in report["runs"] if r["status"] in ("FAILED", "refused", "dead", "PREEMPTED")]
    for r in problems:  # details, job ids, log paths and errors come from ledgers, logs and records: one line each
        lines.append(f"{r['status']:9} {r['run_key']} {r['label']} ({r['dataset']}, seed {r['seed']}): "
                     f"{one_line(r['detail'])}" + (f"; job {one_line(r['job_id'])}" if r["job_id"] else ""))
        if r["log"]:
            lines.append(f"          log: {one_line(r['log'])}")
        if r["error"]:
            lines.append(f"          last error: {one_line(r['error'])}")
    if report.get("note"):
        lines.append(report["note"])
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = OneLineParser(prog="python slurm/status.py", description=__doc__.split("\n\n")[0])
    add_store_args(parser)
    add_selection_args(parser)
    parser.add_argument("--json", action="store_true", help="print tables and runs as JSON")
    parser.add_argument("--executor", choices=("slurm", "local", "debug"),
                        help="as launch_all.py (default: the profile's, else slurm); local/debug: no queue to read")
    args = parse_command_line(parser, argv)
    if isinstance(args, int):
        return args
    for key in ("partition", "account", "qos", "gpus_per_task", "cpus_per_task", "mem", "time", "constraint",
                "sbatch_lines", "setup", "log_folder", "array_parallelism", "max_attempts", "max_timeouts",
                "runs_per_gpu", "teacher_wait_s"):
        setattr(args, key, None)
    from pcl import results, tracking
    from slurm.plan import SelectionError

    try:
        report = collect(args)
    except (OptionsError, SelectionError, cluster.ClusterError, tracking.UserError, tracking.ConfigError,
            results.StoreError) as err:
        print(f"error: {tracking.redact(err)}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(run())
