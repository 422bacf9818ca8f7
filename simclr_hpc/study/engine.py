"""Run or submit a study's graph: build missing shards, skip finished runs, (re)submit the rest in dependency order.

A run is finished when its ``result.json`` exists; everything else (never started, failed, killed halfway) is submitted
again, and the run resumes from its own latest checkpoint. So re-running ``study run`` / ``study submit`` after an
interruption redoes nothing that finished.

Two ways to hand runs out, behind one small :class:`Backend` interface:

* blocking (``study run``, ``demo``): wave by wave (pretrain -> finetune + transfer -> distill); a wave starts when the
  previous one has ended; a run whose dependency failed is reported as ``blocked`` and not started.
* non-blocking (``study submit`` on Slurm): every wave is submitted at once, one array per stage and wave, each with
  ``afterok`` on the jobs of the runs it depends on; nothing waits.

Backends: :class:`InProcessBackend` calls the run function in this process (no job machinery; used by tests and as the
fallback), :class:`LaunchBackend` goes through ``simclr_hpc.launch`` (submitit's local executor or Slurm).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Protocol

from simclr_hpc.data.index import has_index
from simclr_hpc.launch.task import RUN_TARGET, resolve_target
from simclr_hpc.study.aggregate import events_path, read_result
from simclr_hpc.study.runs import Plan, RunSpec
from simclr_hpc.study.walk import arrays, is_done, select

@dataclass
class Outcome:
    """What happened to one run handed to a backend."""

    key: str
    ok: bool
    error: str = ""
    job_id: str = ""
    seconds: float = 0.0


class Backend(Protocol):
    """Hands runs out. ``blocking`` backends return only when every run of the call has ended."""

    blocking: bool

    def submit(self, stage: str, runs: list[RunSpec], after: list[str]) -> list[Outcome]:
        """Submit ``runs`` of one ``stage`` (an array); ``after`` holds job ids they must wait for (afterok)."""
        ...


class InProcessBackend:
    """Runs each run by calling ``target(stage, cfg)`` in this process, one after another."""

    blocking = True

    def __init__(self, target: str = RUN_TARGET, log: Callable[[str], None] = print):
        self.target = target
        self.log = log
        self.done = 0
        self.total = 0

    def submit(self, stage: str, runs: list[RunSpec], after: list[str]) -> list[Outcome]:
        fn = resolve_target(self.target)
        outcomes = []
        for run in runs:
            start = time.monotonic()
            self.done += 1
            try:
                result = fn(stage, run.cfg)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a failing run must not stop the other runs of the study
                outcomes.append(Outcome(run.key, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                                        seconds=time.monotonic() - start))
                self.log(f"[{self.done}/{self.total}] {run.key} FAILED: {outcomes[-1].error}")
                traceback.print_exc(file=sys.stderr)
                continue
            seconds = time.monotonic() - start
            ok = run.result_path.is_file()
            top1 = ((result or {}).get("metrics") or {}).get("top1") if isinstance(result, dict) else None
            note = f" top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""
            outcomes.append(Outcome(run.key, ok, "" if ok else "finished without writing result.json",
                                    seconds=seconds))
            self.log(f"[{self.done}/{self.total}] {run.key} {'done' if ok else 'FAILED'} in {seconds:.1f}s{note}")
        return outcomes


class LaunchBackend:
    """Adapter to ``simclr_hpc.launch.submit_array`` (one array per call; submitit's local executor or Slurm).

    With the local executor it waits for every task of the array before returning (submitit's local executor has no
    Slurm dependencies, so the engine orders the graph itself); on Slurm it returns at once with the array's job id and
    ``afterok`` orders the graph.
    """

    def __init__(self, request, parallelism: int = 0, target: str = RUN_TARGET, log: Callable[[str], None] = print):
        self.request = request
        self.parallelism = parallelism
        self.target = target
        self.log = log
        self.blocking = getattr(request, "executor", "slurm") != "slurm"
        self.done = 0
        self.total = 0

    def submit(self, stage: str, runs: list[RunSpec], after: list[str]) -> list[Outcome]:
        from simclr_hpc import launch

        records = launch.submit_array(stage, [run.cfg for run in runs], self.request,
                                      parallelism=self.parallelism or None, dependency=after or None,
                                      target=self.target)
        outcomes = []
        for run, record in zip(runs, records):
            # An array's own id makes the next stage wait for the whole array (afterok on every task).
            job_id = str(record.array_job_id or record.job_id)
            if not self.blocking:
                outcomes.append(Outcome(run.key, True, job_id=job_id))
                continue
            start = time.monotonic()
            state = _wait(record, run)
            self.done += 1
            ok = run.result_path.is_file()
            error = "" if ok else f"job {record.job_id} ended {state} without result.json; log: {record.stderr}"
            outcomes.append(Outcome(run.key, ok, error, job_id, time.monotonic() - start))
            result = read_result(run.result_path) or {}
            top1 = (result.get("metrics") or {}).get("top1")
            note = f" top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""
            self.log(f"[{self.done}/{self.total}] {run.key} {'done' + note if ok else 'FAILED: ' + error}")
        return outcomes


def _wait(record, run: RunSpec, poll_s: float = 0.5) -> str:
    """Block until a local job has ended; its state from the study's registry (``<root>/<study>/registry.sqlite``)."""
    from simclr_hpc.launch import Registry, registry_path

    registry = Registry(registry_path(run.cfg.run.root, run.cfg.run.study))
    while True:
        for rec in registry.refresh():
            if rec.id == record.id and rec.finished:
                return rec.state
        time.sleep(poll_s)


@dataclass
class EngineReport:
    """Counts of one ``run`` / ``submit`` call."""

    skipped: list[str] = field(default_factory=list)
    """Runs that already had a result.json: not redone."""
    submitted: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    """Runs not started because a run they depend on failed."""
    jobs: dict[str, str] = field(default_factory=dict)
    """Run key -> job id (non-blocking backends)."""
    built_datasets: list[str] = field(default_factory=list)


def record_event(plan: Plan, key: str, event: str, **extra) -> None:
    """Append one line to the study's event log (read by ``status`` and the report to tell failed from missing)."""
    path = events_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"key": key, "event": event, "time": time.time(), **extra})
    with path.open("a") as fh:
        fh.write(line + "\n")


