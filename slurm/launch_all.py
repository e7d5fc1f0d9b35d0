"""`python slurm/launch_all.py`: the whole reproduction (every table and ablation of experiments.registry) on a SLURM
cluster through submitit, one run per array task; runs that are COMPLETED, queued or alive are never submitted twice.

    python slurm/launch_all.py --profile slurm/profiles/gpu_cluster.toml --dry-run      # plan + GPU-hours
    python slurm/launch_all.py --profile slurm/profiles/gpu_cluster.toml                 # submit everything left
    python slurm/launch_all.py --profile P --tables table2 --datasets cifar100 --backbones resnet32 --seeds 0
    python slurm/launch_all.py --profile slurm/profiles/local.toml --named smoke --tables table2 --wait

Selection: --tables (registry names), --datasets (each table is planned for every dataset it runs on; default
cifar10, cifar100 and imagenet), --backbones / --methods (filters on the planned runs; a two-stage student keeps its
teacher), --seeds (the scripts' `seeds`), --set KEY=VALUE (config overrides as in `with KEY=VALUE`), --named NAME
(named configs: smoke, quick). MongoDB: only through $PCL_MONGO_URL (the jobs inherit the environment).
Exit codes: 0 submitted (or nothing to do), 1 a waited-for job failed (with --wait also: runs of the selection are
failed or refused, so not everything is done), 2 bad input or the cluster refused a job.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]

from pcl.flags import OneLineParser, folder_path, parse_command_line, positive_number
from slurm import cluster
from slurm.options import ClusterOptions, OptionsError, from_mapping, load_profile

MAX_COMMENT = 1024  # SLURM refuses a longer job comment ("parameter too long"); it carries an array's run_keys
DEFAULT_STALE_AFTER_S = 300.0  # a RUNNING record without heartbeat for this long is dead (Sacred beats every 10 s)


class LaunchError(RuntimeError):
    """Bad input or a refusal: printed as one line, exit code 2."""


def add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="TOML profile with the cluster options (slurm/profiles/*.toml)")
    parser.add_argument("--results-dir", default="results", type=folder_path(write=False),
                        help="file store of the records (default: results)")
    parser.add_argument("--db-name", default=None, help="MongoDB database (URL from $PCL_MONGO_URL only)")
    # 0, a negative number or nan would judge a live run dead and submit it again; inf never a dead one
    parser.add_argument("--stale-after", type=positive_number("seconds"), default=DEFAULT_STALE_AFTER_S, metavar="S",
                        help=f"a RUNNING record whose heartbeat is older is dead (default {DEFAULT_STALE_AFTER_S:g})")


def add_selection_args(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_argument_group("selection")
    sel.add_argument("--tables", help="comma-separated registry names (default: all)")
    sel.add_argument("--datasets", help="comma-separated datasets (default: every dataset each table runs on)")
    sel.add_argument("--backbones", help="comma-separated backbones to keep")
    sel.add_argument("--methods", help="comma-separated methods to keep")
    sel.add_argument("--seeds", help="comma-separated seeds (default: the scripts' seeds)")
    sel.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override, parsed like Sacred's `with` (repeatable)")
    sel.add_argument("--named", action="append", default=[], metavar="NAME", help="named config (smoke, quick)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python slurm/launch_all.py", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_args(parser)
    add_selection_args(parser)
    cl = parser.add_argument_group("cluster (override the profile)")
    cl.add_argument("--executor", choices=("slurm", "local", "debug"))
    cl.add_argument("--partition")
    cl.add_argument("--account")
    cl.add_argument("--qos")
    cl.add_argument("--gpus-per-task", type=int)
    cl.add_argument("--cpus-per-task", type=int)
    cl.add_argument("--mem")
    cl.add_argument("--time", help="wall-clock limit per job: minutes or HH:MM:SS")
    cl.add_argument("--constraint")
    cl.add_argument("--sbatch-line", action="append", dest="sbatch_lines", metavar="--OPTION[=VALUE]")
    cl.add_argument("--setup", action="append", metavar="LINE", help="shell line run before each job")
    cl.add_argument("--log-folder")
    cl.add_argument("--array-parallelism", type=int)
    cl.add_argument("--max-attempts", type=int)
    cl.add_argument("--max-timeouts", type=int)
    cl.add_argument("--runs-per-gpu", type=int)
    cl.add_argument("--teacher-wait-s", type=int)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the GPU-hours, submit nothing")
    parser.add_argument("--list", action="store_true", help="with --dry-run: one line per run")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the submitted jobs to end; a line each time jobs end (runs completed, failed, "
                        "still running)")
    parser.add_argument("--retry-refused", action="store_true",
                        help="submit again the runs their job refused before they started (fix the cause first)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (with --dry-run)")
    return parser


FLAG_OPTIONS = ("executor", "partition", "account", "qos", "gpus_per_task", "cpus_per_task", "mem", "time",
                "constraint", "sbatch_lines", "setup", "log_folder", "array_parallelism", "max_attempts",
                "max_timeouts", "runs_per_gpu", "teacher_wait_s")


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """The profile's options (or the defaults), then the flags given on the command line."""
    options = load_profile(args.profile) if args.profile else ClusterOptions()
    flags = {k: getattr(args, k) for k in FLAG_OPTIONS if getattr(args, k, None) is not None}
    return from_mapping(flags, where="command line", base=options)


