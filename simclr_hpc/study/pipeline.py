"""Run, submit or dry-run a study: ``walk.preflight`` (every check), then one walk of its arrays.

A run is finished when its ``result.json`` exists; everything else (never started, failed, killed halfway) is handed
out again, and the run resumes from its own latest checkpoint. So running ``study run`` / ``study submit`` again after
an interruption or a failure redoes exactly what did not finish.

How the walk hands arrays out depends on one property of the launcher, ``blocking``:

* blocking (``study run``, ``demo``: on this machine): array by array; an array is handed out when the ones before it
  have ended, and a run whose dependency failed is reported as ``blocked`` and not started;
* not blocking (``study submit`` on Slurm): every array at once, each waiting (``afterany``) for the arrays holding the
  runs it depends on. ``afterany``, not ``afterok``: one failed task must not leave every dependent pending forever.
  A dependent of a failed run starts, finds its input missing (the runner checks its inputs first) and fails in
  seconds, with that reason in ``study status``; the next ``study submit`` resubmits both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from simclr_hpc import launch, rundir
from simclr_hpc.fsutil import dumps_json
from simclr_hpc.study.provenance import move_aside
from simclr_hpc.study.runs import Plan, RunSpec
from simclr_hpc.study.walk import Handout, Preflight, StudyOptions, depends_on, is_done, preflight

Log = Callable[[str], None]


@dataclass
class StudyOutcome:
    """What one ``run`` / ``submit`` did, by run key."""

    skipped: list[str] = field(default_factory=list)
    """Runs that already had a result.json: not redone."""
    submitted: list[str] = field(default_factory=list)
    """Runs handed out in this command (fresh jobs)."""
    reused: list[str] = field(default_factory=list)
    """Runs whose job from an earlier command was still queued or running: not submitted again."""
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    """Runs not started because a run they depend on failed."""
    jobs: dict[str, str] = field(default_factory=dict)
    """Run key -> job id."""
    built_datasets: list[str] = field(default_factory=list)


def record_event(plan: Plan, key: str, event: str, **extra) -> None:
    """Append one line to the study's event log (read by ``status`` and the report to tell failed from missing)."""
    path = rundir.events_path(plan.study.root, plan.study.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(dumps_json({"key": key, "event": event, "time": time.time(), **extra}) + "\n")


def prepare_data(pre: Preflight, log: Log = print) -> list[str]:
    """Move stale shards and results aside (``--rerun-stale``), then build the shards of every dataset that has none
    (seeded, so every seed of the study sees the same data)."""
    from simclr_hpc.data.shards import write_shards

    for item in pre.stale:
        log(f"stale {item.what}: {item.reason}; moved aside to {move_aside(item.path)}")
    built = []
    for ds in pre.to_build:
        start = time.monotonic()
        log(f"building shards of {ds.name} ({ds.source}) in {ds.shards}")
        if ds.shards.exists() and not any(ds.shards.iterdir()):
            ds.shards.rmdir()
        elif ds.shards.exists():
            # A build killed before index.json was written: its tar files are incomplete; start over.
            for part in ds.shards.glob("*.tar"):
                part.unlink()
        write_shards(ds.source, ds.shards, val_fraction=ds.val_fraction, seed=0)
        log(f"  {ds.name}: {time.monotonic() - start:.1f}s")
        built.append(ds.name)
    return built


def _blocked_by(pre: Preflight, run: RunSpec, failed: set[str]) -> str | None:
    """The first dependency of ``run`` that failed, or that is neither done nor about to run; None when it may start."""
    todo = {r.key for r in pre.selection.todo}
    for dep in run.depends_on:
        if dep in failed or (dep not in todo and not is_done(pre.plan.get(dep))):
            return dep
    return None


def _result_note(run: RunSpec) -> str:
    top1 = ((rundir.read_result_json(run.result_path) or {}).get("metrics") or {}).get("top1")
    return f" top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""


def _settle(
    pre: Preflight,
    runs: list[RunSpec],
    records: dict[str, launch.JobRecord],
    out: StudyOutcome,
    failed: set[str],
    log: Log,
) -> None:
    """A blocking launcher: wait for the array's jobs (its own and reused ones), then record what became of each."""
    launch.wait([rec for rec in records.values() if rec is not None], poll_s=0.5)
    for run in runs:
        rec = records.get(run.key)
        if run.result_path.is_file():
            out.done.append(run.key)
            record_event(pre.plan, run.key, "done")
            log(f"[{len(out.done) + len(failed)}] {run.key} done{_result_note(run)}")
            continue
        error = f"job {rec.job_id} ended {rec.state} without result.json" if rec else "no job"
        error += f": {rec.reason}" if rec and rec.reason else ""
        error += f"; log: {rec.stderr}" if rec and rec.stderr else ""
        failed.add(run.key)
        out.failed.append(run.key)
        record_event(pre.plan, run.key, "failed", error=error)
        log(f"[{len(out.done) + len(failed)}] {run.key} FAILED: {error}")


def _hand_out(
    pre: Preflight, handout: Handout, out: StudyOutcome, failed: set[str], job_of: dict[str, str], log: Log
) -> None:
    """Submit one array's fresh runs (waiting for the jobs of their dependencies) and keep its reused ones."""
    blocking = pre.launcher.blocking
    runs, fresh = [], []
    for run in handout.array.runs:
        bad = _blocked_by(pre, run, failed) if blocking else None
        if bad is not None:
            failed.add(run.key)
            out.blocked.append(run.key)
            record_event(pre.plan, run.key, "blocked", error=f"dependency {bad} has no result")
            log(f"{run.key} BLOCKED: dependency {bad} has no result")
            continue
        runs.append(run)
        if run in handout.fresh:
            fresh.append(run)
    records: dict[str, launch.JobRecord | None] = {key: None for key in handout.reused}
    if fresh:
        # A blocking walk hands an array out only when the ones before it ended: nothing to wait for.
        after = [] if blocking else depends_on(tuple(fresh), job_of)
        for run in fresh:
            record_event(pre.plan, run.key, "submitted")
        submitted = launch.submit_array(
            handout.array.stage,
            [run.cfg for run in fresh],
            pre.request,
            dependency=launch.Dependency("afterany", tuple(after)),
            target=pre.options.target,
            launcher=pre.launcher,
            check_inputs=False,
        )
        records.update({run.key: rec for run, rec in zip(fresh, submitted)})
    for run in runs:
        # An array's own id makes a dependent wait for the whole array.
        rec = records.get(run.key)
        job_of[run.key] = str(rec.array_job_id or rec.job_id) if rec else handout.reused[run.key]
        out.jobs[run.key] = job_of[run.key]
        (out.submitted if run.key not in handout.reused else out.reused).append(run.key)
    if blocking:
        reused = _reused_records(pre, handout.reused)
        _settle(pre, runs, {**{k: v for k, v in records.items() if v}, **reused}, out, failed, log)


def _reused_records(pre: Preflight, reused: dict[str, str]) -> dict[str, launch.JobRecord]:
    """The registry rows of jobs from an earlier command that this walk waits for."""
    if not reused:
        return {}
    registry = launch.Registry(launch.registry_path(pre.plan.study.root, pre.plan.study.name))
    latest = {f"{rec.stage}/{rec.run_name}": rec for rec in registry.all()}
    return {key: latest[key] for key in reused if key in latest}


def walk(pre: Preflight, log: Log = print) -> StudyOutcome:
    """Build the data, then hand every array out in order (module docstring). Call after ``walk.preflight``."""
    out = StudyOutcome(skipped=[run.key for run in pre.selection.done])
    sel = pre.selection
    log(
        f"study {pre.plan.study.name}: {len(sel.done) + len(sel.todo)} runs, {len(sel.done)} already done, "
        f"{len(sel.todo)} to run"
    )
    out.built_datasets = prepare_data(pre, log)
    failed: set[str] = set()
    job_of: dict[str, str] = {}
    for handout in pre.handouts():
        _hand_out(pre, handout, out, failed, job_of, log)
    return out


def run_study(path: Path, options: StudyOptions, report: bool = True, log: Log = print):
    """``study run`` and ``demo``: every check, then every unfinished run on this machine in dependency order, then
    (``report``) the report. Returns (plan, outcome, report or None)."""
    from simclr_hpc.study.report import write_report

    pre = preflight(path, options, blocking=True)
    out = walk(pre, log)
    reused = f", waited for {len(out.reused)} started earlier" if out.reused else ""
    log(
        f"ran {len(out.submitted)}, skipped {len(out.skipped)} finished{reused}, failed {len(out.failed)}, "
        f"blocked {len(out.blocked)}"
    )
    return pre.plan, out, write_report(pre.plan) if report else None


def submit_study(path: Path, options: StudyOptions, log: Log = print) -> StudyOutcome:
    """``study submit``: every check, then every unfinished run submitted at once; never waits."""
    pre = preflight(path, options, blocking=False)
    out = walk(pre, log)
    for key, job in out.jobs.items():
        log(f"{key}: job {job}" + (" (queued or running already)" if key in out.reused else ""))
    active = (
        f", {len(out.reused)} queued or running (not resubmitted; --force submits them again)" if out.reused else ""
    )
    log(f"submitted {len(out.submitted)}{active}, skipped {len(out.skipped)} finished")
    return out


def sweep_configs(path: Path, stage: str, include_done: bool = False) -> tuple[list, int]:
    """``simclr-hpc sweep STAGE --study PATH``: the configs of the study's ``stage`` runs, without the finished ones
    unless ``include_done``; and how many finished ones were left out."""
    from simclr_hpc.study.plan import load_plan

    runs = load_plan(path).stage(stage)
    todo = [run for run in runs if include_done or not is_done(run)]
    return [run.cfg for run in todo], len(runs) - len(todo)


def demo_study_path() -> Path:
    """The bundled demo study: ``configs/studies/demo.yaml`` of the checkout (or the package's copy when installed)."""
    import simclr_hpc
    from simclr_hpc.study.schema import StudyError

    pkg = Path(simclr_hpc.__file__).resolve().parent
    for candidate in (pkg.parent / "configs" / "studies" / "demo.yaml", pkg / "defaults" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise StudyError(
        f"the demo study file is missing (looked in {pkg.parent / 'configs/studies'}); reinstall simclr-hpc"
    )


def dry_run(path: Path, options: StudyOptions) -> list[str]:
    """``study submit --dry-run``: the same checks, then what the submission would do (one line per array and per
    run, then each array's sbatch script); nothing is written or submitted, and it works without Slurm."""
    pre = preflight(path, options, blocking=False, dry_run=True)
    lines = [f"stale {s.what}: {s.reason}; would be moved aside" for s in pre.stale]
    lines += [
        f"data: build shards of {ds.name} from {ds.source} into {ds.shards} (before submitting)" for ds in pre.to_build
    ]
    array_of: dict[str, str] = {}
    scripts: list[str] = []
    for handout in pre.handouts():
        array = handout.array
        after = depends_on(handout.fresh, array_of)
        lines.append(
            f"array {array.name}: {array.stage} x {len(handout.fresh)}"
            + (f" afterany: {', '.join(after)}" if after else "")
        )
        for i, run in enumerate(handout.fresh):
            lines.append(f"  [{i}] {run.key} -> {run.run_dir}")
        for key, job in handout.reused.items():
            lines.append(f"  (job {job} queued or running) {key}")
        array_of.update({run.key: array.name for run in array.runs})
        if handout.fresh:
            scripts += _scripts(pre, handout, [f"<{name}>" for name in after])
    sel = pre.selection
    lines.append(
        f"{len(sel.todo) - len(pre.active)} runs to submit, {len(pre.active)} queued or running, "
        f"{len(sel.done)} already done (skipped)"
    )
    return lines + scripts


def _scripts(pre: Preflight, handout: Handout, after: list[str]) -> list[str]:
    """The launcher's exact sbatch script(s) of one array (checked by the preflight), its dependencies named by
    array."""
    batch = replace(pre.batches[handout.array.name], dependency=launch.Dependency("afterany", tuple(after)))
    scripts = pre.launcher.render(batch, launch.array_stamp(), array=True)
    return [
        f"# ---- sbatch script of array {handout.array.name} ({len(handout.fresh)} runs) ----\n{s.rstrip()}"
        for s in scripts
    ]