def datasets_to_build(plan: Plan) -> list:
    """Datasets of the plan whose shard directory has no index.json yet."""
    return [ds for ds in plan.datasets if not has_index(ds.shards)]


def prepare_data(plan: Plan, log: Callable[[str], None] = print) -> list[str]:
    """Build the shards of every dataset that has none (seeded, so every seed of the study sees the same data)."""
    built = []
    for ds in datasets_to_build(plan):
        from simclr_hpc.data.shards import write_shards

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


def _blocked_by(plan: Plan, run: RunSpec, todo_keys: set[str], failed: set[str]) -> str | None:
    """The first dependency of ``run`` that failed, or that is neither done nor about to run; None when it may start."""
    for dep in run.depends_on:
        if dep in failed or (dep not in todo_keys and not is_done(plan.get(dep))):
            return dep
    return None


def run_plan(plan: Plan, backend: Backend, log: Callable[[str], None] = print,
             only: set[str] | None = None) -> EngineReport:
    """Skip finished runs and hand the rest to ``backend``, array by array (``walk.arrays``); see the module docstring."""
    report = EngineReport()
    selection = select(plan, only)
    report.skipped = [run.key for run in selection.done]
    if hasattr(backend, "total"):
        backend.total = len(selection.todo)
    log(f"study {plan.study.name}: {len(selection.done) + len(selection.todo)} runs, {len(selection.done)} already "
        f"done, {len(selection.todo)} to run")
    todo_keys = {run.key for run in selection.todo}
    failed: set[str] = set()
    job_of: dict[str, str] = {}
    for array in arrays(plan, selection.todo):
        batch = []
        for run in array.runs:
            bad = _blocked_by(plan, run, todo_keys, failed)
            if bad is None:
                batch.append(run)
                continue
            failed.add(run.key)
            report.blocked.append(run.key)
            record_event(plan, run.key, "blocked", error=f"dependency {bad} has no result")
            log(f"{run.key} BLOCKED: dependency {bad} has no result")
        if batch:
            _hand_out(plan, backend, array.stage, batch, report, failed, job_of)
    return report


def _hand_out(plan: Plan, backend: Backend, stage: str, batch: list[RunSpec], report: EngineReport, failed: set[str],
              job_of: dict[str, str]) -> None:
    """Submit one array's runs (afterok on the jobs of their dependencies) and record what became of each."""
    after = sorted({job_of[dep] for run in batch for dep in run.depends_on if dep in job_of})
    for run in batch:
        record_event(plan, run.key, "submitted")
    outcomes = backend.submit(stage, batch, after)
    for run, outcome in zip(batch, outcomes):
        report.submitted.append(run.key)
        if outcome.job_id:
            job_of[run.key] = outcome.job_id
            report.jobs[run.key] = outcome.job_id
        if not backend.blocking:
            continue
        if outcome.ok:
            report.done.append(run.key)
            record_event(plan, run.key, "done", seconds=round(outcome.seconds, 2))
        else:
            failed.add(run.key)
            report.failed.append(run.key)
            record_event(plan, run.key, "failed", error=outcome.error)


def dry_run_lines(plan: Plan, only: set[str] | None = None) -> list[str]:
    """What ``submit`` would do, one line per array and one per job in it, working off-cluster."""
    lines = [f"data: build shards of {ds.name} from {ds.source} into {ds.shards} (before submitting)"
             for ds in datasets_to_build(plan)]
    selection = select(plan, only)
    array_of: dict[str, str] = {}
    for array in arrays(plan, selection.todo):
        deps = sorted({array_of[d] for run in array.runs for d in run.depends_on if d in array_of})
        after = f" afterok: {', '.join(deps)}" if deps else ""
        lines.append(f"array {array.name}: {array.stage} x {len(array.runs)}{after}")
        for i, run in enumerate(array.runs):
            array_of[run.key] = array.name
            lines.append(f"  [{i}] {run.key} -> {run.run_dir}")
    lines.append(f"{len(selection.todo)} runs to submit, {len(selection.done)} already done (skipped)")
    return lines