def selection_from(args: argparse.Namespace):
    from experiments import registry
    from pcl import registry as declared
    from pcl.schema import DATASETS
    from slurm.plan import Selection, SelectionError, parse_sets, split_list

    seeds = None
    if args.seeds is not None:
        items = split_list(args.seeds, "--seeds")
        if not all(s.isascii() and s.isdigit() for s in items):
            raise SelectionError(f"--seeds {args.seeds!r} is invalid: must be comma-separated integers >= 0")
        seeds = [int(s) for s in items]
    return Selection(tables=split_list(args.tables, "--tables", registry.SCRIPTS) or list(registry.SCRIPTS),
                     datasets=split_list(args.datasets, "--datasets", sorted(DATASETS)),
                     backbones=split_list(args.backbones, "--backbones", sorted(declared.backbones())),
                     methods=split_list(args.methods, "--methods", sorted(declared.methods())),
                     seeds=seeds, updates=parse_sets(args.set), named=list(args.named))


# ---- executors -----------------------------------------------------------------------------------------------
def make_executor(options: ClusterOptions, resources: dict[str, Any], *, job_name: str, comment: str,
                  dependency: str | None = None):
    """A submitit executor of the explicit kind (never AutoExecutor's guess), set up for one array."""
    import submitit

    folder = Path(options.log_folder).resolve() / "%j"
    minutes = options.time_minutes(resources["time"])
    tasks = resources["tasks"]
    if options.executor == "debug":
        if tasks > 1:
            raise LaunchError(f"executor 'debug' runs one process; a run with gpus={tasks} needs {tasks}: use the "
                              "slurm or local executor")
        return submitit.DebugExecutor(folder=folder)
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=options.max_timeouts)
        executor.update_parameters(timeout_min=minutes, gpus_per_node=resources["gpus_per_task"] * tasks,
                                   tasks_per_node=tasks, signal_delay_s=options.signal_delay_s)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_timeouts)
    extra: dict[str, Any] = {}
    for line in options.sbatch_lines:
        key, sep, value = line[2:].partition("=")
        extra[key] = value if sep else True
    if dependency:
        extra.update({"dependency": dependency, "kill-on-invalid-dep": "yes"})
    params: dict[str, Any] = dict(
        job_name=job_name, comment=comment, time=minutes, cpus_per_task=resources["cpus_per_task"],
        signal_delay_s=options.signal_delay_s, array_parallelism=options.array_parallelism,
        setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}", *options.setup],
        additional_parameters=extra)
    for key in ("partition", "qos", "constraint", "mem"):
        if resources.get(key):
            params[key] = resources[key]
    if options.account:
        params["account"] = options.account
    if resources["gpus_per_task"] > 0:
        params["gpus_per_task"] = resources["gpus_per_task"]
    if tasks > 1:  # one task per data-parallel process, on one node; one failing task ends them all
        params.update(nodes=1, ntasks_per_node=tasks, srun_args=["--kill-on-bad-exit=1"])
    executor.update_parameters(**params)
    return executor


