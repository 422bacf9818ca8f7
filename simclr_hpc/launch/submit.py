"""Submit stages and sweeps: validate everything, then hand the jobs to submitit, then record them in the registry.

Order matters: every check that can fail on user input runs before anything is written or submitted, so a bad request
leaves no trace (the checks: ``checks.py``). Submission never waits for jobs to run.
"""

from __future__ import annotations

import datetime as dt

from pathlib import Path

from simclr_hpc import fsutil, rundir
from simclr_hpc.config import STAGES, Config, dump_config
from simclr_hpc.launch import slurm
from simclr_hpc.launch.checks import check_slurm, check_unique, parse_dependency, resolved
from simclr_hpc.launch.errors import LaunchError
from simclr_hpc.launch.executor import LaunchRequest, Plan, build_plan, make_executor, render_sbatch
from simclr_hpc.launch.profile import check_plain_text
from simclr_hpc.launch.registry import JobRecord, Registry, log_paths, registry_path
from simclr_hpc.launch.task import RUN_TARGET, LaneJob, StageJob
from simclr_hpc.outputs import check_output_dir, check_output_file
from simclr_hpc.references import check_references

def _job_name(stage: str, cfg: Config, array: bool = False) -> str:
    name = f"{stage}-{cfg.run.study}" + ("-sweep" if array else f"-{cfg.run.name}")
    return name[:100]


def _stage_folder(stage: str, cfg: Config) -> Path:
    return cfg.run_dir(stage) / "slurm"