def check_cuda_needs(runs: Sequence[Any], options: ClusterOptions) -> None:
    """LaunchError for the first run whose config needs CUDA (`batch_norm='sync'`, `device=cuda...`) while its
    resources give its tasks no GPU: its job would only refuse it (checked for every planned run, before the
    cluster is asked anything)."""
    for run in runs:
        cfg = run.cfg
        needs = ("batch_norm='sync'" if cfg.get("batch_norm") == "sync" else
                 f"device={cfg['device']!r}" if str(cfg.get("device", "")).startswith("cuda") else None)
        if needs and options.resources_for(cfg)["gpus_per_task"] == 0:
            raise LaunchError(f"run {run.run_key} ({cfg['label']}): {needs} needs CUDA, but its jobs get no GPU "
                              "(gpus_per_task=0); set gpus_per_task >= 1 (profile or --gpus-per-task), or drop "
                              "that value")


def _tasks(runs: Sequence[Any], per_gpu: int) -> list[list[Any]]:
    return [list(runs[i:i + per_gpu]) for i in range(0, len(runs), per_gpu)]


def _arrays(tasks: list[list[Any]]) -> list[list[list[Any]]]:
    """Tasks split into arrays whose job comment (every task's run_keys) fits SLURM's limit."""
    arrays: list[list[list[Any]]] = [[]]
    for task in tasks:
        candidate = arrays[-1] + [task]
        if arrays[-1] and len(cluster.encode_comment([[r.run_key for r in t] for t in candidate])) > MAX_COMMENT:
            arrays.append([task])
        else:
            arrays[-1] = candidate
    return [a for a in arrays if a]


def _groups(runs: Sequence[Any], options: ClusterOptions) -> list[tuple[dict[str, Any], list[Any]]]:
    """Runs grouped by their resources (one array per group), in plan order."""
    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for run in runs:
        res = options.resources_for(run.cfg)
        groups.setdefault(json.dumps(res, sort_keys=True), (res, []))[1].append(run)
    return list(groups.values())


def submit(to_submit: Sequence[Any], queued: dict[str, Any], options: ClusterOptions, results_dir: str,
           db_name: str | None, log=print) -> list[Any]:
    """Submit the runs as job arrays (teachers first, students depending on them); the submitit jobs.

    Raises LaunchError naming what the cluster refused and which arrays went in before it.
    """
    from slurm.jobs import RunJob, write_ledger

    keys = {r.run_key for r in to_submit}
    first = [r for r in to_submit if not r.cfg.get("teacher_run_key") or r.cfg["teacher_run_key"] not in keys]
    second = [r for r in to_submit if r not in first]
    submitted_jobs: list[Any] = []
    done_lines: list[str] = []
    job_of: dict[str, str] = {k: q.job_id for k, q in queued.items()}
    for stage in (first, second):
        for resources, runs in _groups(stage, options):
            per_job = options.runs_per_gpu if resources["tasks"] == 1 else 1  # a data-parallel run has its GPUs
            for tasks in _arrays(_tasks(runs, per_job)):
                chunk = [r for task in tasks for r in task]
                deps = sorted({job_of[r.cfg["teacher_run_key"]] for r in chunk
                               if r.cfg.get("teacher_run_key") in job_of})
                dependency = ("afterok:" + ":".join(deps)) if deps and options.executor == "slurm" else None
                tables = sorted({t for r in chunk for t in r.tables})
                name = "pcl-" + (tables[0] if len(tables) == 1 else "mixed")
                comment = cluster.encode_comment([[r.run_key for r in task] for task in tasks])
                executor = make_executor(options, resources, job_name=name, comment=comment, dependency=dependency)
                fns = [RunJob([r.cfg for r in task], results_dir, db_name, max_attempts=options.max_attempts,
                              teacher_wait_s=options.teacher_wait_s) for task in tasks]
                try:
                    with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's error: ours says it
                        jobs = executor.submit_array(fns) if len(fns) > 1 else [executor.submit(fns[0])]
                except Exception as err:  # noqa: BLE001 - sbatch's refusal (submitit's FailedJobError), OSError
                    message = " ".join(str(err).split())
                    went_in = ("; already submitted: " + ", ".join(done_lines)) if done_lines else \
                        "; nothing was submitted"
                    raise LaunchError(f"the cluster refused the job array of {len(chunk)} run(s) ({name}, "
                                      f"{_describe(resources)}): {message[-400:]}{went_in}") from None
                base = str(jobs[0].job_id).split("_")[0]
                done_lines.append(f"{base} ({len(chunk)} run(s){', after ' + ','.join(deps) if deps else ''})")
                try:
                    for task, job in zip(tasks, jobs):
                        for run in task:
                            job_of[run.run_key] = str(job.job_id)
                            write_ledger(results_dir, run.run_key, job_id=str(job.job_id),
                                         executor=options.executor, stdout=str(job.paths.stdout),
                                         stderr=str(job.paths.stderr), state="SUBMITTED", tables=run.tables,
                                         label=run.cfg["label"])
                except OSError as err:  # the folder was checked before; it went away or filled up since
                    raise LaunchError(
                        f"the ledger in {results_dir} could not be written ({err.strerror or err}) after job(s) went "
                        f"in: {', '.join(done_lines)}; they run and record as usual, but a launch before they start "
                        f"does not know they are queued and would submit their runs again: cancel them (scancel "
                        f"{' '.join(d.split()[0] for d in done_lines)}) or wait until they start, then launch "
                        "again") from None
                submitted_jobs += jobs
                procs = f", {resources['tasks']} processes each" if resources["tasks"] > 1 else ""
                log(f"submitted {name}: job {base} with {len(tasks)} array task(s){procs}, {len(chunk)} run(s)"
                    f"{' after ' + ','.join(deps) if deps else ''}")
    return submitted_jobs


def _describe(resources: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in resources.items() if v not in (None, ""))


# ---- main ----------------------------------------------------------------------------------------------------
def print_plan(planned: Sequence[Any], selection: Any, options: ClusterOptions, *, as_json: bool, listing: bool,
               note: str) -> None:
    from pcl.results import one_line
    from slurm.plan import format_duration, format_hours, load_epoch_times, shared_runs_line, summary

    frame = summary(planned, selection.tables)
    if as_json:
        print(json.dumps({"tables": frame.to_dict(orient="records"),
                          "runs": [{"run_key": r.run_key, "tables": r.tables, "label": r.cfg["label"],
                                    "dataset": r.cfg["dataset"], "backbone": r.cfg["backbone"],
                                    "method": r.cfg["method"], "seed": r.cfg["seed"], "status": r.status,
                                    "detail": r.detail, "gpu_hours": r.gpu_hours, "estimate": r.estimate,
                                    "path": r.path}
                                   for r in planned], "note": note}, indent=1))
        return
    shown = frame.copy()
    for col in ("gpu_h_all", "gpu_h_to_do"):
        shown[col] = shown[col].map(format_hours)
    print(shown.rename(columns={"gpu_h_all": "GPU-h all", "gpu_h_to_do": "GPU-h to do"}).to_string(index=False))
    shared = shared_runs_line([r.tables for r in planned])
    if shared:
        print(shared)
    measured = sum(r.estimate == "measured" for r in planned)
    card = load_epoch_times()["card"].iloc[0]
    paths = ", ".join(f"{n} {p}" for p, n in sorted(Counter(r.path for r in planned).items()))
    found = (f"all {measured} from measured (backbone, method, path) rows" if measured == len(planned) else
             f"{measured} from measured (backbone, method, path) rows, the rest by the rule of slurm/plan.py "
             "(load_epoch_times)")
    print(f"GPU-hours: bench/epoch_times.csv ({card}, one run per GPU, +20 % evaluation); runs costed by the path "
          f"they train (fast_path; data read from the CPU at eager speed): {paths or 'none'}; {found}.")
    if note:
        print(note)
    if listing:
        for r in planned:
            print(f"  {r.run_key}  {r.status:9}  {','.join(r.tables):28}  {r.cfg['dataset']:9} {r.cfg['label']} "
                  f"seed={r.cfg['seed']}  {format_duration(r.gpu_hours)}  {r.path}  {one_line(r.detail)}")