def array_stamp() -> str:
    """The time stamp in a sweep's log folders: one maker for ``render_array`` and ``submit_array``, so the dry run
    prints the folder naming the submission would use (microseconds: two sweeps of one second do not collide)."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def _array_folder(stage: str, cfg: Config, stamp: str, chunk: int) -> Path:
    return Path(cfg.run.root) / cfg.run.study / stage / "_arrays" / f"{stamp}-{chunk}"


def _lane_folder(stage: str, cfg: Config, stamp: str, lane: int) -> Path:
    """Logs of one local worker process (its runs' output, one after another)."""
    return Path(cfg.run.root) / cfg.run.study / stage / "_lanes" / f"{stamp}-{lane}"


def _prepare(stage: str, cfgs: list[Config], request: LaunchRequest, dependency, dry_run: bool,
             array: bool, target: str = RUN_TARGET) -> tuple[list[Config], Plan, list[str]]:
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if not cfgs:
        raise LaunchError("nothing to submit: the sweep is empty")
    cfgs = [resolved(c) for c in cfgs]
    check_unique(stage, cfgs)
    dep_ids = parse_dependency(dependency)
    root = Path(cfgs[0].run.root)
    plan = build_plan(stage, request, root, _job_name(stage, cfgs[0], array), None)
    if request.executor == "slurm":
        dep_ids = check_slurm(plan, dep_ids, dry_run)
    if not dry_run and target == RUN_TARGET:
        # What the runner would find missing only in the job's log (no encoder, no shards) is refused before queueing;
        # runs this one waits for (afterok) may still be to come.
        for cfg in cfgs:
            check_references(stage, cfg, runs_may_be_pending=bool(dependency))
    return cfgs, plan, dep_ids


def _afterok(dep_ids: list[str], extra: str | None = None) -> str | None:
    parts = [f"afterok:{':'.join(dep_ids)}"] if dep_ids else []
    if extra:
        parts.append(extra)
    return ",".join(parts) or None


def render_stage(stage: str, cfg: Config, request: LaunchRequest, dependency=None) -> str:
    """``--dry-run``: the exact sbatch script ``submit_stage`` would submit. Works without Slurm; validates the same."""
    cfgs, plan, dep_ids = _prepare(stage, [cfg], request, dependency, dry_run=True, array=False)
    plan.slurm_params["dependency"] = _afterok(dep_ids)
    if plan.slurm_params["dependency"] is None:
        del plan.slurm_params["dependency"]
    return render_sbatch(plan, _stage_folder(stage, cfgs[0]))


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def _max_array(plan: Plan) -> int:
    size = plan.profile.max_array_size
    site = slurm.max_array_size() if plan.executor == "slurm" and slurm.available() else None
    return min(size, site - 1) if site else size


def make_request(**fields) -> LaunchRequest:
    """``LaunchRequest(**fields)`` with ``None`` values dropped; a bad field is a LaunchError."""
    from pydantic import ValidationError

    from simclr_hpc.config import format_errors

    try:
        return LaunchRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise LaunchError(format_errors(err)) from None


def render_array(stage: str, cfgs: list[Config], request: LaunchRequest | None = None,
                 parallelism: int | None = None, dependency=None, **request_fields) -> list[str]:
    """``--dry-run`` of a sweep: one sbatch script per array (several when the sweep exceeds max_array_size).

    ``request`` may be replaced by its fields as keywords (``profile=``, ``container=``, ...).
    ``parallelism`` None or 0 = the profile's cap.
    """
    if request is None:
        request = make_request(**request_fields)
    if parallelism:
        request = request.model_copy(update={"array_parallelism": parallelism})
    cfgs, plan, dep_ids = _prepare(stage, cfgs, request, dependency, dry_run=True, array=True)
    stamp = array_stamp()
    scripts = []
    for k, idx in enumerate(_chunks(len(cfgs), _max_array(plan))):
        dep = _afterok(dep_ids, f"afterany:<job id of array {k}>" if k else None)
        plan.slurm_params.pop("dependency", None)
        if dep:
            plan.slurm_params["dependency"] = dep
        scripts.append(render_sbatch(plan, _array_folder(stage, cfgs[0], stamp, k), array_size=len(idx)))
    return scripts


def _record(stage: str, cfg: Config, plan: Plan, job, folder: Path, dep: str | None,
            array_job_id: str | None = None, array_index: int | None = None) -> JobRecord:
    out, err = log_paths(folder, job.job_id)
    state = "SUBMITTED"
    if plan.executor == "debug":
        state = "COMPLETED" if rundir.is_finished(cfg.run_dir(stage)) else "FAILED"
    return JobRecord(
        study=cfg.run.study, stage=stage, run_name=cfg.run.name, job_id=str(job.job_id), executor=plan.executor,
        state=state, run_dir=str(cfg.run_dir(stage)), log_dir=str(folder), stdout=str(out), stderr=str(err),
        config_hash=cfg.hash(stage), array_job_id=array_job_id, array_index=array_index, dependency=dep or "",
        nodes=plan.nodes, tasks=plan.nodes * plan.tasks_per_node,
    )


def _write_submitted_config(stage: str, cfg: Config) -> None:
    run_dir = cfg.run_dir(stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    fsutil.write_text_atomic(rundir.submitted_config_path(run_dir), dump_config(cfg))


def _local_waits(cfg: Config, dep_ids: list[str]) -> list[tuple[int, str]]:
    """afterok for the local executor: the (pid, result.json) of each dependency, from the study's registry."""
    waits = []
    reg = Registry(registry_path(cfg.run.root, cfg.run.study))
    for jid in dep_ids:
        rows = [r for r in reg.find(jid) if r.executor == "local"]
        if not rows:
            raise LaunchError(f"--dependency afterok:{jid}: no local job {jid} in {reg.path}")
        waits += [(int(r.job_id), str(r.result_path)) for r in rows]
    return waits


def _requeues(plan: Plan) -> int:
    """How often a Slurm job requeues itself after losing a rank (the profile's max_requeues); never locally."""
    return plan.profile.max_requeues if plan.executor == "slurm" else 0


def submit_stage(stage: str, cfg: Config, request: LaunchRequest, dependency: list[str] | None = None, *,
                 target: str = RUN_TARGET) -> JobRecord:
    """Submit one run of ``stage`` (one job of ``request.nodes`` nodes, one task per GPU) and record it.

    ``dependency``: job ids (or ``afterok:ID`` strings) that must complete successfully first. Returns at once.
    """
    cfgs, plan, dep_ids = _prepare(stage, [cfg], request, dependency, dry_run=False, array=False, target=target)
    cfg = cfgs[0]
    Registry(registry_path(cfg.run.root, cfg.run.study)).check_writable()  # before a job it could not record
    dep = _afterok(dep_ids)
    if dep and plan.executor == "slurm":
        plan.slurm_params["dependency"] = dep
    waits = _local_waits(cfg, dep_ids) if plan.executor != "slurm" else []
    folder = _stage_folder(stage, cfg)
    _write_submitted_config(stage, cfg)
    executor = make_executor(plan, folder)
    job = executor.submit(StageJob(target, waits, max_requeues=_requeues(plan)), stage, cfg.model_dump(mode="json"))
    if plan.executor == "debug":
        job.result()
    record = _record(stage, cfg, plan, job, folder, dep)
    Registry(registry_path(cfg.run.root, cfg.run.study)).add([record])
    return record


def submit_array(stage: str, cfgs: list[Config], request: LaunchRequest, parallelism: int | None = None,
                 dependency: list[str] | None = None, *, target: str = RUN_TARGET) -> list[JobRecord]:
    """Submit a sweep as one Slurm array (``--array=0-N%parallelism``) and record every task.

    ``parallelism`` None or 0 = the profile's cap. With the local executor each run is its own process, started at
    once, and run ``i`` waits for run ``i - parallelism`` to exit, which keeps the cap without blocking here.

    Sweeps larger than the site's max_array_size become several arrays, each waiting (afterany) for the previous one,
    so the parallelism cap holds over the whole sweep. ``dependency`` (afterok) applies to every array.
    """
    if parallelism:
        request = request.model_copy(update={"array_parallelism": parallelism})
    cfgs, plan, dep_ids = _prepare(stage, cfgs, request, dependency, dry_run=False, array=True, target=target)
    for path in dict.fromkeys(registry_path(c.run.root, c.run.study) for c in cfgs):
        Registry(path).check_writable()  # before jobs it could not record
    if plan.executor != "slurm":
        return _local_array(stage, cfgs, plan, dep_ids, target)
    for cfg in cfgs:
        _write_submitted_config(stage, cfg)
    stamp = array_stamp()
    records: list[JobRecord] = []
    previous: str | None = None
    for k, idx in enumerate(_chunks(len(cfgs), _max_array(plan))):
        dep = _afterok(dep_ids, f"afterany:{previous}" if previous else None)
        plan.slurm_params.pop("dependency", None)
        if dep:
            plan.slurm_params["dependency"] = dep
        folder = _array_folder(stage, cfgs[0], stamp, k)
        executor = make_executor(plan, folder)
        chunk = [cfgs[i] for i in idx]
        jobs = executor.map_array(StageJob(target, max_requeues=_requeues(plan)), [stage] * len(chunk),
                                  [c.model_dump(mode="json") for c in chunk])
        previous = jobs[0].job_id.split("_")[0]
        chunk_records = [_record(stage, c, plan, j, folder, dep, previous, a) for a, (c, j) in enumerate(zip(chunk, jobs))]
        by_study: dict[Path, list[JobRecord]] = {}
        for c, r in zip(chunk, chunk_records):
            by_study.setdefault(registry_path(c.run.root, c.run.study), []).append(r)
        for path, recs in by_study.items():
            Registry(path).add(recs)
        records += chunk_records
    return records


def _local_array(stage: str, cfgs: list[Config], plan: Plan, dep_ids: list[str], target: str) -> list[JobRecord]:
    """The local executor's array: ``cap`` worker processes (lanes), each running its share of the runs one after
    another. A process per run would pay Python's and torch's start-up (about 5 CPU-seconds) for every run, more than
    a small linear probe costs; a lane pays it once. Each run still waits for its own dependencies (afterok).

    Runs are dealt to the lanes back and forth (0, 1, 1, 0, 0, 1, ... for two lanes), not round-robin: sweeps come as
    repeating patterns (encoder x seed), and round-robin would give every heavy run of a pattern to the same lane."""
    cap = max(1, min(plan.profile.array_parallelism, len(cfgs)))
    stamp = array_stamp()
    records: dict[int, JobRecord] = {}
    lane_of = [i % cap if (i // cap) % 2 == 0 else cap - 1 - i % cap for i in range(len(cfgs))]
    for k in range(cap):
        lane = [i for i in range(len(cfgs)) if lane_of[i] == k]
        calls = []
        for i in lane:
            _write_submitted_config(stage, cfgs[i])
            calls.append((stage, cfgs[i].model_dump(mode="json"), _local_waits(cfgs[i], dep_ids)))
        folder = _lane_folder(stage, cfgs[lane[0]], stamp, k)
        job = make_executor(plan, folder).submit(LaneJob(target), calls)
        if plan.executor == "debug":
            job.result()
        for i in lane:
            records[i] = _record(stage, cfgs[i], plan, job, folder, _afterok(dep_ids))
        Registry(registry_path(cfgs[lane[0]].run.root, cfgs[lane[0]].run.study)).add([records[i] for i in lane])
    return [records[i] for i in range(len(cfgs))]


def write_manifest(stage: str, cfgs: list[Config], path: str | Path, force: bool = False) -> Path:
    """Manifest for ``slurm/array.sbatch``: line i (1-based) = array index i-1, ``STAGE<TAB>/abs/config.yaml``.

    Each resolved config is written to ``<run_dir>/config.submitted.yaml``; the template runs
    ``simclr-hpc run STAGE -c CONFIG`` for line ``SLURM_ARRAY_TASK_ID + 1``. Returns the manifest's absolute path.
    Every check comes first: an existing manifest is replaced only with ``force``, a missing parent directory is an
    error (none is created), and the manifest is written through a temporary file that never outlives a failure.
    """
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if not cfgs:
        raise LaunchError("nothing to write: the sweep is empty")
    path = Path(path).expanduser().absolute()
    try:
        check_plain_text(str(path), "--manifest")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    check_output_file(path, "--manifest", force)
    cfgs = [resolved(c) for c in cfgs]
    check_unique(stage, cfgs)
    for root in dict.fromkeys(c.run.root for c in cfgs):
        check_output_dir(root, "run.root")
    lines = []
    for cfg in cfgs:
        _write_submitted_config(stage, cfg)
        config_path = rundir.submitted_config_path(cfg.run_dir(stage))
        lines.append(f"{stage}\t{config_path}\n")
    try:
        fsutil.write_text_atomic(path, "".join(lines))
    except fsutil.AtomicWriteError as err:
        raise LaunchError(str(err)) from None
    return path