def run(argv: Sequence[str] | None = None, log=print) -> int:
    """The command line; returns the exit code."""
    args = parse_command_line(build_parser(), argv)
    if isinstance(args, int):
        return args
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:  # local jobs and sbatch (which exports the environment) import slurm.jobs
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, paths)])
    from pcl import results, tracking
    from slurm import plan
    from pcl.tracking.grid import check_database_name, check_writable_folder
    from slurm.jobs import read_ledger

    try:
        options = cluster_options(args)
        # the ledger's folder and submitit's (job scripts, logs), as the drivers check theirs: before the plan, so
        # that a file in their place is not found after the jobs went in
        check_writable_folder("results_dir", args.results_dir, flag="--results-dir")
        check_writable_folder("log_folder", options.log_folder, flag="--log-folder (or the profile's log_folder)")
        # the drivers' check of db_name and of the URL's database (pymongo's would be a traceback), before any server
        check_database_name(None, args.db_name)
        selection = selection_from(args)
        planned = plan.build_plan(selection)
        # a value that needs CUDA where the jobs get no GPU is bad input whatever the cluster says: before asking it
        check_cuda_needs(planned, options)
        # squeue first: its answer (or an unreachable controller's silence) overlaps reading the records
        snapshot = cluster.QueueSnapshot() if options.executor == "slurm" else None
        try:
            store = tracking.open_store(args.results_dir, None, args.db_name)
        except tracking.StoreUnavailable as err:
            raise LaunchError(str(err)) from None
        outside: dict[str, Any] = {}
        states = plan.record_states(store.sources(), [r.run_key for r in planned], outside)
        queued: dict[str, Any] = {}
        live: set[str] | None = None
        queue_note = ""
        if snapshot is not None:
            try:
                cluster.require_sbatch()
                queued, live = snapshot.result()
            except cluster.ClusterError as err:
                if not args.dry_run:
                    raise
                queue_note = f"Queue not checked: {err}"
        ledger = {r.run_key: read_ledger(args.results_dir, r.run_key) for r in planned}
        plan.classify(planned, states, queued, live, ledger, stale_after_s=args.stale_after,
                      max_attempts=options.max_attempts, retry_refused=args.retry_refused)
        plan.estimate(planned)
        to_submit = [r for r in planned if r.status == "to submit"]
        if options.executor == "slurm" and to_submit and not queue_note:
            try:
                cluster.check_request([options.resources_for(r.cfg) for r in to_submit], cluster.partitions())
            except cluster.ClusterError as err:
                if not args.dry_run:
                    raise
                queue_note = f"This cluster would refuse the jobs: {err}."
        if args.dry_run:
            print_plan(planned, selection, options, as_json=args.json, listing=args.list,
                       note=" ".join(filter(None, (plan.store_note(planned, states, outside, store, selection),
                                                   queue_note))))
            return 0
        counts = {s: sum(r.status == s for r in planned) for s in plan.STATUSES}
        log(f"{len(planned)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        for r in planned:
            if r.status == "failed":
                log(f"not resubmitted: {r.run_key} ({r.cfg['label']}): {results.one_line(r.detail)}; see python "
                    "slurm/status.py")
            elif r.status == "refused":
                log(f"not resubmitted: {r.run_key} ({r.cfg['label']}): its job refused it before it started: "
                    f"{results.one_line(r.detail)}; fix that, then add --retry-refused")
        held = [r for r in planned if r.status in ("failed", "refused")]
        if not to_submit:
            log("nothing to submit")
            return 1 if args.wait and held else 0  # --wait: done means done (tables can be built next)
        # the files the methods read (kd's teacher model), as each job would check them before its grid: a wrong
        # one is this line, not a job array whose every job refuses it (this imports torch; the dry run does not)
        from pcl.methods import check_method_inputs

        check_method_inputs([r.cfg for r in to_submit])
        jobs = submit(to_submit, queued, options, str(Path(args.results_dir).resolve()), args.db_name, log=log)
    except (OptionsError, plan.SelectionError, cluster.ClusterError, LaunchError, tracking.ConfigError,
            results.StoreError) as err:
        print(f"error: {tracking.redact(err)}", file=sys.stderr)
        return 2
    if not args.wait and options.executor != "debug":  # debug jobs run in this process, when waited for
        return 0
    runs_per_job: dict[str, int] = {}
    for r in to_submit:  # the ledger names each run's job (several runs share one with --runs-per-gpu)
        job_id = str(read_ledger(args.results_dir, r.run_key).get("job_id", ""))
        runs_per_job[job_id] = runs_per_job.get(job_id, 0) + 1
    return wait(jobs, log, slurm=options.executor == "slurm", runs_per_job=runs_per_job) or (1 if held else 0)


def wait(jobs: Sequence[Any], log=print, slurm: bool = True, runs_per_job: dict[str, int] | None = None,
         poll_s: float = 2.0) -> int:
    """Wait for every job; 0 when all ended without error, 1 otherwise (each failure's log named).

    Each time jobs end, one line says how many runs completed, failed and are still running or queued
    (`runs_per_job`: job id -> its number of runs, 1 when not given)."""
    per_job = runs_per_job or {}
    runs_in = {str(job.job_id): per_job.get(str(job.job_id), 1) for job in jobs}
    total = sum(runs_in.values())
    bad = completed = failed = 0
    pending = list(jobs)
    while pending:
        ended = [job for job in pending if _job_done(job)]
        if not ended:
            time.sleep(poll_s)
            continue
        for job in ended:
            pending.remove(job)
            try:
                out = job.results()  # every task's (a run with gpus=N is a job of N tasks; `result()` refuses those)
            except Exception as err:  # noqa: BLE001 - the job's error, as submitit reports it
                bad += 1
                failed += runs_in[str(job.job_id)]
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                reason = [line for line in lines if re.match(r"^[\w.]+(Error|Failed|Preempted|Exception): ", line)]
                log(f"job {job.job_id} failed: {(reason or lines or [repr(err)])[-1][:500]} "
                    f"(log: {job.paths.stderr})")
                continue
            done_runs = sum(len(o) for o in out if isinstance(o, list)) if isinstance(out, list) else 0
            completed += done_runs or runs_in[str(job.job_id)]
        log(f"{completed} of {total} run(s) completed, {failed} failed, {max(total - completed - failed, 0)} still "
            f"running or queued ({len(jobs) - len(pending)} of {len(jobs)} job(s) ended) at "
            f"{dt.datetime.now():%H:%M:%S}")
    ids = {str(job.job_id) for job in jobs} if slurm else set()
    deadline = time.monotonic() + 60
    while ids and time.monotonic() < deadline:  # SLURM still lists a job for a moment after its result is written
        try:
            if not ids & cluster.live_job_ids():
                break
        except cluster.ClusterError:
            break  # no SLURM (local/debug executor)
        time.sleep(1)
    log(f"{len(jobs) - bad} of {len(jobs)} job(s) done at {dt.datetime.now():%H:%M:%S}")
    return 1 if bad else 0


def _job_done(job: Any) -> bool:
    """Whether a submitit job has ended (a debug job runs here, now); a job whose state cannot be read counts as
    ended (its `results()` then says why)."""
    if type(job).__name__ == "DebugJob":  # its done() runs it and, on an error, would run it again in results()
        return True
    try:
        return bool(job.done())
    except Exception:  # noqa: BLE001 - e.g. the controller went away: results() reports it
        return True


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
